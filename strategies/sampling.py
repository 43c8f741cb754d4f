"""Which ESs a round invites: bounded waiting for enough nodes, then a seeded sample."""

from __future__ import annotations

import logging
import time

import numpy as np
from flwr.serverapp import Grid

log = logging.getLogger(__name__)


class NotEnoughNodesError(RuntimeError):
    """Fewer ESs connected than a round needs, after waiting the configured time."""


def wait_for_nodes(grid: Grid, min_nodes: int, timeout_s: float, poll_s: float = 1.0) -> list[int]:
    """Node ids once at least ``min_nodes`` are connected, in the grid's order (a
    :class:`~strategies.polling.PromptGrid`'s is the same in every run); raise after
    ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        node_ids = list(grid.get_node_ids())
        if len(node_ids) >= min_nodes:
            return node_ids
        if time.monotonic() >= deadline:
            raise NotEnoughNodesError(
                f"only {len(node_ids)} ES(s) connected after {timeout_s:.0f} s; need {min_nodes}"
            )
        log.info("waiting for ESs: %d of %d connected", len(node_ids), min_nodes)
        time.sleep(poll_s)


def sample_nodes(node_ids: list[int], k: int, rng: np.random.Generator) -> list[int]:
    """Up to ``k`` distinct node ids drawn uniformly (all of them when k >= len), in the order
    of ``node_ids``: the same draw picks the same ESs whatever ids Flower gave them."""
    if k >= len(node_ids):
        return list(node_ids)
    # draw positions, not ids: ids are unsigned 64-bit and numpy would turn them into floats
    picked = rng.choice(len(node_ids), size=k, replace=False)
    return [node_ids[int(i)] for i in sorted(picked)]
