"""PromptGrid: replies are collected within a short poll, and the timeout still bounds it."""

from __future__ import annotations

import time

import pytest
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.proto.node_pb2 import NodeInfo

from strategies.polling import PromptGrid
from tests.strategies.fake_grid import metadata, set_task_identity


class SlowLink:
    """A grid whose replies appear ``delay_s`` after the push (node ``dead`` never replies)."""

    def __init__(self, delay_s: float, dead: int | None = None) -> None:
        self.delay_s, self.dead, self.pulls = delay_s, dead, 0
        self.pushed: dict[str, tuple[float, int]] = {}

    def delay_of(self, node: int) -> float:
        return self.delay_s

    def get_node_ids(self):
        return [1, 2, 3]

    def get_nodes(self):
        # registered in the order 3, 1, 2 (node 2 in the same microsecond as node 1)
        registered = {3: "09:00:00+00:00", 1: "09:00:01.5+00:00", 2: "09:00:01.5+00:00"}
        return [NodeInfo(node_id=n, registered_at=f"2026-01-01T{registered[n]}") for n in (2, 3, 1)]

    def push_messages(self, messages):
        ids = []
        for i, message in enumerate(messages):
            ids.append(f"m{i}")
            self.pushed[f"m{i}"] = (time.monotonic(), message.metadata.dst_node_id)
        return ids

    def pull_messages(self, message_ids):
        self.pulls += 1
        ready = []
        for message_id in list(message_ids):
            sent, node = self.pushed[message_id]
            if node != self.dead and time.monotonic() - sent >= self.delay_of(node):
                reply = Message(RecordDict(), metadata=metadata(node, 0, "query", f"r{node}"))
                reply.metadata.__dict__["_reply_to_message_id"] = message_id
                ready.append(reply)
        return ready


def _queries():
    set_task_identity(0)
    return [
        Message(
            RecordDict({"config": ConfigRecord()}), message_type=MessageType.QUERY, dst_node_id=n
        )
        for n in (1, 2, 3)
    ]


def test_replies_are_collected_within_one_short_poll_of_arriving():
    link = SlowLink(delay_s=0.5)
    start = time.monotonic()
    replies = PromptGrid(link, poll_s=0.05).send_and_receive(_queries(), timeout=10)
    elapsed = time.monotonic() - start
    assert sorted(r.metadata.src_node_id for r in replies) == [1, 2, 3]
    assert 0.5 <= elapsed < 1.5  # Flower's HTTP grid would have slept 3 s here
    assert link.pulls >= 5


def test_a_node_that_never_replies_costs_the_timeout_not_more():
    link = SlowLink(delay_s=0.0, dead=2)
    start = time.monotonic()
    replies = PromptGrid(link, poll_s=0.05).send_and_receive(_queries(), timeout=0.6)
    assert sorted(r.metadata.src_node_id for r in replies) == [1, 3]
    assert 0.6 <= time.monotonic() - start < 2.0


def test_everything_but_waiting_is_the_wrapped_grids():
    link = SlowLink(delay_s=0.0)
    assert list(PromptGrid(link).get_nodes()) == list(link.get_nodes())
    with pytest.raises(ValueError, match="poll_s"):
        PromptGrid(link, poll_s=0)


def test_nodes_are_listed_in_registration_order_not_by_their_random_ids():
    assert PromptGrid(SlowLink(delay_s=0.0)).get_node_ids() == [3, 1, 2]


class ReverseLink(SlowLink):
    """Node 3 answers first, node 1 last."""

    def delay_of(self, node: int) -> float:
        return 0.1 * (3 - node)


def test_replies_come_in_the_order_of_the_messages_not_of_their_arrival():
    link = ReverseLink(delay_s=0.0)
    replies = PromptGrid(link, poll_s=0.02).send_and_receive(_queries(), timeout=10)
    assert [r.metadata.src_node_id for r in replies] == [1, 2, 3]
    assert link.pulls >= 3  # they did arrive one by one
