"""Which kept updates depend on others: copies, means of peers and near-copies of a peer.

A set of updates is judged as a set, so the order of arrival never matters (every test below
is symmetric in the updates, and the rank of a group is taken in an order set by contents).

- exact dependence: updates whose unit vectors lie (almost) in a space of fewer dimensions
  than their number -- a copy of a peer (scaled or not), colluders sending one update, the
  mean of two peers. A pair lies within ``dependence_tolerance`` of each other's span, or a
  triple has a member within it of the span of the other two (a mean of three or more peers
  is not looked for);
- near-copies: a peer's update plus noise of the copier's own. The difference of a pair,
  ``u_i - (u_i . u_j) u_j`` for unit vectors, is noise when the round's other updates explain
  no more of it than they explain of a random direction: for ``k`` other updates in ``D``
  dimensions that share is ``Beta(k/2, (D-k)/2)``, mean ``k/D``. The pair is a near-copy when
  the smaller share of its two differences lies below that mean plus ``near_copy_sigmas``
  standard deviations. The difference of two honest ESs is learning (each ES's own data,
  which the other ESs' updates share in part); the difference of a copy and its original is
  the copier's noise. Only pairs at cosine ``near_copy_cosine`` (0.9) or more are tested: the
  difference of a junk update and any honest one is junk too, and a junk update is no copy
  (the quality clause pays it by its gain). With few others, the others explain little of an
  honest pair's difference either, so only rounds of ``near_copy_min_updates`` (12) or more
  kept updates are searched, or rounds of 3 or more where the noise limit is at most
  ``near_copy_max_noise_share`` (a large module: the default module's limit in a round of 4
  is 0.00009, and its honest updates never came within cosine 0.9 of each other,
  ``benchmarks/near_copy_rounds.py``). Measured (smoke model, D = 1,792, round 1 of
  ``benchmarks/robustness_settlement.py``, seeds 0-1, ``--similarity``: 150 random rounds of
  each size): honest pairs' shares >= 0.27 in rounds of 20, >= 0.040 in rounds of 12,
  >= 0.017 in rounds of 8, 0 in rounds of 3 (honest pairs would be taken for near-copies in
  69 and 120 of 150); a near-copy of a peer at cosine 0.99 or 0.95 in a round of 20
  0.010-0.014; the limit 0.030 (20), 0.021 (12), 0.015 (8).

What a group is worth is held by the members that did the work, never by arrival order:

- exact copies (a pair within ``dependence_tolerance``, colluders sending one update) share
  one update's worth equally: a set cannot tell an exact copy from its original;
- a class of near-copies is worth one update, held by its original: against the round's
  other updates, a copy has more of a part they do not explain (its noise) and no more of a
  part they do (:func:`_originals`; where no member stands out so, shared equally: a copy at
  its original's norm differs from it there by only the original's explained share times
  ``1 - cosine^2``, so where the others explain little of the original -- few others, or
  updates far apart, as the default module's after its first round -- the pair shares);
- a group of exactly dependent updates is worth its rank, held by the edges of its cone
  (the peers a mean is taken of); the members inside the cone (the means) hold what is left
  (:func:`group_worths`).

Measured on round 1 of the smoke model (``benchmarks/robustness_settlement.py``, seeds 0-2,
10/30/45 % attackers): near-copies at cosine 0.99 and 0.95 and means of two peers are paid
nothing and no honest ES is cut; an honest ES whose update is copied exactly shares its pay
with the copiers. Noise that itself lies in the span of the other updates (a near-copy of a
mix of peers plus a mix of others) is not recognised.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import combinations

import numpy as np
from scipy.optimize import nnls

from fed_agent.screening.config import ScreeningConfig


def unit_rows(deltas: Sequence[np.ndarray]) -> np.ndarray:
    """The updates as rows of unit vectors (float64); refuses non-finite or zero updates."""
    rows = np.stack([np.asarray(d, dtype=np.float64).ravel() for d in deltas])
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    if not (np.isfinite(rows).all() and (norms > 0).all()):
        raise ValueError("settled updates must be finite and non-zero (judge them first)")
    return rows / norms


class _Union:
    """Union-find over ``n`` indices."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def root(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def join(self, members: Iterable[int]) -> None:
        members = list(members)
        for m in members[1:]:
            self.parent[self.root(m)] = self.root(members[0])

    def classes(self) -> list[list[int]]:
        out: dict[int, list[int]] = {}
        for i in range(len(self.parent)):
            out.setdefault(self.root(i), []).append(i)
        return sorted(out.values())


def noise_share_limit(others: int, dim: int, sigmas: float) -> float:
    """The share of a random direction that ``others`` directions in ``dim`` dimensions
    explain, mean plus ``sigmas`` standard deviations (``Beta(k/2, (D-k)/2)``)."""
    mean = others / dim
    sd = np.sqrt(2.0 * others * (dim - others) / (dim**2 * (dim + 2.0)))
    return float(mean + sigmas * sd)


def explained_shares(
    units: np.ndarray, tolerance: float, closest: float
) -> dict[tuple[int, int], float]:
    """For each pair ``i < j`` at ``|cosine| >= closest`` and not exactly dependent, the smaller
    of the shares of its two differences (``u_i - c u_j``, ``u_j - c u_i``) that the span of
    the other updates explains (from the Gram matrix; empty with fewer than three updates)."""
    n = len(units)
    gram = units @ units.T
    out: dict[tuple[int, int], float] = {}
    if n < 3:
        return out
    for i, j in combinations(range(n), 2):
        apart = 1.0 - gram[i, j] ** 2
        if apart < tolerance**2 or abs(gram[i, j]) < closest:
            continue  # an exact copy (the exact test's), or too far apart to be a copy
        rest = [m for m in range(n) if m != i and m != j]
        inverse = np.linalg.pinv(gram[np.ix_(rest, rest)], rcond=1e-10, hermitian=True)
        shares = []
        for a, b in ((i, j), (j, i)):
            v = gram[a, rest] - gram[a, b] * gram[b, rest]
            shares.append(float(v @ inverse @ v) / apart)
        out[(i, j)] = min(shares)
    return out


def near_copy_classes(units: np.ndarray, cfg: ScreeningConfig) -> list[list[int]]:
    """The updates in classes (sorted; singletons included) joined by near-copy pairs."""
    n, dim = units.shape
    union = _Union(n)
    if n < 3:
        return union.classes()
    limit = noise_share_limit(n - 2, dim, cfg.near_copy_sigmas)
    if n < cfg.near_copy_min_updates and limit > cfg.near_copy_max_noise_share:
        return union.classes()  # too few others to tell an honest pair's difference from noise
    shares = explained_shares(units, cfg.dependence_tolerance, cfg.near_copy_cosine)
    for pair, share in shares.items():
        if share < limit:
            union.join(pair)
    return union.classes()


def dependent_groups(units: np.ndarray, tolerance: float) -> list[list[int]]:
    """Groups (sorted indices, two or more) of unit vectors joined by a pair within
    ``tolerance`` of each other's span (``sqrt(1 - cosine^2)``) or a triple with a member
    within ``tolerance`` of the span of the other two; vectors in no group are left out."""
    n = len(units)
    if n < 2:
        return []
    gram = units @ units.T
    union = _Union(n)
    paired = 1.0 - gram**2 < tolerance**2
    for i, j in zip(*np.nonzero(np.triu(paired, 1)), strict=True):
        union.join((int(i), int(j)))
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
            union.join(int(t) for t in triple)
    return [c for c in union.classes() if len(c) > 1]


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


def _class_means(units: np.ndarray, classes: list[list[int]]) -> np.ndarray:
    """The unit mean of each class's vectors, each turned to the sign of the class's first
    (every test here is blind to the sign of a vector)."""
    means = [_aligned_mean(units, units, members) for members in classes]
    return np.stack([mean / np.linalg.norm(mean) for mean in means])


def span_coordinates(units: np.ndarray) -> np.ndarray:
    """The rows' coordinates in an orthonormal basis of their span (same Gram matrix)."""
    values, vectors = np.linalg.eigh(units @ units.T)
    keep = values > values.max() * 1e-12
    return vectors[:, keep] * np.sqrt(values[keep])


def _cone_supports(units: np.ndarray, tolerance: float) -> list[list[int]]:
    """For each row, the others it lies within ``tolerance`` of the cone of (a combination
    with no negative weight: a mean of two peers lies in theirs, neither peer in the cone of
    the mean and the other): those with a weight in it; empty for a row outside."""
    coords = span_coordinates(units)
    supports: list[list[int]] = []
    for i in range(len(units)):
        others = [j for j in range(len(units)) if j != i]
        weights, distance = nnls(coords[others].T, coords[i])
        used = weights > 1e-6 * max(float(weights.max()), np.finfo(float).tiny)
        supports.append([others[k] for k in np.flatnonzero(used)] if distance < tolerance else [])
    return supports


def own_parts(units: np.ndarray, outside: np.ndarray) -> np.ndarray:
    """The rows' parts that the ``outside`` rows' span does not explain."""
    if not len(outside):
        return units
    coefficients = np.linalg.lstsq(outside.T, units.T, rcond=None)[0]
    return units - (outside.T @ coefficients).T


def group_worths(
    units: np.ndarray, outside: np.ndarray, tolerance: float, support_cosine: float
) -> np.ndarray:
    """Each member's worth in updates, for a group of exactly dependent unit vectors (their
    rank in all; ``outside``: the round's other updates). The members that no others combine
    to with non-negative weights (the cone's edges: the peers a mean is taken of) hold the
    rank, one update each at most; the members inside the cone (the means) share what is
    left. Where every member is inside (copies, colluders sending one update) or none, the
    rank is shared equally.

    Inside is within half the ``tolerance`` of the cone: a mean of peers lies in it exactly,
    while honest smoke-model updates lay 0.078-0.34 from the cone of the other 19 (seeds 0-2,
    round 1, ``benchmarks/robustness_settlement.py --similarity 20``). The geometry alone would let an attacker that sends ``2p - q`` (two peers'
    updates extrapolated) make the honest ``p`` look like the mean; so the cone is believed
    only where each inside member's own part (what the ``outside`` updates do not explain)
    has cosine ``support_cosine`` or more with that of every member it combines: a mean's
    part is the mean of its peers' (about 0.7 with each, measured 0.57-0.92), while the
    framed ``p`` combines the attacker and the honest ``q``, whose own part is independent of
    ``p``'s (measured -0.35-0.55). Else the rank is shared equally. Two peers whose own
    parts agree past ``support_cosine`` can still be framed so."""
    rank = _rank(units, tolerance)
    supports = _cone_supports(units, tolerance / 2)
    inside = np.array([bool(s) for s in supports])
    edges = int((~inside).sum())
    if edges in (0, len(units)):
        return np.full(len(units), rank / len(units))
    own = own_parts(units, outside)
    norms = np.linalg.norm(own, axis=1)
    for i in np.flatnonzero(inside):
        for j in supports[i]:
            cosine = float(own[i] @ own[j]) / max(float(norms[i] * norms[j]), np.finfo(float).tiny)
            if cosine < support_cosine:
                return np.full(len(units), rank / len(units))
    each = min(1.0, rank / edges)
    return np.where(inside, (rank - each * edges) / (len(units) - edges), each)


def _originals(
    rows: np.ndarray, units: np.ndarray, members: list[list[int]], cfg: ScreeningConfig
) -> list[int]:
    """Of a class of near-copies (``members``: its classes of exact copies, as indices of
    ``rows``, the updates, and ``units``, theirs as unit vectors), the positions that hold the
    class's worth: the original when the round tells it, else all.

    A near-copy is its original plus noise of the copier's own, which the round's other
    updates explain no more of than of a random direction. So against those others, the copy
    has more of an unexplained part than its original (``A``, in the updates' own units) and
    no more of an explained part (``B``). The original is the member of least ``A`` when it
    is short of every other member's by more than ``cfg.origin_sigmas`` deviations of chance
    and no other's ``B`` exceeds its own by more than that. Both are asked because
    either alone can be bought: a copier that scales its copy down lowers its ``A`` (and its
    ``B`` with it), and one that adds a little of a direction the others share (the public
    global step) raises its ``B``. Chance is what noise of the pair's distance ``d`` adds
    in ``D`` dimensions with ``k`` others: ``2 A d / sqrt(D)`` to ``A^2``, ``2 B d /
    sqrt(D)`` plus ``d^2 (k + sigmas sqrt(2 k)) / D`` to ``B^2``."""
    if len(members) == 1:
        return [0]
    inside = {i for m in members for i in m}
    rest = [i for i in range(len(units)) if i not in inside]
    if not rest:
        return list(range(len(members)))
    heads = np.stack([_aligned_mean(rows, units, m) for m in members])
    against = heads @ units[rest].T
    inverse = np.linalg.pinv(units[rest] @ units[rest].T, rcond=1e-10, hermitian=True)
    explained = np.clip(np.einsum("ij,jk,ik->i", against, inverse, against), 0.0, None)
    unexplained = np.clip((heads**2).sum(axis=1) - explained, 0.0, None)
    dim, others, sigmas = units.shape[1], len(rest), cfg.origin_sigmas
    top = int(np.argmin(unexplained))
    a, b = np.sqrt(unexplained[top]), np.sqrt(explained[top])
    for j in range(len(members)):
        if j == top:
            continue
        d = float(np.linalg.norm(heads[j] - heads[top]))
        more_noise = unexplained[j] - unexplained[top] > sigmas * 2 * a * d / np.sqrt(dim)
        chance = (
            sigmas * 2 * b * d / np.sqrt(dim) + d**2 * (others + sigmas * np.sqrt(2 * others)) / dim
        )
        if not (more_noise and explained[j] - explained[top] < chance):
            return list(range(len(members)))
    return [top]


def _aligned_mean(rows: np.ndarray, units: np.ndarray, members: list[int]) -> np.ndarray:
    """The mean of a class of exact copies, each turned to the sign of the class's first."""
    signs = np.sign(units[members] @ units[members[0]])
    return (signs[:, None] * rows[members]).mean(axis=0)


def dependence_shares(deltas: Sequence[np.ndarray], cfg: ScreeningConfig) -> np.ndarray:
    """Each update's share: what it holds of its group's worth in updates (1 outside any
    group). Copies (a pair within ``dependence_tolerance``) are taken as one update and share
    it equally; a class of near-copies is worth one update, held by its original where the
    round tells it (:func:`_originals`); a group of exactly dependent classes is worth its
    rank, held by the edges of its cone (:func:`group_worths`)."""
    shares = np.ones(len(deltas))
    if len(deltas) < 2:
        return shares
    units = unit_rows(deltas)
    rows = np.stack([np.asarray(d, dtype=np.float64).ravel() for d in deltas])
    tolerance = cfg.dependence_tolerance
    union = _Union(len(units))
    paired = 1.0 - (units @ units.T) ** 2 < tolerance**2
    for i, j in zip(*np.nonzero(np.triu(paired, 1)), strict=True):
        union.join((int(i), int(j)))
    copies = union.classes()
    held = np.ones(len(units))  # each update's part of its near-copy class's worth
    classes = []
    for group in near_copy_classes(_class_means(units, copies), cfg):
        found = _originals(rows, units, [copies[c] for c in group], cfg)
        holders = [copies[group[k]] for k in found]
        held[sorted(i for c in group for i in copies[c])] = 0.0
        for members in holders:
            held[members] = 1.0 / (len(holders) * len(members))
        classes.append(sorted(i for c in group for i in copies[c]))
    classes.sort()
    means = _class_means(units, classes)
    worth = np.ones(len(classes))
    for group in dependent_groups(means, tolerance):
        outside = np.delete(means, group, axis=0)
        worth[group] = group_worths(means[group], outside, tolerance, cfg.mean_support_cosine)
    for members, value in zip(classes, worth, strict=True):
        shares[members] = value * held[members]
    return shares
