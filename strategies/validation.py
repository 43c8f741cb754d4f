"""Reply validation and update screening: nothing reaches aggregation or payment unchecked.

Stage 1, :func:`split_replies`: a reply is accepted only if it is a TRAIN reply
(:func:`check_reply_type`) and carries no Flower error, exactly the allow-listed records of
the right kinds (an ArrayRecord and a MetricRecord), the allow-listed metric keys with values
of the right types within their bounds, an integral example count in ``[1, max_examples]``,
and an adapter with the module's keys, shapes, float32 dtype and finite values under the size
cap. Each tensor's claimed shape and dtype (the Array's fields and its ``.npy`` header) are
checked against the module *before* anything is allocated, and the tensors are put in the
module's key order (:func:`decode_adapter`). Any other failure while decoding a reply rejects
that reply only.

Stage 2, the accepted adapters' *values*. The strategy judges them against the cloud's own
expectations (:func:`judge_updates`, ``fed_agent.screening.judge``): agreement with the
cloud's reference update, norm per unit of contracted effort calibrated by earlier rounds, and
copies of an earlier reply or of the last global step; this holds for rounds of one or two
participants and against colluders who would own a median. :func:`screen_updates` is the
older median-based screen (``fed_agent.screening.robust.screen``), kept for comparison.

Every rejection is logged with its reason; a rejected reply must not be aggregated or paid.
"""

from __future__ import annotations

import dataclasses
import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MessageType, MetricRecord
from flwr.common.constant import SType

from fed_agent.modules.adapter import AdapterError, AdapterState, AgentModule
from fed_agent.protocol import ARRAYS, METRICS, ProtocolError, TrainReply
from fed_agent.screening.judge import Judged, Reference, UpdateScreen
from fed_agent.screening.robust import (
    DEFAULT_SCREENING,
    Screened,
    ScreeningConfig,
    flatten,
    screen,
    unflatten,
)
from fed_agent.text import one_line

log = logging.getLogger(__name__)

SIZE_CAP_FACTOR = 2
"""A reply's arrays may take at most this many times the bytes of one adapter."""


@dataclass(frozen=True)
class AcceptedReply:
    """A validated reply."""

    node_id: int
    metrics: TrainReply
    adapter: AdapterState


@dataclass(frozen=True)
class RejectedReply:
    """A reply that was not used (and must not be paid), and why (cut to one short line: it
    may quote what the node sent, and it is logged and written to the ledger)."""

    node_id: int
    reason: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason", one_line(self.reason))


def _check_example_count(claimed: int, max_examples: int) -> None:
    """Weight fraud: a self-reported example count must be a plausible integer (aggregation
    weights are the contracted optimiser steps, never this number)."""
    if not 1 <= claimed <= max_examples:
        raise ProtocolError(f"num-examples {claimed:g} is not an integer in [1, {max_examples}]")


EXPECTED_DTYPE = np.dtype("<f4")
_NPY_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def _array_from_npy(key: str, array: object, shape: tuple[int, ...]) -> np.ndarray:
    """One tensor, its claims checked before its bytes are read (no allocation on a lie)."""
    if not isinstance(array, Array):
        raise ProtocolError(f"adapter tensor {key} is a {type(array).__name__}, not an Array")
    if array.stype != SType.NUMPY:
        raise ProtocolError(f"adapter tensor {key} has serialisation {array.stype!r}")
    if np.dtype(array.dtype) != EXPECTED_DTYPE:
        raise ProtocolError(f"adapter tensor {key} has dtype {array.dtype}, expected float32")
    if tuple(array.shape) != shape:
        raise AdapterError(f"adapter tensor {key} has shape {tuple(array.shape)}, expected {shape}")
    data = array.data
    if not isinstance(data, bytes):
        raise ProtocolError(f"adapter tensor {key} carries no bytes")
    stream = io.BytesIO(data)
    version = np.lib.format.read_magic(stream)
    if version not in _NPY_HEADER_READERS:
        raise ProtocolError(f"adapter tensor {key}: unsupported .npy version {version}")
    claimed_shape, fortran, dtype = _NPY_HEADER_READERS[version](stream)
    if dtype != EXPECTED_DTYPE:
        raise ProtocolError(f"adapter tensor {key} has dtype {dtype}, expected float32")
    if tuple(claimed_shape) != shape:
        raise AdapterError(
            f"adapter tensor {key} has shape {tuple(claimed_shape)} in its .npy header, "
            f"expected {shape}"
        )
    offset, count = stream.tell(), int(np.prod(shape, dtype=np.int64))
    if len(data) - offset != count * EXPECTED_DTYPE.itemsize:
        raise ProtocolError(
            f"adapter tensor {key} holds {len(data) - offset} bytes of data, expected "
            f"{count * EXPECTED_DTYPE.itemsize}"
        )
    flat = np.frombuffer(data, dtype=EXPECTED_DTYPE, count=count, offset=offset)
    return flat.reshape(shape, order="F" if fortran else "C").astype(np.float32)


def decode_adapter(record: object, module: AgentModule) -> AdapterState:
    """The adapter an arrays record holds, in the module's key order (any order accepted).

    Checked before decoding: the record is an ArrayRecord under the size cap with exactly the
    module's keys, and every tensor's claimed dtype and shape (its Array fields and its
    ``.npy`` header) are the module's; after: finite values.

    Raises
    ------
    ProtocolError, AdapterError
        Naming what is wrong.
    """
    if not isinstance(record, ArrayRecord):
        raise ProtocolError(f"the arrays record is a {type(record).__name__}, not an ArrayRecord")
    # before decoding: an oversized payload is refused without materialising it
    if record.count_bytes() > SIZE_CAP_FACTOR * module.adapter_bytes:
        raise ProtocolError(f"payload of {record.count_bytes()} bytes exceeds the size cap")
    shapes = {k: tuple(v.shape) for k, v in module.initial_state.items()}
    missing, extra = sorted(set(shapes) - set(record)), sorted(set(record) - set(shapes))
    if missing or extra:
        raise AdapterError(f"adapter keys differ: missing {missing[:3]}, unexpected {extra[:3]}")
    adapter = {k: _array_from_npy(k, record[k], shape) for k, shape in shapes.items()}
    module.check_state(adapter)
    return adapter


def check_reply_type(message: Message, expected: str) -> None:
    """A reply answers an instruction of its own message type (Flower's replies copy it;
    a node's ClientApp may not): raise ProtocolError otherwise."""
    kind = message.metadata.message_type
    if kind != expected:
        raise ProtocolError(f"a reply of message type {one_line(repr(kind), 40)}, not {expected}")


def validate_reply(
    message: Message, module: AgentModule, max_examples: int
) -> AcceptedReply | RejectedReply:
    """Check one train reply against the module and the protocol (never raises)."""
    node_id = int(message.metadata.src_node_id)
    if message.has_error():
        return RejectedReply(node_id, f"client error {message.error.code}: {message.error.reason}")
    try:
        check_reply_type(message, MessageType.TRAIN)
        content = message.content
        if set(content.keys()) != {ARRAYS, METRICS}:
            return RejectedReply(node_id, f"unexpected records {sorted(content.keys())}")
        if not isinstance(content[METRICS], MetricRecord):
            kind = type(content[METRICS]).__name__
            raise ProtocolError(f"the metrics record is a {kind}, not a MetricRecord")
        metrics = TrainReply.from_dict(dict(content[METRICS]))
        _check_example_count(metrics.num_examples, max_examples)
        adapter = decode_adapter(content[ARRAYS], module)
    except (ProtocolError, AdapterError) as err:
        return RejectedReply(node_id, str(err))
    except Exception as err:  # noqa: BLE001 -- hostile input: one bad reply never ends a round
        return RejectedReply(node_id, f"undecodable reply ({type(err).__name__}: {err})")
    return AcceptedReply(node_id, metrics, adapter)


def _log_rejected(rejected: RejectedReply) -> None:
    log.warning("rejected reply from node %s: %s", rejected.node_id, rejected.reason)


def split_replies(
    messages: list[Message], module: AgentModule, max_examples: int
) -> tuple[list[AcceptedReply], list[RejectedReply]]:
    """Validate every reply; log each rejection with its reason."""
    accepted, rejected = [], []
    for message in messages:
        outcome = validate_reply(message, module, max_examples)
        if isinstance(outcome, AcceptedReply):
            accepted.append(outcome)
        else:
            _log_rejected(outcome)
            rejected.append(outcome)
    return accepted, rejected


def screen_updates(
    global_state: Mapping[str, np.ndarray],
    accepted: Sequence[AcceptedReply],
    cfg: ScreeningConfig = DEFAULT_SCREENING,
    effort: Mapping[int, float] | None = None,
) -> tuple[list[AcceptedReply], list[RejectedReply]]:
    """Second stage: drop stale, scaled, sign-flipped and noise updates; log each reason.

    Parameters
    ----------
    global_state
        The global adapter state the round sent out (updates are measured from it).
    accepted
        Replies that passed :func:`split_replies` (keys and shapes already checked).
    cfg
        Screening thresholds.
    effort
        Node id -> the effort (e.g. local steps) the server asked of that ES this round.
        When ESs work different amounts (contracts), update norms are compared per unit of
        effort; pass the *contracted* effort, never the ES's own claim.

    Returns
    -------
    tuple
        The replies to aggregate and pay, and the screened-out ones with their reasons.
    """
    if not accepted:
        return [], []
    scales = [float(effort[r.node_id]) for r in accepted] if effort is not None else None
    results = screen([r.adapter for r in accepted], global_state, cfg, scales)
    return _sort_out(accepted, results)


def _sort_out(
    replies: Sequence[AcceptedReply], results: Sequence[Screened | Judged]
) -> tuple[list[AcceptedReply], list[RejectedReply]]:
    """The replies whose result keeps them, and the others rejected with its reason (logged)."""
    kept, rejected = [], []
    for reply, result in zip(replies, results, strict=True):
        if result.kept:
            kept.append(reply)
        else:
            outcome = RejectedReply(reply.node_id, result.reason)
            _log_rejected(outcome)
            rejected.append(outcome)
    return kept, rejected


def judge_updates(
    expectations: UpdateScreen,
    global_state: Mapping[str, np.ndarray],
    accepted: Sequence[AcceptedReply],
    efforts: Mapping[int, float],
    reference: Reference,
    last_step: np.ndarray | None = None,
) -> tuple[list[AcceptedReply], list[RejectedReply], list[Judged]]:
    """Second stage: judge each accepted reply (in order of arrival) against the cloud's
    expectations; log each rejection. ``efforts`` maps node id -> the effort of its
    *contracted* optimiser steps (``training.learning_effort``; never the ES's claim).
    Returns the kept replies, the rejected, and every verdict.
    """
    keys = list(global_state)
    origin = flatten(global_state, keys)
    with np.errstate(invalid="ignore", over="ignore"):
        deltas = [flatten(r.adapter, keys) - origin for r in accepted]
    work = [float(efforts[r.node_id]) for r in accepted]
    judged = expectations.judge(deltas, work, reference, last_step)
    return (*_sort_out(accepted, judged), judged)


def clip_to_expected(
    expectations: UpdateScreen,
    global_state: Mapping[str, np.ndarray],
    replies: Sequence[AcceptedReply],
    efforts: Mapping[int, float],
    reference: Reference,
) -> list[AcceptedReply]:
    """The replies with their modules' updates clipped to ``clip_ratio`` x the expected norm
    (:meth:`UpdateScreen.clip`): what is aggregated."""
    keys = list(global_state)
    origin = flatten(global_state, keys)
    out = []
    for reply in replies:
        delta = flatten(reply.adapter, keys) - origin
        clipped = expectations.clip(delta, float(efforts[reply.node_id]), reference)
        if clipped is not delta:
            reply = dataclasses.replace(reply, adapter=unflatten(origin + clipped, global_state))
        out.append(reply)
    return out
