"""Settling a round: what share of its contracted pay and weight each kept update earns.

:mod:`fed_agent.screening.judge` rejects updates that are broken or far from the cloud's
expectations, one by one. What passes is settled here, as a set (the order of arrival never
matters), by two clauses of the contract:

- dependence: updates whose directions lie (almost) in a space of fewer dimensions than their
  number deliver that many updates' work, not one each. A copy of a peer (scaled or not), two
  colluders sending one update, the mean of two peers: a group of ``k`` updates of rank ``r``
  (of their unit vectors, the number that lie ``dependence_tolerance`` or more from the span
  of the others counted) shares ``r`` updates' pay and weight, ``r / k`` each. The group is
  treated symmetrically because a set cannot tell the original from its copy: an honest ES
  whose update is copied shares its pay with the copier (the copier never gets more than
  it). Groups are found from pairs and triples (a mean of three or more peers is not);
- quality: each update's *gain*, the drop of the loss on the cloud's own split when the
  global module takes that update alone (the caller measures it,
  :func:`fed_agent.modules.reference.update_gains`), against the gain expected of its
  contracted effort: the round's median gain per expected norm times its own expected
  norm (:meth:`fed_agent.screening.judge.UpdateScreen.expected_norm`). An update at or above
  ``1 - quality_tolerance`` of it is paid in full, a smaller one in proportion to its gain;
  with fewer than ``min_quality_peers`` updates, or no positive expected gain (a converged
  module), the clause is void.

The share of pay is ``dependence share x quality fraction``; the strategy pays that share of
the contracted reward and weights the update by it in the aggregate (a trust weight that
bounds an attacker's influence to what it delivered).

Measured on the smoke model (20 non-IID ESs, 16 steps, 64-scene cloud split, round 1): honest
gains 0.91-1.04x the round's median; an update of 1 step stretched to the expected norm 0.5x,
of 2 steps 0.7-0.87x, of 4 steps 0.87-0.95x; near-copies of a peer at cosine 0.99 and 0.95
0.98x and 0.92x its gain. Pairs of honest ESs reach cosine 0.983 (a singular value of 0.13)
and lie >= 0.18 from the span of their two nearest peers, so the dependence tolerance (0.05)
catches exact and scaled copies and means of peers, not near-copies with 1 % or more noise
added: those are paid like the honest updates they resemble.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from fed_agent.screening.config import ScreeningConfig


@dataclass(frozen=True)
class Settled:
    """One kept update's settlement."""

    share: float
    """Rank over size of its dependent group (1 when it depends on no other update)."""
    quality: float
    """Its gain over the gain expected of its effort (NaN when the clause is void)."""
    pay_fraction: float
    """Of its contracted reward, and the factor of its aggregation weight."""
    detail: str = ""
    """Why it is paid less than in full (empty when paid in full)."""


def _unit_rows(deltas: Sequence[np.ndarray]) -> np.ndarray:
    rows = np.stack([np.asarray(d, dtype=np.float64).ravel() for d in deltas])
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    if not (np.isfinite(rows).all() and (norms > 0).all()):
        raise ValueError("settled updates must be finite and non-zero (judge them first)")
    return rows / norms


def dependent_groups(deltas: Sequence[np.ndarray], tolerance: float) -> list[list[int]]:
    """Groups (sorted indices, two or more) of updates joined by a pair whose unit vectors lie
    within ``tolerance`` of each other's span (``sqrt(1 - cosine^2)``) or a triple with a member
    within ``tolerance`` of the span of the other two; updates in no group are left out."""
    n = len(deltas)
    if n < 2:
        return []
    units = _unit_rows(deltas)
    gram = units @ units.T
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def join(members: Sequence[int]) -> None:
        for m in members[1:]:
            parent[root(m)] = root(members[0])

    paired = 1.0 - gram**2 < tolerance**2
    for i, j in zip(*np.nonzero(np.triu(paired, 1)), strict=True):
        join((int(i), int(j)))
    triples = np.array(list(combinations(range(n), 3)), dtype=np.intp).reshape(-1, 3)
    # a triple counts only when no pair of it is dependent (else any third update would join)
    free = ~(
        paired[triples[:, 0], triples[:, 1]]
        | paired[triples[:, 0], triples[:, 2]]
        | paired[triples[:, 1], triples[:, 2]]
    )
    triples = triples[free]
    if len(triples):
        blocks = gram[triples[:, :, None], triples[:, None, :]]
        volume = np.clip(np.linalg.det(blocks), 0.0, None)
        # squared distance of each member from the span of the other two: det G3 / det G2
        others = [(1, 2), (0, 2), (0, 1)]
        spans = np.stack([1.0 - blocks[:, a, b] ** 2 for a, b in others], axis=1)
        residual = np.sqrt(volume[:, None] / np.maximum(spans, np.finfo(float).tiny))
        for triple in triples[residual.min(axis=1) < tolerance]:
            join(tuple(int(t) for t in triple))
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def dependence_shares(deltas: Sequence[np.ndarray], tolerance: float) -> np.ndarray:
    """Each update's share: rank / size of its dependent group, 1 outside any group."""
    shares = np.ones(len(deltas))
    if len(deltas) < 2:
        return shares
    units = _unit_rows(deltas)
    for group in dependent_groups(deltas, tolerance):
        shares[group] = _rank(units[group], tolerance) / len(group)
    return shares


def _rank(units: np.ndarray, tolerance: float) -> int:
    """How many of ``units`` lie ``tolerance`` or more from the span of those counted before
    them, taken in an order set by their contents (never by arrival)."""
    order = np.lexsort(units.T[::-1])
    basis: list[np.ndarray] = []
    for u in units[order]:
        rest = u - sum((b @ u) * b for b in basis) if basis else u
        if np.linalg.norm(rest) >= tolerance:
            basis.append(rest / np.linalg.norm(rest))
    return max(1, len(basis))


def quality_of(
    gains: Sequence[float], expected_norms: Sequence[float], cfg: ScreeningConfig
) -> np.ndarray:
    """Each update's gain over the gain expected of its effort (all NaN when void)."""
    gains = np.asarray(gains, dtype=np.float64)
    expected = np.asarray(expected_norms, dtype=np.float64)
    if gains.shape != expected.shape or not (np.isfinite(expected).all() and (expected > 0).all()):
        raise ValueError(
            f"need one finite gain and one positive expected norm per update, got "
            f"{len(gains)} gains and expected norms {expected.tolist()}"
        )
    if not cfg.quality_clause or len(gains) < cfg.min_quality_peers or not np.isfinite(gains).all():
        return np.full(len(gains), np.nan)
    per_norm = float(np.median(gains / expected))
    if not per_norm > 0:  # nothing measurable to expect: no clause
        return np.full(len(gains), np.nan)
    return gains / (per_norm * expected)


def settle(
    deltas: Sequence[np.ndarray],
    gains: Sequence[float],
    expected_norms: Sequence[float],
    cfg: ScreeningConfig,
) -> list[Settled]:
    """Settle the kept updates of one round (any order; the result follows ``deltas``).

    Parameters
    ----------
    deltas
        The kept updates (flattened, after clipping: what is aggregated).
    gains
        Each update's drop of the loss on the cloud's own split
        (:func:`fed_agent.modules.reference.update_gains`).
    expected_norms
        Each update's expected norm of its contracted effort
        (:meth:`fed_agent.screening.judge.UpdateScreen.expected_norm`).
    cfg
        The ``screening.*`` tolerances.

    Raises
    ------
    ValueError
        For lengths that differ, or non-finite or zero updates.
    """
    if not len(deltas) == len(gains) == len(expected_norms):
        raise ValueError(
            f"need one gain and one expected norm per update: {len(deltas)} updates, "
            f"{len(gains)} gains, {len(expected_norms)} expected norms"
        )
    shares = dependence_shares(deltas, cfg.dependence_tolerance)
    quality = quality_of(gains, expected_norms, cfg)
    out = []
    for share, q in zip(shares, quality, strict=True):
        full = not np.isfinite(q) or q >= 1.0 - cfg.quality_tolerance
        fraction = 1.0 if full else float(np.clip(q, 0.0, 1.0))
        reasons = []
        if share < 1:
            reasons.append(f"shares {share:.3g} of a dependent group's work")
        if not full:
            reasons.append(f"gain {q:.3g} x expected on the cloud's split")
        out.append(Settled(float(share), float(q), float(share * fraction), "; ".join(reasons)))
    return out
