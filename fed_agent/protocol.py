"""Every message key and payload codec of the federation, as plain dicts (no flwr here).

The strategies and the ClientApp never write a key literal; they use these constants and
the frozen payload classes, which validate what they decode.
"""

from __future__ import annotations

import math
import secrets
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


NONCE_LIMIT = 2**53
"""A train instruction's nonce is an integer in [0, NONCE_LIMIT) (exact as a float too)."""


def new_nonce() -> int:
    """A fresh unpredictable nonce for one train instruction."""
    return secrets.randbelow(NONCE_LIMIT)


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _is_number(value: object) -> bool:
    return _is_int(value) or isinstance(value, float | np.floating)


@dataclass(frozen=True)
class TrainInstruction:
    """Cloud -> ES, with the global adapter: the accepted item and the work it means.

    ``server_round`` and ``nonce`` come back in the reply (:class:`TrainReply`): a reply to
    another round's or another offer's instruction is refused as a replay.
    """

    server_round: int
    local_steps: int
    base_fingerprint: str
    """SHA-256 of the cloud's base weights; an ES whose base differs refuses to train."""
    f_ghz: float
    reward: float
    nonce: int = 0
    """Fresh per instruction (:func:`new_nonce`); the reply must echo it."""

    def __post_init__(self) -> None:
        if (
            self.server_round < 1
            or self.local_steps < 0
            or self.f_ghz <= 0
            or self.reward < 0
            or not 0 <= self.nonce < NONCE_LIMIT
        ):
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
            int(values["nonce"]),
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
    participation: str = "ex_ante"
    """The rule the contract is offered under: ``ex_ante`` (signing commits the ES to period
    2) or ``per_period`` (it may leave in any period; e.g. a flat fee, which commits no one)."""

    def __post_init__(self) -> None:
        k = len(self.f1)
        if self.period not in (1, 2) or not (
            len(self.r1) == k and len(self.f2) == len(self.r2) == k * k
        ):
            raise ProtocolError(
                f"malformed offer: period {self.period}, {k} period-1 items, "
                f"{len(self.f2)} period-2 items"
            )
        if self.participation not in ("per_period", "ex_ante"):
            raise ProtocolError(f"unknown participation rule {self.participation!r}")
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
            str(values["participation"]),
        )


MAX_WALL_S = 7 * 24 * 3600.0
"""The longest training wall time a reply may claim (a week; anything longer is not sane)."""
MAX_LOSS = 1e6
"""The largest mean training loss a reply may claim (-1 stands for a NaN loss)."""


@dataclass(frozen=True)
class TrainReply:
    """ES -> cloud, with the trained adapter: the allow-listed metrics of a reply.

    Only what the cloud needs and cannot derive: the ES's private type does not enter any of
    them (the cloud computes the modelled latency and its estimate of the ES's utility from
    the contract and the public facts). ``server_round`` and ``nonce`` echo the instruction.
    Every ES replies with exactly these keys, also an ES that did no work.
    """

    num_examples: int
    train_loss: float
    train_steps: int
    train_wall_s: float
    """Measured wall time of the local training (self-reported; bounded, never paid for)."""
    server_round: int
    nonce: int

    def to_dict(self) -> dict[str, int | float]:
        """Flower MetricRecord content (NaN loss is sent as -1 so the record stays finite)."""
        values = {_kebab(k): v for k, v in asdict(self).items()}
        if math.isnan(self.train_loss):
            values["train-loss"] = -1.0
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, object]) -> TrainReply:
        """Decode and validate: exact keys and types, finite numbers within their bounds.

        Counts, the round and the nonce must be integers (not a bool, a string or a float);
        the loss and the wall time finite numbers in their ranges. Nothing is coerced.
        """
        _check_keys("train reply", values, set(REPLY_METRIC_KEYS))
        for key in ("num-examples", "train-steps", "server-round", "nonce"):
            if not _is_int(values[key]):
                raise ProtocolError(f"train reply: {key} must be an integer, got {values[key]!r}")
        for key in ("train-loss", "train-wall-s"):
            if not _is_number(values[key]) or not math.isfinite(float(values[key])):  # type: ignore[arg-type]
                raise ProtocolError(
                    f"train reply: {key} must be a finite number, got {values[key]!r}"
                )
        counts = {k: int(values[k]) for k in ("num-examples", "train-steps")}  # type: ignore[call-overload]
        if min(counts.values()) < 0:
            raise ProtocolError(f"train reply holds negative counts: {counts}")
        loss, wall = float(values["train-loss"]), float(values["train-wall-s"])  # type: ignore[arg-type]
        if not (loss == -1.0 or 0 <= loss <= MAX_LOSS):
            raise ProtocolError(f"train reply: train-loss {loss:g} outside [0, {MAX_LOSS:g}]")
        if not 0 <= wall <= MAX_WALL_S:
            raise ProtocolError(f"train reply: train-wall-s {wall:g} outside [0, {MAX_WALL_S:g}]")
        server_round, nonce = int(values["server-round"]), int(values["nonce"])  # type: ignore[call-overload]
        if server_round < 1 or not 0 <= nonce < NONCE_LIMIT:
            raise ProtocolError(f"train reply: invalid round {server_round} or nonce {nonce}")
        return cls(counts["num-examples"], loss, counts["train-steps"], wall, server_round, nonce)


REPLY_METRIC_KEYS = tuple(_kebab(f.name) for f in fields(TrainReply))
