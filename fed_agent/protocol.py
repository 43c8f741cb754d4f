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
DATA_DECLINE = "declines: its data is unusable"
"""How an ES whose own data is broken answers the public-facts query: an error reply whose
reason starts with this, then the file and line. The cloud records a decline, not an app that
cannot answer the protocol, and never asks that ES again."""
ES_IDENTITY = "es-identity"
"""Key of the public-facts reply: the ES's stable identity (:func:`es_identity`), by which a
resumed cloud finds the engagement an ES had under the node id of an earlier run."""
ES_PUBLIC_KEY = "es-public-key"
ES_PROOF = "es-proof"
"""Keys of the public-facts reply: the public half of the ES's identity key (one OpenSSH line)
and its signature over the identity and the query's challenge (``fed_agent.es_keys``)."""
IDENTITY_CHALLENGE = "identity-challenge"
"""ConfigRecord key of a public-facts QUERY: the fresh challenge the ES signs."""
IDENTITY_KEY = "identity-key"
"""Node-config key: the ES's identity key file (an OpenSSH private key; ``fed_agent.es_keys``)."""
ITEM = "item"
ITEM_STEPS = "item-steps"
"""A train offer's local steps per menu item."""
DECLINE = -1
"""The item index of a declined offer (and of 'no period-1 report' in an offer, and of work
done under no contract: a plain TRAIN message)."""
SERVER_ROUND = "server-round"
"""The round key of every instruction; Flower's own strategies send it too."""
PARTITION_ID = "partition-id"
NUM_PARTITIONS = "num-partitions"
"""Node-config keys of an ES's data shard (every SuperNode has them; see deploy/nodes.py)."""
DEVICE = "device"
"""Node-config key: the device this SuperNode's ES trains on (``model.device`` values: auto,
cpu, cuda, mps); without it the run's ``model.device``."""
WARM_TRAINER = "warm-trainer"
"""Node-config key: the Unix socket of the SuperNode's warm trainer (clients/warm_trainer.py),
which answers TRAIN messages for the ClientApp's processes."""


class ProtocolError(ValueError):
    """A message payload that is missing keys, has extra keys or holds invalid values."""


def _check_keys(kind: str, values: Mapping[str, object], expected: set[str]) -> None:
    if not isinstance(values, Mapping):
        raise ProtocolError(f"{kind}: not a mapping of keys to values")
    missing = sorted(expected - set(values))
    extra = sorted(_shown(k) for k in set(values) - expected)[:5]
    if missing or extra:
        shown = "[" + ", ".join(extra) + "]"
        raise ProtocolError(f"{kind}: missing keys {missing}, unexpected keys {shown}")


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


def _shown(value: object) -> str:
    """A value as an error message shows it (short: the value may be hostile)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def read_int(kind: str, key: str, value: object) -> int:
    """``value`` as an integer of a ``kind`` payload (not a bool, a string or a float), within
    +-2**53 (exact as a float)."""
    if not _is_int(value) or not -NONCE_LIMIT <= int(value) <= NONCE_LIMIT:  # type: ignore[call-overload]
        raise ProtocolError(f"{kind}: {key} must be an integer, got {_shown(value)}")
    return int(value)  # type: ignore[call-overload]


def read_number(kind: str, key: str, value: object) -> float:
    """``value`` as a finite float of a ``kind`` payload (an int or a float; no string)."""
    try:
        number = float(value) if _is_number(value) else math.nan  # type: ignore[arg-type]
    except OverflowError:  # an integer beyond any float
        number = math.nan
    if not math.isfinite(number):
        raise ProtocolError(f"{kind}: {key} must be a finite number, got {_shown(value)}")
    return number


def _read_numbers(kind: str, key: str, value: object) -> tuple[float, ...]:
    if not isinstance(value, list | tuple):
        raise ProtocolError(f"{kind}: {key} must be a list of numbers, got {_shown(value)}")
    return tuple(read_number(kind, key, v) for v in value)


def _read_str(kind: str, key: str, value: object, limit: int = 256) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise ProtocolError(f"{kind}: {key} must be a string of <= {limit} chars")
    return value


def es_identity(partition_id: int, num_partitions: int) -> str:
    """An ES's stable identity: its data shard, which its node config fixes across restarts
    (Flower's node ids change with every run). It says nothing about the private type."""
    return f"partition-{partition_id}-of-{num_partitions}"


def new_challenge() -> str:
    """A fresh unpredictable challenge for one public-facts query (32 hex digits)."""
    return secrets.token_hex(16)


@dataclass(frozen=True)
class IdentityClaim:
    """A public-facts reply's identity, public key and proof (``fed_agent.es_keys.verify``)."""

    name: str
    public_key: str
    proof: str


def _read_text(key: str, value: object, limit: int) -> str:
    text = _read_str("public facts", key, value, limit=limit)
    if not text.isprintable() or not text.strip():
        raise ProtocolError(f"public facts: {key} must be printable text")
    return text


def read_identity(values: Mapping[str, object]) -> IdentityClaim | None:
    """A public-facts reply's identity claim (None: no identity), else ProtocolError: printable
    identity (<= 64 chars), public key (<= 1024) and proof (<= 512 lowercase hex digits)."""
    if ES_IDENTITY not in values:
        return None
    if ES_PUBLIC_KEY not in values or ES_PROOF not in values:
        raise ProtocolError(f"public facts: {ES_IDENTITY} needs {ES_PUBLIC_KEY} and {ES_PROOF}")
    proof = _read_text(ES_PROOF, values[ES_PROOF], limit=512)
    if any(c not in "0123456789abcdef" for c in proof):
        raise ProtocolError(f"public facts: {ES_PROOF} must be lowercase hex digits")
    return IdentityClaim(
        _read_text(ES_IDENTITY, values[ES_IDENTITY], limit=64),
        _read_text(ES_PUBLIC_KEY, values[ES_PUBLIC_KEY], limit=1024),
        proof,
    )


def read_choice(values: Mapping[str, object], num_items: int) -> int:
    """The item an ES's answer to an offer names: DECLINE or an index in ``[0, num_items)``."""
    if ITEM not in values:
        raise ProtocolError(f"answer to an offer: no {ITEM!r} key")
    item = read_int("answer to an offer", ITEM, values[ITEM])
    if not (item == DECLINE or 0 <= item < num_items):
        raise ProtocolError(f"answer to an offer: item {item} outside [0, {num_items})")
    return item


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
    item: int = DECLINE
    """The menu item the work is done under (echoed in the reply)."""

    def __post_init__(self) -> None:
        if (
            self.server_round < 1
            or self.local_steps < 0
            or not 0 < self.f_ghz < math.inf
            or not 0 <= self.reward < math.inf
            or not 0 <= self.nonce < NONCE_LIMIT
            or self.item < DECLINE
        ):
            raise ProtocolError(f"invalid train instruction {self}")

    def to_dict(self) -> dict[str, int | float | str]:
        """Flower ConfigRecord content."""
        return {_kebab(k): v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, object]) -> TrainInstruction:
        """Decode and validate."""
        kind = "train instruction"
        _check_keys(kind, values, {_kebab(f.name) for f in fields(cls)})
        return cls(
            read_int(kind, "server-round", values["server-round"]),
            read_int(kind, "local-steps", values["local-steps"]),
            _read_str(kind, "base-fingerprint", values["base-fingerprint"]),
            read_number(kind, "f-ghz", values["f-ghz"]),
            read_number(kind, "reward", values["reward"]),
            read_int(kind, "nonce", values["nonce"]),
            read_int(kind, "item", values["item"]),
        )


CONTRACT_KEYS = frozenset({_kebab(f.name) for f in fields(TrainInstruction)} - {SERVER_ROUND}) | {
    PHASE
}
"""Config keys that mark a TRAIN message as part of the contract protocol; a TRAIN message
with none of them is plain federated training (Flower's own strategies send those)."""


def is_exit(f_ghz: float) -> bool:
    """Whether an item of computing resource ``f_ghz`` is the exit item (f = 0, no work): the
    one test the cloud and the ES share (docs/contract-model.md, "Exclusion")."""
    return f_ghz == 0


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
        # f = 0 is the exit item (no work; see ``is_exit``)
        if k == 0 or min(self.f1 + self.f2) < 0:
            raise ProtocolError("malformed offer: an empty menu or an item with f < 0")
        if not np.all(np.isfinite(self.f1 + self.r1 + self.f2 + self.r2)):
            raise ProtocolError("malformed offer: a term that is not a finite number")
        if self.participation not in ("per_period", "ex_ante"):
            raise ProtocolError(f"unknown participation rule {self.participation!r}")
        if not (np.isfinite(self.held) and self.held >= 0):
            raise ProtocolError(f"held pay must be a finite number >= 0, got {self.held}")
        if self.period == 2 and not 0 <= self.report < k:
            raise ProtocolError(
                f"a period-2 offer needs a period-1 report in [0, {k}), got {self.report}"
            )

    @property
    def num_items(self) -> int:
        """K: the items of this period's menu."""
        return len(self.f1)

    def terms(self, item: int) -> tuple[float, float]:
        """(f, reward) of ``item`` in this offer's period (period 2: in its report's row)."""
        if not 0 <= item < self.num_items:
            raise ProtocolError(f"item {item} outside [0, {self.num_items})")
        if self.period == 1:
            return self.f1[item], self.r1[item]
        index = self.report * self.num_items + item
        return self.f2[index], self.r2[index]

    def is_exit(self, item: int) -> bool:
        """Whether ``item`` of this offer's period is the exit item (f = 0): the ES that takes
        it does no work this period (it is excluded) and is paid only what the item carries."""
        return is_exit(self.terms(item)[0])

    def to_dict(self) -> dict[str, object]:
        """Flower ConfigRecord content (lists of floats), with the query phase."""
        values = {_kebab(k): v for k, v in asdict(self).items()}
        values = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
        return {PHASE: OFFER, **values}

    @classmethod
    def from_dict(cls, values: Mapping[str, object]) -> Offer:
        """Decode and validate."""
        _check_keys("offer", values, OFFER_KEYS)
        if not isinstance(values["oracle"], bool | np.bool_):
            raise ProtocolError(f"offer: oracle must be a bool, got {_shown(values['oracle'])}")
        return cls(
            read_int("offer", "server-round", values["server-round"]),
            read_int("offer", "period", values["period"]),
            read_int("offer", "report", values["report"]),
            bool(values["oracle"]),
            *(_read_numbers("offer", k, values[k]) for k in ("f1", "r1", "f2", "r2")),
            read_number("offer", "held", values["held"]),
            _read_str("offer", "participation", values["participation"]),
        )


OFFER_KEYS = frozenset({_kebab(f.name) for f in fields(Offer)} | {PHASE})


@dataclass(frozen=True)
class TrainOffer:
    """Cloud -> ES in one TRAIN message: an offer, the work each item means, the module.

    Sent when every ES that accepts will be chosen, so the offer and the training need not be
    two messages: the ES picks its item by the same rule as for a QUERY offer and trains that
    item's ``item_steps`` at once, or declines (a reply without arrays, item DECLINE). The
    cloud pays only for the item the reply names and the work it asked for that item, as
    for a :class:`TrainInstruction`; the type still never leaves the ES.
    """

    offer: Offer
    item_steps: tuple[int, ...]
    """Local optimiser steps of each item of this period's menu (its f, proportionally)."""
    base_fingerprint: str
    nonce: int

    def __post_init__(self) -> None:
        if len(self.item_steps) != self.offer.num_items or min(self.item_steps) < 0:
            raise ProtocolError(
                f"a train offer needs {self.offer.num_items} step budgets >= 0, got "
                f"{list(self.item_steps)}"
            )
        if not 0 <= self.nonce < NONCE_LIMIT:
            raise ProtocolError(f"invalid nonce {self.nonce}")

    def instruction(self, item: int) -> TrainInstruction:
        """The instruction the ES follows once it has chosen ``item``."""
        f_ghz, reward = self.offer.terms(item)
        return TrainInstruction(
            self.offer.server_round,
            self.item_steps[item],
            self.base_fingerprint,
            f_ghz,
            reward,
            self.nonce,
            item,
        )

    def to_dict(self) -> dict[str, object]:
        """Flower ConfigRecord content."""
        return {
            **self.offer.to_dict(),
            ITEM_STEPS: list(self.item_steps),
            "base-fingerprint": self.base_fingerprint,
            "nonce": self.nonce,
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, object]) -> TrainOffer:
        """Decode and validate."""
        extra = {ITEM_STEPS, "base-fingerprint", "nonce"}
        _check_keys("train offer", values, OFFER_KEYS | extra)
        offer = Offer.from_dict({k: v for k, v in values.items() if k not in extra})
        steps = values[ITEM_STEPS]
        if not isinstance(steps, list | tuple) or not all(_is_int(s) for s in steps) or not steps:
            raise ProtocolError(f"train offer: {ITEM_STEPS} must be a list of integers")
        return cls(
            offer,
            tuple(int(s) for s in steps),
            _read_str("train offer", "base-fingerprint", values["base-fingerprint"]),
            read_int("train offer", "nonce", values["nonce"]),
        )


@dataclass(frozen=True)
class PlainTraining:
    """A TRAIN message outside the contract protocol: train the configured local steps."""

    server_round: int
    ignored_keys: tuple[str, ...] = ()
    """Config keys this ES does not use (logged, not an error)."""


def train_request(
    values: Mapping[str, object],
) -> TrainInstruction | TrainOffer | PlainTraining:
    """What a TRAIN message's config asks for: an instruction, an offer to train, or plain
    training (none of the contract keys: e.g. Flower's own FedAvg).

    A config with some contract keys but not a complete instruction or offer is refused
    (:class:`ProtocolError`): a contract message is never silently read as plain training.
    """
    if values.get(PHASE) == OFFER:
        return TrainOffer.from_dict(values)
    if CONTRACT_KEYS.isdisjoint(values):
        server_round = values.get(SERVER_ROUND, 1)
        if not _is_int(server_round) or int(server_round) < 1:  # type: ignore[call-overload]
            raise ProtocolError(f"{SERVER_ROUND} must be an integer >= 1, got {server_round!r}")
        ignored = tuple(sorted(k for k in values if k != SERVER_ROUND))
        return PlainTraining(int(server_round), ignored)  # type: ignore[call-overload]
    return TrainInstruction.from_dict(values)


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
    item: int = DECLINE
    """The item the work was done under; DECLINE with no work and no adapter when the ES
    declined a train offer (and for plain training, which has no items)."""

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
        kind = "train reply"
        _check_keys(kind, values, set(REPLY_METRIC_KEYS))
        ints = {k: read_int(kind, k, values[k]) for k in REPLY_METRIC_KEYS if k in _INT_KEYS}
        loss = read_number(kind, "train-loss", values["train-loss"])
        wall = read_number(kind, "train-wall-s", values["train-wall-s"])
        counts = {k: ints[k] for k in ("num-examples", "train-steps")}
        if min(counts.values()) < 0:
            raise ProtocolError(f"train reply holds negative counts: {counts}")
        if not (loss == -1.0 or 0 <= loss <= MAX_LOSS):
            raise ProtocolError(f"train reply: train-loss {loss:g} outside [0, {MAX_LOSS:g}]")
        if not 0 <= wall <= MAX_WALL_S:
            raise ProtocolError(f"train reply: train-wall-s {wall:g} outside [0, {MAX_WALL_S:g}]")
        server_round, nonce, item = ints["server-round"], ints["nonce"], ints[ITEM]
        if server_round < 1 or not 0 <= nonce < NONCE_LIMIT or item < DECLINE:
            raise ProtocolError(
                f"train reply: invalid round {server_round}, nonce {nonce} or item {item}"
            )
        return cls(
            counts["num-examples"], loss, counts["train-steps"], wall, server_round, nonce, item
        )


REPLY_METRIC_KEYS = tuple(_kebab(f.name) for f in fields(TrainReply))
_INT_KEYS = ("num-examples", "train-steps", "server-round", "nonce", ITEM)
