"""Settling a round: what share of its contracted pay and weight each kept update earns.

:mod:`fed_agent.screening.judge` rejects updates that are broken or far from the cloud's
expectations, one by one. What passes is settled here, as a set (the order of arrival never
matters), by two clauses of the contract:

- dependence (:mod:`fed_agent.screening.dependence`): copies (scaled or not), colluders
  sending one update, means of peers and near-copies of a peer (its update plus noise of the
  copier's own) deliver fewer updates' work than their number; a group is worth what it adds,
  held by the members that did the work: a near-copy's original (the member with the least part the
  others do not explain) and the peers a mean is taken of; exact copies, which a set cannot tell from
  their original, share one update's worth equally;
- quality: each update's *gain*, the drop of the loss on the cloud's own split when the
  global module takes that update alone (the caller measures it,
  :func:`fed_agent.modules.reference.update_gains`), against the gain expected of its
  contracted effort: the round's median gain per expected norm times its own expected
  norm (:meth:`fed_agent.screening.judge.UpdateScreen.expected_norm`). An update at or above
  ``1 - quality_tolerance`` of it is paid in full, a smaller one in proportion to its gain;
  with fewer than ``min_quality_peers`` updates, or no positive expected gain (a converged
  module), the clause is void.

- effort (off by default, ``screening.effort_clause``): where each update's direction lies
  along the cloud's reference path (:func:`effort_fractions`): an update of a few steps
  stretched to its expected norm points where the reference pointed after a few steps, and
  is paid that effort over its contracted one.

The share of pay is ``dependence share x min(quality fraction, effort fraction)``; the
strategy pays that share of the contracted reward and weights the update by it in the
aggregate (a trust weight that bounds an attacker's influence to what it delivered).

Measured on the smoke model (20 non-IID ESs, 16 steps, 64-scene cloud split, round 1): honest
gains 0.91-1.04x the round's median; an update of 1 step stretched to the expected norm 0.5x,
of 2 steps 0.7-0.87x, of 4 steps 0.87-0.95x; near-copies of a peer at cosine 0.99 and 0.95
0.98x and 0.92x its gain (the dependence clause leaves their worth to their originals).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fed_agent.screening.config import ScreeningConfig
from fed_agent.screening.dependence import dependence_shares


@dataclass(frozen=True)
class Settled:
    """One kept update's settlement."""

    share: float
    """Its dependent group's worth over the group's size (1 when it depends on no other)."""
    quality: float
    """Its gain over the gain expected of its effort (NaN when the clause is void)."""
    pay_fraction: float
    """Of its contracted reward, and the factor of its aggregation weight."""
    detail: str = ""
    """Why it is paid less than in full (empty when paid in full)."""


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


def quality_fractions(quality: np.ndarray, cfg: ScreeningConfig) -> np.ndarray:
    """What the quality clause pays of each update's contracted reward, from its gain over the
    gain expected of its effort (:func:`quality_of`): in full at ``1 - quality_tolerance`` or
    more (or when the clause is void: NaN), else in proportion to its gain (none for none)."""
    quality = np.asarray(quality, dtype=np.float64)
    full = ~np.isfinite(quality) | (quality >= 1.0 - cfg.quality_tolerance)
    return np.where(full, 1.0, np.clip(np.nan_to_num(quality), 0.0, 1.0))


def effort_fractions(
    deltas: Sequence[np.ndarray],
    efforts: Sequence[float],
    path: Sequence[tuple[float, np.ndarray]],
    cfg: ScreeningConfig,
) -> np.ndarray:
    """Each update's share of its contracted ``efforts`` that its direction shows (1: all).

    ``path``: the reference's (effort, unit direction) after 1, 2, 4, ... steps
    (:attr:`fed_agent.screening.judge.Reference.path`). Of the points up to an update's
    effort, its cosine to the last one ("at") against its largest ("best"): at >= (1 -
    ``effort_tolerance``) best, or no positive cosine, or fewer than two points, is full
    effort; otherwise the best point's effort over the contracted effort. Void (1) for an
    update contracted past the path's end (the reference stops at
    ``screening.max_reference_steps``): where an honest update of that effort points is not
    known (on the main job, an honest update of 96 steps or more can point closer to the
    reference after 32 steps than after its last 64). All 1 when the clause is off.
    """
    efforts = np.asarray(efforts, dtype=np.float64)
    if len(efforts) != len(deltas) or not (np.isfinite(efforts).all() and (efforts > 0).all()):
        raise ValueError(
            f"need one positive effort per update: {len(deltas)} updates, efforts "
            f"{efforts.tolist()}"
        )
    out = np.ones(len(deltas))
    if not cfg.effort_clause or len(path) < 2:
        return out
    points = np.array([e for e, _ in path])
    directions = np.stack([d for _, d in path])
    for i, (delta, effort) in enumerate(zip(deltas, efforts, strict=True)):
        upto = int(np.searchsorted(points, effort * (1 + 1e-9), side="right"))
        norm = float(np.linalg.norm(delta))
        if upto < 2 or effort > points[-1] * (1 + 1e-9) or not norm > 0:
            continue
        cosines = directions[:upto] @ (np.asarray(delta, dtype=np.float64) / norm)
        best = int(np.argmax(cosines))
        if cosines[best] > 0 and cosines[upto - 1] < (1 - cfg.effort_tolerance) * cosines[best]:
            out[i] = min(1.0, points[best] / effort)
    return out


def settle(
    deltas: Sequence[np.ndarray],
    gains: Sequence[float],
    expected_norms: Sequence[float],
    cfg: ScreeningConfig,
    efforts: Sequence[float] | None = None,
    path: Sequence[tuple[float, np.ndarray]] = (),
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
    efforts, path
        Each update's contracted effort and the reference's path, for the effort clause
        (:func:`effort_fractions`; without ``efforts`` the clause is void).

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
    shares = dependence_shares(deltas, cfg)
    quality = quality_of(gains, expected_norms, cfg)
    shown = (
        np.ones(len(deltas)) if efforts is None else effort_fractions(deltas, efforts, path, cfg)
    )
    by_gain = quality_fractions(quality, cfg)
    out = []
    for share, q, paid, effort in zip(shares, quality, by_gain, shown, strict=True):
        fraction = min(float(paid), float(effort))
        reasons = []
        if share < 1:
            reasons.append(f"shares {share:.3g} of a dependent group's work")
        if paid < 1:
            reasons.append(f"gain {q:.3g} x expected on the cloud's split")
        if effort < 1:
            reasons.append(f"its direction shows {effort:.3g} of its contracted effort")
        out.append(Settled(float(share), float(q), float(share * fraction), "; ".join(reasons)))
    return out
