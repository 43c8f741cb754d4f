"""A Grid that collects replies promptly: Flower's HTTP grid polls for them every 3 s.

In a deployment ``Grid.send_and_receive`` (``flwr.superlink.grid.http_grid``) sleeps 3 s
between pulls, so every message wave of a round waits up to 3 s after its last reply; the
simulation's in-memory grid polls every 0.1 s. :class:`PromptGrid` wraps the grid the
ServerApp gets and implements ``send_and_receive`` with the Grid's public ``push_messages`` and
``pull_messages`` and a short poll; everything else is the wrapped grid's.

It also makes a run's course independent of the ids Flower draws: node ids are random 64-bit
integers (new in every run), so an order by id, or the order replies happen to arrive in,
would change which ES a seeded draw picks, which row of a batched contract design it gets and
the order floating-point sums add updates in. :meth:`PromptGrid.get_node_ids` lists nodes in
the order they registered (in simulation node i registers i-th and holds partition i), and
:meth:`PromptGrid.send_and_receive` returns replies in the order of the messages sent.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime

from flwr.app import Message
from flwr.serverapp import Grid

REPLY_POLL_S = 0.2
"""Seconds between two pulls of outstanding replies (a pull is one small HTTP request)."""


class PromptGrid(Grid):
    """``grid`` with replies pulled every ``poll_s`` seconds."""

    def __init__(self, grid: Grid, poll_s: float = REPLY_POLL_S) -> None:
        if not poll_s > 0:
            raise ValueError(f"poll_s must be > 0, got {poll_s}")
        self.grid, self.poll_s = grid, poll_s

    def set_run(self, run) -> None:  # noqa: D102 -- the wrapped grid's, as below
        self.grid.set_run(run)

    @property
    def run(self):  # noqa: D102
        return self.grid.run

    def create_message(self, *args, **kwargs) -> Message:  # noqa: D102
        return self.grid.create_message(*args, **kwargs)

    def get_node_ids(self) -> list[int]:
        """Connected node ids in the order they registered with the SuperLink (ties by id)."""
        return [node.node_id for node in sorted(self.grid.get_nodes(), key=registration_key)]

    def get_nodes(self):  # noqa: D102
        return self.grid.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:  # noqa: D102
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:  # noqa: D102
        return self.grid.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Push ``messages`` and pull their replies until all arrived or ``timeout`` passed;
        the replies in the order of ``messages``, however they arrived."""
        pushed = list(self.push_messages(messages))
        position = {message_id: i for i, message_id in enumerate(pushed)}
        waiting = set(pushed)
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while waiting and (deadline is None or time.monotonic() < deadline):
            pulled = list(self.pull_messages(waiting))
            replies.extend(pulled)
            waiting.difference_update(m.metadata.reply_to_message_id for m in pulled)
            if waiting:
                time.sleep(self.poll_s)
        return sorted(replies, key=lambda m: position[m.metadata.reply_to_message_id])


def registration_key(node) -> tuple[datetime, int]:
    """Sort key of a ``NodeInfo``: when the node registered, then its id."""
    return datetime.fromisoformat(node.registered_at), int(node.node_id)
