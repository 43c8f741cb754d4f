"""The cloud's belief about each ES's willingness type, updated from observed choices.

Under an incentive-compatible menu an ES's chosen item reveals its type, so after a choice the
belief is a point mass, and one period later it is that type's row of the transition matrix.
Before any observation (and after a decline, which reveals little) it is the chain propagated
from the prior.
"""

from __future__ import annotations

import numpy as np


class BeliefTracker:
    """Per-ES predictive distribution over types for the coming period."""

    def __init__(self, prior: np.ndarray, transition: np.ndarray) -> None:
        self.prior = np.asarray(prior, dtype=float)
        self.transition = np.asarray(transition, dtype=float)
        self._beliefs: dict[int, np.ndarray] = {}

    def belief(self, node_id: int) -> np.ndarray:
        """The current belief about ``node_id`` (the prior for an ES never seen)."""
        return self._beliefs.get(node_id, self.prior).copy()

    def observe_choice(self, node_id: int, revealed_type: int | None) -> None:
        """Record this period's choice and move the belief to the next period.

        ``revealed_type`` is the type the chosen item is designed for, or None for a decline or
        no observation (then the belief just follows the chain).
        """
        current = self.belief(node_id)
        if revealed_type is not None:
            current = np.eye(len(self.prior))[revealed_type]
        self._beliefs[node_id] = current @ self.transition

    def advance_unobserved(self, node_ids: list[int]) -> None:
        """Move ESs that were not offered anything this period one step along the chain."""
        for node_id in node_ids:
            if node_id in self._beliefs:
                self._beliefs[node_id] = self._beliefs[node_id] @ self.transition

    def move(self, old: int, new: int) -> None:
        """Keep the belief about the ES known as ``old`` under node id ``new`` (a restart)."""
        if old in self._beliefs:
            self._beliefs[new] = self._beliefs.pop(old)

    def state(self) -> dict[int, list[float]]:
        """Checkpointable form."""
        return {k: v.tolist() for k, v in self._beliefs.items()}

    def load_state(self, state: dict) -> None:
        """Restore :meth:`state`."""
        self._beliefs = {int(k): np.asarray(v, dtype=float) for k, v in state.items()}
