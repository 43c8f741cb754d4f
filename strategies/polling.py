"""A Grid that collects replies promptly: Flower's HTTP grid polls for them every 3 s.

In a deployment ``Grid.send_and_receive`` (``flwr.superlink.grid.http_grid``) sleeps 3 s
between pulls, so every message wave of a round waits up to 3 s after its last reply; the
simulation's in-memory grid polls every 0.1 s. :class:`PromptGrid` wraps the grid the
ServerApp gets and implements ``send_and_receive`` with the Grid's public ``push_messages`` and
``pull_messages`` and a short poll; everything else is the wrapped grid's.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

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

    def get_node_ids(self) -> Iterable[int]:  # noqa: D102
        return self.grid.get_node_ids()

    def get_nodes(self):  # noqa: D102
        return self.grid.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:  # noqa: D102
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:  # noqa: D102
        return self.grid.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Push ``messages`` and pull their replies until all arrived or ``timeout`` passed."""
        waiting = set(self.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while waiting and (deadline is None or time.monotonic() < deadline):
            pulled = list(self.pull_messages(waiting))
            replies.extend(pulled)
            waiting.difference_update(m.metadata.reply_to_message_id for m in pulled)
            if waiting:
                time.sleep(self.poll_s)
        return replies
