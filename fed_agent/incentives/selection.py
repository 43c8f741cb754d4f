"""Choosing a round's participants, and its deadline, among the ESs that accepted an offer.

A synchronous round waits for its slowest participant, so who takes part and how long the
round lasts are one decision. Each accepting ES is a :class:`Candidate`: the cloud's surplus
on the item it chose, ``G(f) - R``, and its modelled latency ``W / f + S / r``. The rules
(``incentive.selection``):

- ``surplus``: the ``limit`` largest surpluses; the round lasts as long as the slowest of them.
- ``random``: ``limit`` drawn uniformly.
- ``deadline``: the ``limit`` largest positive surpluses among the ESs whose latency meets
  ``incentive.deadline_s``. Designed contracts meet it by design (the strategy designs them on
  ``profiles.deadline_market``), so this filter only binds for the flat fee's fixed effort.
- ``latency_priced``: the set (at most ``limit``) that maximises its total surplus minus
  ``incentive.latency_price`` times its round latency (the slowest member's). Exact: the
  round latency of the best set is one candidate's latency ``d``, and for a given ``d`` the
  best set is the ``limit`` largest positive surpluses with latency ``<= d``; one pass over
  the candidates sorted by latency, with a heap of the best ``limit`` surpluses so far, scores
  every ``d`` (:func:`best_priced_deadline`). The empty set (value 0) is a choice too.

The surplus of an ES that trained in earlier rounds values its work at ``repeat_value ** n`` x
G(f) (:func:`selection_surplus`), so that the cheapest ESs do not train every round while
the others' data is never learned. Every candidate gets a reason (chosen or not), which the
ledger records.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fed_agent.choices import check_choice
from fed_agent.incentives.config import SELECTION_RULES, IncentiveConfig


@dataclass(frozen=True)
class Candidate:
    """An accepting ES as selection sees it."""

    node_id: int
    surplus: float
    """The cloud's value minus reward of the chosen item, G(f) - R."""
    latency_s: float
    """The cloud's modelled construction latency W / f + S / r of the chosen item."""
    trained_before: int = 0
    """Earlier rounds of the run this ES trained in (its surplus already counts them, see
    ``incentive.repeat_value``); shown in its reason."""


@dataclass(frozen=True)
class Selection:
    """The chosen ESs (best first), the round's deadline and why each candidate is in or out."""

    chosen: list[int]
    deadline_s: float
    """The round's modelled latency budget: the configured deadline (``deadline``), or the
    slowest chosen ES's latency (0 when nobody is chosen)."""
    reasons: dict[int, str]


def selection_surplus(
    value: float, reward: float, trained_before: int, repeat_value: float
) -> float:
    """The cloud's surplus on an ES's work as selection ranks it: its value G(f), discounted
    by ``repeat_value`` for each earlier round the ES trained in, minus the reward R."""
    return value * repeat_value**trained_before - reward


def select_participants(
    candidates: Sequence[Candidate],
    limit: int,
    cfg: IncentiveConfig,
    rng: np.random.Generator,
) -> Selection:
    """Choose at most ``limit`` of ``candidates`` by the rule ``cfg.selection``.

    Ties in surplus are broken by a seeded random order drawn from ``rng`` (one permutation
    per call), so a round's selection is reproducible from its seed.
    """
    rule = check_choice("incentive.selection", cfg.selection, SELECTION_RULES)
    if limit < 1:
        raise ValueError(f"selection limit must be >= 1, got {limit}")
    jitter = rng.permutation(len(candidates))
    if rule == "random":
        ranked = [candidates[i] for i in jitter]
    else:
        order = np.lexsort((jitter, -np.array([c.surplus for c in candidates], dtype=float)))
        ranked = [candidates[i] for i in order]
    if rule in ("surplus", "random"):
        chosen = ranked[:limit]
        deadline = max((c.latency_s for c in chosen), default=0.0)
        return _explain(ranked, chosen, deadline, limit, positive_only=False)
    if rule == "deadline":
        deadline = cfg.deadline_s
    elif rule == "latency_priced":
        deadline = best_priced_deadline(ranked, limit, cfg.latency_price)
    else:  # pragma: no cover - check_choice above lists the rules
        raise ValueError(f"incentive.selection: no solver for {rule!r}")
    chosen = best_under_deadline(ranked, limit, deadline)
    if rule == "latency_priced":
        deadline = max((c.latency_s for c in chosen), default=0.0)
    return _explain(ranked, chosen, deadline, limit, positive_only=True)


def best_under_deadline(
    ranked: Sequence[Candidate], limit: int, deadline_s: float
) -> list[Candidate]:
    """The first ``limit`` of ``ranked`` (best surplus first) with positive surplus and
    latency within ``deadline_s``: the most surplus a round of that deadline can buy."""
    fits = [c for c in ranked if c.surplus > 0 and c.latency_s <= deadline_s]
    return fits[:limit]


def best_priced_deadline(ranked: Sequence[Candidate], limit: int, price: float) -> float:
    """The deadline ``d`` that maximises (best surplus within ``d``) - ``price`` * ``d``.

    ``d`` ranges over the positive-surplus candidates' latencies (and 0, nobody); ties go to
    the shorter deadline. One pass in latency order keeps the ``limit`` largest surpluses
    seen so far in a min-heap, so the best set for every ``d`` is scored in O(n log limit).
    """
    positive = sorted((c for c in ranked if c.surplus > 0), key=lambda c: c.latency_s)
    best_value, best_deadline = 0.0, 0.0
    heap: list[float] = []
    total = 0.0
    for candidate in positive:
        if len(heap) < limit:
            heapq.heappush(heap, candidate.surplus)
            total += candidate.surplus
        elif candidate.surplus > heap[0]:
            total += candidate.surplus - heapq.heapreplace(heap, candidate.surplus)
        # among equal latencies the last one scores the whole group, which is never worse
        value = total - price * candidate.latency_s
        if value > best_value:
            best_value, best_deadline = value, candidate.latency_s
    return best_deadline


def _explain(
    ranked: Sequence[Candidate],
    chosen: Sequence[Candidate],
    deadline_s: float,
    limit: int,
    positive_only: bool,
) -> Selection:
    """The selection with one reason per candidate (the ledger's ``reason`` column)."""
    chosen_ids = {c.node_id for c in chosen}
    reasons: dict[int, str] = {}
    for c in ranked:
        facts = f"surplus {c.surplus:.2f}, latency {c.latency_s:.2f} s"
        if c.trained_before:
            facts += f", trained in {c.trained_before} earlier rounds"
        if c.node_id in chosen_ids:
            reasons[c.node_id] = f"chosen: {facts}, round deadline {deadline_s:.2f} s"
        elif positive_only and c.surplus <= 0:
            reasons[c.node_id] = f"not chosen: {facts}: no surplus for the cloud"
        elif positive_only and c.latency_s > deadline_s:
            reasons[c.node_id] = f"not chosen: {facts} misses the deadline {deadline_s:.2f} s"
        else:
            reasons[c.node_id] = f"not chosen: {facts}: {limit} ESs ranked higher (the limit)"
    return Selection([c.node_id for c in chosen], deadline_s, reasons)


def subset_value(chosen: Sequence[Candidate], price: float) -> float:
    """Total surplus minus ``price`` times the round latency (the slowest member's)."""
    if not chosen:
        return 0.0
    return math.fsum(c.surplus for c in chosen) - price * max(c.latency_s for c in chosen)
