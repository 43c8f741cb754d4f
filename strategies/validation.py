"""Reply validation and update screening: nothing reaches aggregation or payment unchecked.

Stage 1, :func:`split_replies`: a reply is accepted only if it carries no Flower error,
exactly the allow-listed records and metric keys with finite values, an integral example
count in ``[1, max_examples]``, and an adapter with the module's keys, shapes, float32 dtype
and finite values under the size cap.

Stage 2, :func:`screen_updates`: the accepted adapters' *values* are judged against the
global module (``fed_agent.modules.robust.screen``): stale (free-riding), scaled, sign-flipped
and noise updates are removed.

Every rejection is logged with its reason; a rejected reply must not be aggregated or paid.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from flwr.app import Message

from fed_agent.modules.adapter import AdapterError, AdapterState, AgentModule
from fed_agent.modules.robust import DEFAULT_SCREENING, ScreeningConfig, screen
from fed_agent.protocol import ARRAYS, METRICS, ProtocolError, TrainReply
from strategies.records import record_to_adapter

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
    """A reply that was not used (and must not be paid), and why."""

    node_id: int
    reason: str


def _check_example_count(values: Mapping[str, object], max_examples: int) -> None:
    """Weight fraud: a self-reported example count must be a plausible integer (aggregation
    weights are the contracted optimiser steps, never this number)."""
    claimed = float(values["num-examples"])  # type: ignore[arg-type]
    if not claimed.is_integer() or not 1 <= claimed <= max_examples:
        raise ProtocolError(f"num-examples {claimed:g} is not an integer in [1, {max_examples}]")


def _check_dtypes(adapter: AdapterState) -> None:
    for key, value in adapter.items():
        if value.dtype != np.float32:
            raise ProtocolError(f"adapter tensor {key} has dtype {value.dtype}, expected float32")


def validate_reply(
    message: Message, module: AgentModule, max_examples: int
) -> AcceptedReply | RejectedReply:
    """Check one train reply against the module and the protocol."""
    node_id = int(message.metadata.src_node_id)
    if message.has_error():
        return RejectedReply(node_id, f"client error {message.error.code}: {message.error.reason}")
    content = message.content
    if set(content.keys()) != {ARRAYS, METRICS}:
        return RejectedReply(node_id, f"unexpected records {sorted(content.keys())}")
    try:
        values = dict(content[METRICS])
        metrics = TrainReply.from_dict(values)
        _check_example_count(values, max_examples)
        record = content[ARRAYS]
        # before decoding: an oversized payload is refused without materialising it twice
        if record.count_bytes() > SIZE_CAP_FACTOR * module.adapter_bytes:
            raise ProtocolError(f"payload of {record.count_bytes()} bytes exceeds the size cap")
        adapter = record_to_adapter(record)
        module.check_state(adapter)
        _check_dtypes(adapter)
    except (ProtocolError, AdapterError, TypeError, ValueError, KeyError) as err:
        return RejectedReply(node_id, str(err))
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
    kept, rejected = [], []
    for reply, result in zip(accepted, results, strict=True):
        if result.kept:
            kept.append(reply)
        else:
            outcome = RejectedReply(reply.node_id, result.reason)
            _log_rejected(outcome)
            rejected.append(outcome)
    return kept, rejected
