"""Every message key and payload codec of the federation, as plain dicts (no flwr here).

The strategies and the ClientApp never write a key literal; they use these constants and
the frozen payload classes, which validate what they decode.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"


class ProtocolError(ValueError):
    """A message payload that is missing keys, has extra keys or holds invalid values."""


def _check_keys(kind: str, values: Mapping[str, object], expected: set[str]) -> None:
    missing, extra = sorted(expected - set(values)), sorted(set(values) - expected)
    if missing or extra:
        raise ProtocolError(f"{kind}: missing keys {missing}, unexpected keys {extra}")


def _kebab(name: str) -> str:
    return name.replace("_", "-")


@dataclass(frozen=True)
class TrainInstruction:
    """Cloud -> ES, with the global adapter: what to do this round."""

    server_round: int
    local_steps: int
    base_fingerprint: str
    """SHA-256 of the cloud's base weights; an ES whose base differs refuses to train."""

    def __post_init__(self) -> None:
        if self.server_round < 1 or self.local_steps < 0:
            raise ProtocolError(f"invalid train instruction {self}")

    def to_dict(self) -> dict[str, int | str]:
        """Flower ConfigRecord content."""
        return {_kebab(k): v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, object]) -> TrainInstruction:
        """Decode and validate."""
        _check_keys("train instruction", values, {_kebab(f.name) for f in fields(cls)})
        return cls(
            int(values["server-round"]),
            int(values["local-steps"]),
            str(values["base-fingerprint"]),
        )


@dataclass(frozen=True)
class TrainReply:
    """ES -> cloud, with the trained adapter: the allow-listed metrics of a reply.

    Every ES replies with exactly these keys, also an ES that did no work.
    """

    num_examples: int
    train_loss: float
    train_steps: int
    train_wall_s: float

    def to_dict(self) -> dict[str, int | float]:
        """Flower MetricRecord content (NaN loss is sent as -1 so the record stays finite)."""
        values = {_kebab(k): v for k, v in asdict(self).items()}
        if math.isnan(self.train_loss):
            values["train-loss"] = -1.0
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, object]) -> TrainReply:
        """Decode and validate: exact keys, finite numbers, non-negative counts."""
        _check_keys("train reply", values, set(REPLY_METRIC_KEYS))
        numbers = {k: float(values[k]) for k in REPLY_METRIC_KEYS}
        if not all(math.isfinite(v) for v in numbers.values()):
            raise ProtocolError(f"train reply holds non-finite metrics: {numbers}")
        if numbers["num-examples"] < 0 or numbers["train-steps"] < 0:
            raise ProtocolError(f"train reply holds negative counts: {numbers}")
        return cls(
            int(numbers["num-examples"]),
            numbers["train-loss"],
            int(numbers["train-steps"]),
            numbers["train-wall-s"],
        )


REPLY_METRIC_KEYS = tuple(_kebab(f.name) for f in fields(TrainReply))
