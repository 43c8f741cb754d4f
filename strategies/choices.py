"""Reading the ESs' answers to offers: the item each names, a decline, or why it is refused.

An answer comes on a separate offer QUERY (:func:`choices_in_answers`) or on the reply to a
train offer (:func:`choices_in_train_replies`). The first answer of an offered node counts;
a Flower error reply counts as no answer; an answer that cannot be read, or that is not of
its offer's message type, is refused for that node alone (a node's reply never ends the run).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from flwr.app import ConfigRecord, Message, MessageType, MetricRecord, RecordDict

from fed_agent.protocol import CONFIG, DECLINE, METRICS, ProtocolError, TrainReply, read_choice
from fed_agent.text import one_line
from strategies.validation import check_reply_type

log = logging.getLogger(__name__)

Choices = dict[int, int | str | None]
"""Each offered ES's answer: its chosen item index, None when it declined, or why its answer
was refused (a string: it loses its place in the round); an ES that did not answer is absent."""


def query(node_id: int, values: dict) -> Message:
    """A QUERY of config ``values`` to ``node_id``."""
    return Message(
        RecordDict({CONFIG: ConfigRecord(dict(values))}),
        message_type=MessageType.QUERY,
        dst_node_id=node_id,
    )


def choices_in_answers(replies: Iterable[Message], offered: set[int], num_items: int) -> Choices:
    """The items named by the answers to offer QUERYs (the first answer of each offered node)."""
    choices: Choices = {}
    for reply in replies:
        node_id = int(reply.metadata.src_node_id)
        if node_id not in offered or node_id in choices:
            continue  # not asked, or a second answer: the first one counts
        if _failed(reply, "offer"):
            continue
        try:
            check_reply_type(reply, MessageType.QUERY)
            record = reply.content[METRICS]
            if not isinstance(record, MetricRecord):
                raise ProtocolError(f"the answer is a {type(record).__name__}")
            item = read_choice(record, num_items)
        except Exception as err:  # noqa: BLE001 -- a node's reply never ends the run
            choices[node_id] = _refused(node_id, "offer", err)
            continue
        choices[node_id] = None if item == DECLINE else item
    return choices


def choices_in_train_replies(
    replies: Iterable[Message], offered: set[int], num_items: int
) -> Choices:
    """The items named by the replies to train offers (the first reply of each offered node;
    unsolicited and duplicate replies are left to validation)."""
    choices: Choices = {}
    for reply in replies:
        node_id = int(reply.metadata.src_node_id)
        if node_id not in offered or node_id in choices:
            continue
        if _failed(reply, "train offer"):
            continue
        try:
            check_reply_type(reply, MessageType.TRAIN)
            item = TrainReply.from_dict(dict(reply.content[METRICS])).item
            if not (item == DECLINE or 0 <= item < num_items):
                raise ProtocolError(f"item {item} outside [0, {num_items})")
        except Exception as err:  # noqa: BLE001 -- a node's reply never ends the run
            choices[node_id] = _refused(node_id, "train offer", err)
            continue
        choices[node_id] = None if item == DECLINE else item
    return choices


def _failed(reply: Message, what: str) -> bool:
    """Whether the reply is a Flower error (logged): the offer counts as unanswered."""
    if reply.has_error():
        error = one_line(f"client error {reply.error.code}: {reply.error.reason}")
        log.warning("node %s: no answer to the %s (%s)", reply.metadata.src_node_id, what, error)
    return reply.has_error()


def _refused(node_id: int, what: str, err: Exception) -> str:
    """Why an answer to an offer is refused (one line, logged)."""
    reason = f"unusable answer to the {what}: {one_line(err)}"
    log.warning("node %s: %s", node_id, reason)
    return reason
