"""Choosing participants among the ESs that accepted an offer."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fed_agent.choices import check_choice
from fed_agent.incentives.config import SELECTION_RULES


def select_participants(
    candidates: Sequence[int],
    surplus: Sequence[float],
    limit: int,
    rule: str,
    rng: np.random.Generator,
) -> list[int]:
    """Up to ``limit`` of ``candidates`` (ES ids that accepted).

    ``surplus``: the cloud's value minus reward of each candidate's chosen item, G(f) - R.
    Rule ``surplus`` keeps the largest surpluses (ties broken by a seeded random order);
    ``random`` draws uniformly.
    """
    check_choice("incentive.selection", rule, SELECTION_RULES)
    candidates = list(candidates)
    if len(candidates) <= limit:
        return candidates
    jitter = rng.permutation(len(candidates))
    if rule == "random":
        order = jitter
    else:
        order = np.lexsort((jitter, -np.asarray(surplus, dtype=float)))
    return [candidates[i] for i in order[:limit]]
