"""Settling a round: what share of its contracted pay and weight each kept update earns.

:mod:`fed_agent.screening.judge` rejects updates that are broken or far from the cloud's
expectations, one by one. What passes is settled here, as a set (the order of arrival never
matters), by two clauses of the contract:

- dependence (:mod:`fed_agent.screening.dependence`): copies, means of peers and near-copies
  of a peer deliver fewer updates' work than their number; a group of ``k`` updates worth
  ``r`` shares ``r`` updates' pay and weight, ``r / k`` each;
- quality (``screening.quality_clause``): each update's *contribution* to the round's
  aggregate (the weighted mean of the kept updates, weights = contracted work x dependence
  share): its share of the aggregate's drop of the loss on the cloud's own split, measured
  along the path from the global module to the aggregate (:func:`contributions`, an
  Aumann-Shapley value), per unit of its weight, against what its contracted effort promises:
  the round's median contribution per unit of weight and of expected norm times its own
  expected norm (:meth:`fed_agent.screening.judge.UpdateScreen.expected_norm`). An update at or
  above ``1 - quality_tolerance`` of it is paid in full, a smaller one in proportion; with
  fewer than ``min_quality_peers`` updates, or no positive expected contribution, the clause
  is void. The contribution is measured where the update acts, inside the average and at its
  weight, so an honest non-IID update that would overshoot on its own (raise the split's loss
  alone) but helps the average is paid; an update whose extra norm is junk (a threshold-hugger,
  colluders' shared update) is paid its useful part less what its junk costs the aggregate.
  Measured on the default model's round 1 (10 honest ESs, 192 steps; rounds of 4 of them):
  honest contributions 0.93-1.09x the round's median with 4 path points and 0.90-1.12x with 2
  (12 rounds), 0.78-1.22x with 1; the loss of the aggregate without each update (a
  leave-one-out gain) 0.74-1.51x, cutting 10 of 60 (15 rounds); each update's own gain
  0.97-1.03x (in later rounds of the main job that own gain cut honest non-IID updates).

The share of pay is ``dependence share x quality fraction``; the strategy pays that share of
the contracted reward and weights the update by it in the aggregate (a trust weight that
bounds an attacker's influence to what it delivered). The cloud measures value, not steps:
partial work stretched to the expected norm is paid by the contribution it makes
(``benchmarks/results/robustness_settlement.csv``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from fed_agent.screening.config import ScreeningConfig
from fed_agent.screening.dependence import dependence_shares

GainsAt = Callable[[np.ndarray, list[np.ndarray]], Sequence[float]]
"""``gains_at(step, probes)``: for each probe, the loss on the cloud's split of the global
module moved by ``step`` minus its loss moved by ``step + probe`` (flattened updates)."""


@dataclass(frozen=True)
class Settled:
    """One kept update's settlement."""

    share: float
    """Its dependent group's worth over the group's size (1 when it depends on no other)."""
    quality: float
    """Its contribution over the contribution expected of its effort (NaN when void)."""
    pay_fraction: float
    """Of its contracted reward, and the factor of its aggregation weight."""
    detail: str = ""
    """Why it is paid less than in full (empty when paid in full)."""


@dataclass(frozen=True)
class Weighing:
    """The kept updates as the round's aggregate weighs them before the quality clause."""

    shares: np.ndarray
    """Dependence shares (:func:`fed_agent.screening.dependence.dependence_shares`)."""
    weights: np.ndarray
    """Aggregation weights, work x share, summing to 1."""
    step: np.ndarray
    """The aggregate: the weighted mean of the updates."""
    parts: list[np.ndarray]
    """Each update's weighted part of the aggregate (they sum to ``step``)."""


def weigh(deltas: Sequence[np.ndarray], work: Sequence[float], cfg: ScreeningConfig) -> Weighing:
    """Shares, weights and the aggregate of the kept updates (``work``: each one's contracted
    steps, or ones for equal weights)."""
    work = np.asarray(work, dtype=np.float64)
    if len(work) != len(deltas) or not (np.isfinite(work).all() and (work > 0).all()):
        raise ValueError(
            f"need one positive work per update: {len(deltas)} updates, work {work.tolist()}"
        )
    shares = dependence_shares(deltas, cfg)
    weights = work * shares / float(np.sum(work * shares))
    parts = [
        w * np.asarray(d, dtype=np.float64).ravel() for w, d in zip(weights, deltas, strict=True)
    ]
    return Weighing(shares, weights, np.sum(parts, axis=0), parts)


def contributions(weighing: Weighing, gains_at: GainsAt, points: int) -> np.ndarray:
    """Each update's share of the aggregate's drop of the loss on the cloud's split (its
    Aumann-Shapley value along the straight path from the global module to the aggregate):
    at the middle of each of ``points`` equal segments of the path, the loss a little before
    minus a little after the update's part of the segment (a central difference). The
    contributions add up to the aggregate's drop exactly for a quadratic loss."""
    n = len(weighing.parts)
    total = np.zeros(n)
    for k in range(points):
        middle = (k + 0.5) / points * weighing.step
        half = [p / (2.0 * points) for p in weighing.parts]
        gains = np.asarray(gains_at(middle, half + [-h for h in half]), dtype=np.float64)
        total += gains[:n] - gains[n:]
    return total


def quality_of(
    contributed: Sequence[float],
    weights: Sequence[float],
    expected_norms: Sequence[float],
    cfg: ScreeningConfig,
) -> np.ndarray:
    """Each update's contribution per unit of weight over what its effort promises (all NaN
    when the clause is void)."""
    contributed = np.asarray(contributed, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    expected = np.asarray(expected_norms, dtype=np.float64)
    if not (
        contributed.shape == weights.shape == expected.shape
        and np.isfinite(expected).all()
        and (expected > 0).all()
        and (weights > 0).all()
    ):
        raise ValueError(
            f"need one contribution, one positive weight and one positive expected norm per "
            f"update, got {len(contributed)} contributions, weights {weights.tolist()} and "
            f"expected norms {expected.tolist()}"
        )
    void = np.full(len(contributed), np.nan)
    if not cfg.quality_clause or len(contributed) < cfg.min_quality_peers:
        return void
    if not np.isfinite(contributed).all():
        return void
    per_weight = contributed / weights
    per_norm = float(np.median(per_weight / expected))
    if not per_norm > 0:  # nothing measurable to expect: no clause
        return void
    return per_weight / (per_norm * expected)


def settle(
    weighing: Weighing,
    contributed: Sequence[float],
    expected_norms: Sequence[float],
    cfg: ScreeningConfig,
) -> list[Settled]:
    """Settle the kept updates of one round (any order; the result follows the updates).

    Parameters
    ----------
    weighing
        The kept updates' shares and weights (:func:`weigh`).
    contributed
        Each update's contribution (:func:`contributions`; NaN when the clause is off).
    expected_norms
        Each update's expected norm of its contracted effort
        (:meth:`fed_agent.screening.judge.UpdateScreen.expected_norm`).
    cfg
        The ``screening.*`` tolerances.

    Raises
    ------
    ValueError
        For lengths that differ, or weights or expected norms that are not positive.
    """
    quality = quality_of(contributed, weighing.weights, expected_norms, cfg)
    out = []
    for share, q in zip(weighing.shares, quality, strict=True):
        full = not np.isfinite(q) or q >= 1.0 - cfg.quality_tolerance
        fraction = 1.0 if full else float(np.clip(q, 0.0, 1.0))
        reasons = []
        if share < 1:
            reasons.append(f"shares {share:.3g} of a dependent group's work")
        if not full:
            reasons.append(f"contribution {q:.3g} x expected on the cloud's split")
        out.append(Settled(float(share), float(q), float(share * fraction), "; ".join(reasons)))
    return out
