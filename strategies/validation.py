"""Reply validation: nothing reaches aggregation or payment unchecked.

A reply is accepted only if it carries no Flower error, exactly the allow-listed metric keys
with finite values, an example count within bounds, and an adapter with the module's keys,
shapes and finite values under the size cap. A rejected reply is logged with its reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flwr.app import Message

from fed_agent.modules.adapter import AdapterError, AdapterState, AgentModule
from fed_agent.protocol import ARRAYS, METRICS, ProtocolError, TrainReply
from strategies.records import record_to_adapter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AcceptedReply:
    """A validated reply."""

    node_id: int
    metrics: TrainReply
    adapter: AdapterState


@dataclass(frozen=True)
class RejectedReply:
    """A reply that was not used, and why."""

    node_id: int
    reason: str


def validate_reply(
    message: Message, module: AgentModule, max_examples: int
) -> AcceptedReply | RejectedReply:
    """Check one train reply against the module and the protocol."""
    node_id = int(message.metadata.src_node_id)
    if message.has_error():
        return RejectedReply(node_id, f"client error: {message.error.reason}")
    content = message.content
    if set(content.keys()) != {ARRAYS, METRICS}:
        return RejectedReply(node_id, f"unexpected records {sorted(content.keys())}")
    try:
        metrics = TrainReply.from_dict(dict(content[METRICS]))
        if metrics.num_examples > max_examples:
            raise ProtocolError(f"num-examples {metrics.num_examples} exceeds {max_examples}")
        record = content[ARRAYS]
        if record.count_bytes() > 2 * module.adapter_bytes:
            raise ProtocolError(f"payload of {record.count_bytes()} bytes exceeds the size cap")
        adapter = record_to_adapter(record)
        module.check_state(adapter)
    except (ProtocolError, AdapterError, TypeError, ValueError, KeyError) as err:
        return RejectedReply(node_id, str(err))
    return AcceptedReply(node_id, metrics, adapter)


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
            log.warning("rejected reply from node %s: %s", outcome.node_id, outcome.reason)
            rejected.append(outcome)
    return accepted, rejected
