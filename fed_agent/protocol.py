"""Every message key and payload codec of the federation, as plain dicts (no flwr here).

The strategies and the ClientApp never write a key literal; they use these constants and
the frozen payload classes, which validate what they decode.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

import numpy as np

AdapterState = dict[str, np.ndarray]
"""An agent module's adapter: parameter name -> float32 array (the ARRAYS record's content)."""

ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"
PUBLIC_FACTS = "public-facts"
OFFER = "offer"
PHASE = "phase"
"""ConfigRecord key of a QUERY message: which of PHASES it is."""
PHASES = (PUBLIC_FACTS, OFFER)
ITEM = "item"
DECLINE = -1
"""The item index of a declined offer (and of 'no period-1 report' in an offer)."""
PARTITION_ID = "partition-id"
NUM_PARTITIONS = "num-partitions"
"""Node-config keys of an ES's data shard (every SuperNode has them; see deploy/nodes.py)."""


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
    """Cloud -> ES, with the global adapter: the accepted item and the work it means."""

    server_round: int
    local_steps: int
    base_fingerprint: str
    """SHA-256 of the cloud's base weights; an ES whose base differs refuses to train."""
    f_ghz: float
    reward: float

    def __post_init__(self) -> None:
        if self.server_round < 1 or self.local_steps < 0 or self.f_ghz <= 0 or self.reward < 0:
            raise ProtocolError(f"invalid train instruction {self}")

    def to_dict(self) -> dict[str, int | float | str]:
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
            float(values["f-ghz"]),
            float(values["reward"]),
        )


@dataclass(frozen=True)
class Offer:
    """Cloud -> ES (a QUERY): the ES's two-period contract and where in it the ES stands.

    ``report`` is the ES's period-1 report when ``period`` is 2 (else DECLINE). ``oracle``
    marks the complete-information benchmark, in which the cloud knows the ES's type.
    """

    server_round: int
    period: int
    report: int
    oracle: bool
    f1: tuple[float, ...]
    r1: tuple[float, ...]
    f2: tuple[float, ...]
    r2: tuple[float, ...]
    """Period-2 menus, row-major K x K (row = period-1 report)."""
    held: float = 0.0
    """Period-1 pay the cloud holds back from this ES until its period-2 work is delivered
    (ex ante participation): an ES that walks away in period 2 forfeits it."""

    def __post_init__(self) -> None:
        k = len(self.f1)
        if self.period not in (1, 2) or not (
            len(self.r1) == k and len(self.f2) == len(self.r2) == k * k
        ):
            raise ProtocolError(
                f"malformed offer: period {self.period}, {k} period-1 items, "
                f"{len(self.f2)} period-2 items"
            )
        if not (np.isfinite(self.held) and self.held >= 0):
            raise ProtocolError(f"held pay must be a finite number >= 0, got {self.held}")
        if self.period == 2 and not 0 <= self.report < k:
            raise ProtocolError(
                f"a period-2 offer needs a period-1 report in [0, {k}), got {self.report}"
            )

    def to_dict(self) -> dict[str, object]:
        """Flower ConfigRecord content (lists of floats)."""
        values = {_kebab(k): v for k, v in asdict(self).items()}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, object]) -> Offer:
        """Decode and validate."""
        _check_keys("offer", values, {_kebab(f.name) for f in fields(cls)} | {PHASE})
        return cls(
            int(values["server-round"]),
            int(values["period"]),
            int(values["report"]),
            bool(values["oracle"]),
            *(tuple(float(x) for x in values[k]) for k in ("f1", "r1", "f2", "r2")),
            float(values["held"]),
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
    modelled_latency_s: float
    """Construction latency by the model, W / f + S / r, with S the adapter's bytes."""
    es_utility: float
    """The ES's own utility of this round's item, R - c(f) / theta."""

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
            numbers["modelled-latency-s"],
            numbers["es-utility"],
        )


REPLY_METRIC_KEYS = tuple(_kebab(f.name) for f in fields(TrainReply))
