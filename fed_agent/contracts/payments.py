"""The minimal payment rule: least-cost rewards that implement a given menu of f.

``minimal_payments`` solves the linear program of docs/contract-model.md with HiGHS.
``minimal_payments_batch`` / ``score_f_menus`` serve the RL designer: they compute the
closed-form rewards of the local-binding structure for a whole batch at once and certify
them (see docs/contract-model.md, "Minimal payments in closed form"); only rows that the
closed form cannot certify fall back to the LP. The closed forms themselves, row by row (each
row may be its own market), are in ``fed_agent.contracts.closed_form``, which also serves
``fed_agent.contracts.batch``, which scores menus of many markets at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import sparse
from scipy.optimize import linprog

from fed_agent.contracts.audit import DEFAULT_TOLERANCE
from fed_agent.contracts.closed_form import CLOSED_FORMS
from fed_agent.contracts.constraints import (
    build_constraints,
    constraint_arrays,
    item_weights,
    market_value_scale,
)
from fed_agent.contracts.contract import DynamicContract
from fed_agent.contracts.market import Market
from fed_agent.contracts.utility import energy_cost, value_of_work
from fed_agent.latency import construction_cost

# A tiny weight on every reward makes the LP pick the least rewards also for items that no
# type uses with positive probability (their rewards would otherwise be arbitrary).
TIE_BREAK_WEIGHT = 1e-9
HIGHS_OPTIONS = {"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10}
# Markets per stacked LP: simplex time grows faster than the LP, so large batches go in pieces
# (benchmarks/design_time_bench.py times the whole design step).
STACK_SIZE = 100
# Stacked LPs are solved on this many threads: HiGHS releases the GIL while it solves, so two
# threads price a round's 1,000 markets in 0.18 s instead of 0.35 s on 2 cores
# (benchmarks/design_time_bench.py).
SOLVER_THREADS = max(1, min(4, os.cpu_count() or 1))
# A block of the stacked feasibility LP is implementable when its relative slack is this small.
FEASIBILITY_SLACK = 1e-9


def within_bounds(
    f: np.ndarray, lower: np.ndarray | float, upper: np.ndarray | float
) -> np.ndarray:
    """Whether every f of a flat menu lies in [lower, upper] (to 1e-9 of upper), per row.

    ``f`` is (n,) or (B, n); ``lower``/``upper`` are scalars or one bound per row (B,).
    """
    lower, upper = np.asarray(lower, dtype=float), np.asarray(upper, dtype=float)
    slack = 1e-9 * upper
    return np.all((f >= (lower - slack)[..., None]) & (f <= (upper + slack)[..., None]), axis=-1)


def _within_bounds(f: np.ndarray, market: Market) -> np.ndarray:
    return within_bounds(f, market.f_lower_ghz, market.f_max_ghz)


def minimal_payments_flat(f: np.ndarray, market: Market) -> np.ndarray | None:
    """Least-cost rewards (flat, K + K^2) for the flat menu ``f``; None if not implementable."""
    if not _within_bounds(f, market):
        return None
    system = build_constraints(market)
    weights = item_weights(market)
    objective = weights + TIE_BREAK_WEIGHT * max(weights.max(), 1e-12)
    result = linprog(
        objective,
        A_ub=system.a_reward,
        b_ub=-system.a_cost @ energy_cost(f, market),
        bounds=(0, None),
        method="highs",
        options=HIGHS_OPTIONS,
    )
    return result.x if result.status == 0 else None


def minimal_payments(f1: np.ndarray, f2: np.ndarray, market: Market) -> DynamicContract | None:
    """The least-cost contract that implements the menu of computing resources (f1, f2).

    Parameters
    ----------
    f1 : np.ndarray
        Period-1 resources, shape (K,).
    f2 : np.ndarray
        Period-2 resources, shape (K, K), row i = menu after period-1 report i.
    market : Market
        The market (its participation rule decides which IR applies).

    Returns
    -------
    DynamicContract or None
        The contract with the rewards of minimal expected cost that satisfy every IR, IC and
        intertemporal IC constraint, or None when no rewards do (or f is out of bounds).
    """
    k = market.num_types
    f = np.concatenate([np.asarray(f1, dtype=float).ravel(), np.asarray(f2, dtype=float).ravel()])
    if f.size != k * (k + 1):
        raise ValueError(f"f1/f2: expected shapes ({k},) and ({k}, {k}), got {f.size} values")
    rewards = minimal_payments_flat(f, market)
    if rewards is None:
        return None
    return DynamicContract.from_flat(f, np.maximum(rewards, 0.0), k)


def minimal_payments_stacked(
    f: np.ndarray, markets: Sequence[Market], known_implementable: np.ndarray | None = None
) -> np.ndarray:
    """Least-cost rewards for one flat menu per market, in stacked sparse LPs.

    The B minimal payment LPs are independent, so their sum is one block-diagonal LP that
    HiGHS solves at once, without the per-call overhead of B separate solves. Markets go in
    pieces of STACK_SIZE, solved on SOLVER_THREADS threads. An infeasible block makes its
    piece's LP infeasible; only then does a feasibility LP find the piece's implementable
    menus (each block gets one slack s_b >= 0 on all its constraints and the LP minimises
    sum s_b, which is 0 exactly on implementable blocks), and those are priced again. Most
    designed menus are implementable, so the common case is one LP per piece.

    Parameters
    ----------
    f : np.ndarray
        (B, K + K^2) flat menus, ``markets[b]``'s in row b.
    markets : Sequence[Market]
        B markets with the same K.
    known_implementable : np.ndarray, optional
        (B,) rows already known to be implementable (e.g. feasible closed-form rewards):
        a feasibility LP keeps them without testing them.

    Returns
    -------
    np.ndarray
        (B, K + K^2) rewards (>= 0); NaN rows where the menu is not implementable.
    """
    f = np.asarray(f, dtype=float)
    rewards = np.full_like(f, np.nan)
    known = np.zeros(len(markets), bool) if known_implementable is None else known_implementable
    lower = np.array([m.f_lower_ghz for m in markets])
    rows = np.flatnonzero(within_bounds(f, lower, np.array([m.f_max_ghz for m in markets])))

    def blocks(part: np.ndarray) -> _StackedBlocks:
        return _StackedBlocks(f[part], [markets[r] for r in part])

    def settle(part: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        priced = blocks(part).least_rewards()
        if priced is not None:
            return [(part, priced)]
        unknown = part[~known[part]]
        if unknown.size:
            part = np.sort(
                np.concatenate([part[known[part]], unknown[blocks(unknown).implementable()]])
            )
        settled, pending = [], [part] if part.size else []
        while pending:  # a block the feasibility test passed at its tolerance may still fail
            piece = pending.pop()
            priced = blocks(piece).least_rewards()
            if priced is not None:
                settled.append((piece, priced))
            elif piece.size > 1:
                pending += [piece[: piece.size // 2], piece[piece.size // 2 :]]
        return settled

    for settled in _map_parts(settle, _chunks(rows)):
        for part, priced in settled:
            rewards[part] = priced
    return rewards


def _map_parts(solve: Callable[[np.ndarray], object], parts: list[np.ndarray]) -> list:
    """``solve`` on every part, on up to SOLVER_THREADS threads (the parts are independent)."""
    if len(parts) < 2 or SOLVER_THREADS < 2:
        return [solve(part) for part in parts]
    with ThreadPoolExecutor(min(SOLVER_THREADS, len(parts))) as pool:
        return list(pool.map(solve, parts))


def _chunks(rows: np.ndarray) -> list[np.ndarray]:
    """``rows`` in pieces of at most STACK_SIZE (simplex time grows faster than the size)."""
    return [rows[i : i + STACK_SIZE] for i in range(0, rows.size, STACK_SIZE)]


class _StackedBlocks:
    """The block-diagonal constraint system of several markets' minimal payment LPs.

    The blocks come from one vectorised build (:func:`constraint_arrays`), not one
    :func:`build_constraints` per market: at a thousand fresh markets a round, building the
    systems market by market cost more than solving them.
    """

    def __init__(self, f: np.ndarray, markets: Sequence[Market]) -> None:
        self.shape = f.shape
        blocks, n = f.shape
        a_cost, a_reward = constraint_arrays(
            np.stack([m.types for m in markets]),
            np.array([m.discount for m in markets]),
            np.stack([m.transition for m in markets]),
            np.array([m.participation == "ex_ante" for m in markets]),
        )
        rows = a_cost.shape[1]
        cost = construction_cost(
            f,
            np.array([[m.workload_gcycles] for m in markets]),
            np.array([[m.kappa] for m in markets]),
        )
        block, row, col = np.nonzero(a_reward)
        self.a_ub = sparse.csr_matrix(
            (a_reward[block, row, col], (block * rows + row, block * n + col)),
            shape=(blocks * rows, blocks * n),
        )
        self.b_ub = -np.einsum("bmn,bn->bm", a_cost, cost).ravel()
        self.block_of_row = np.repeat(np.arange(blocks), rows)
        # each block's slack is measured relative to its own cost scale
        block_scale = 1.0 + np.abs(a_cost).max(axis=(1, 2)) * cost.max(axis=1)
        self.scale = block_scale[self.block_of_row]
        weights = np.stack([item_weights(m) for m in markets])
        self.objective = (
            weights + TIE_BREAK_WEIGHT * np.maximum(weights.max(axis=1), 1e-12)[:, None]
        ).ravel()

    def implementable(self) -> np.ndarray:
        """(B,) mask of blocks whose constraints some rewards R >= 0 satisfy."""
        blocks = self.shape[0]
        slack = sparse.csr_matrix(
            (-self.scale, (np.arange(self.b_ub.size), self.block_of_row)),
            shape=(self.b_ub.size, blocks),
        )
        result = linprog(
            np.concatenate([np.zeros(self.a_ub.shape[1]), np.ones(blocks)]),
            A_ub=sparse.hstack([self.a_ub, slack], format="csr"),
            b_ub=self.b_ub,
            bounds=(0, None),
            method="highs",
            options=HIGHS_OPTIONS,
        )
        if result.status != 0:
            raise RuntimeError(f"feasibility LP failed: {result.message}")
        return result.x[-blocks:] <= FEASIBILITY_SLACK

    def least_rewards(self) -> np.ndarray | None:
        """(B, K + K^2) least-cost rewards; None when some block is not implementable."""
        result = linprog(
            self.objective,
            A_ub=self.a_ub,
            b_ub=self.b_ub,
            bounds=(0, None),
            method="highs",
            options=HIGHS_OPTIONS,
        )
        if result.status != 0:
            return None
        return np.maximum(result.x.reshape(self.shape), 0.0)


def _closed_form_rewards(
    x1: np.ndarray, x2: np.ndarray, market: Market
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rewards of the least-rent structure for a batch of costs x1 (B,K), x2 (B,K,K).

    The market's arrays are broadcast to the B rows of the closed form of its participation
    rule (:data:`CLOSED_FORMS`). Also returns where only downward constraints bind, which
    (with a monotone transition matrix) certifies that the rewards are least-cost.
    """
    k, rows = market.num_types, x1.shape[0]
    inv_theta = np.broadcast_to(1.0 / market.types, (rows, k))
    transition = np.broadcast_to(market.transition, (rows, k, k))
    discount = np.full(rows, market.discount)
    closed_form = CLOSED_FORMS.get(market.participation)
    if closed_form is None:
        raise ValueError(f"participation: unknown rule {market.participation!r}")
    return closed_form(x1, x2, inv_theta, transition, discount)


def _constraint_excess(f: np.ndarray, r: np.ndarray, market: Market) -> np.ndarray:
    """Excess of every constraint for flat batches f, r (B, n) as a fraction of the market's
    money scale (:func:`market_value_scale`); > 0 = violated."""
    system = build_constraints(market)
    excess = energy_cost(f, market) @ system.a_cost.T + r @ system.a_reward.T
    scale = market_value_scale(market)
    return np.concatenate([excess / scale, -r / scale], axis=1)


def _flatten(f1: np.ndarray, f2: np.ndarray, market: Market) -> np.ndarray:
    k = market.num_types
    f1 = np.asarray(f1, dtype=float)
    f2 = np.asarray(f2, dtype=float)
    if f1.ndim != 2 or f1.shape[1] != k or f2.shape != (f1.shape[0], k, k):
        raise ValueError(
            f"f1/f2: expected shapes (B, {k}) and (B, {k}, {k}), got {f1.shape} and {f2.shape}"
        )
    return np.concatenate([f1, f2.reshape(f1.shape[0], k * k)], axis=1)


def _batch_payments(
    f1: np.ndarray, f2: np.ndarray, market: Market, exact: bool, tol: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Flat f, flat rewards, feasible mask and violation counts of a batch."""
    k = market.num_types
    f = _flatten(f1, f2, market)
    x = energy_cost(f, market)
    r1, r2, only_downward = _closed_form_rewards(x[:, :k], x[:, k:].reshape(-1, k, k), market)
    r = np.concatenate([r1, r2.reshape(-1, k * k)], axis=1)
    r = np.where(np.isfinite(r), r, 0.0)  # a positive cycle: no least rents, score as zero
    in_bounds = _within_bounds(f, market)
    excess = _constraint_excess(f, r, market)
    violations = np.sum(excess > tol, axis=1) + np.sum(
        (f < market.f_lower_ghz - 1e-9) | (f > market.f_max_ghz + 1e-9), axis=1
    )
    feasible = (violations == 0) & np.all(np.isfinite(r1), axis=1)
    violations = np.where(np.all(np.isfinite(r1), axis=1), violations, np.maximum(violations, 1))
    if market.transition_is_monotone:
        certified = feasible & only_downward
    else:
        # The closed form is least-cost only when P's rows dominate each other stochastically.
        certified = np.zeros_like(feasible)
    if exact:
        # Non-decreasing f in every period-2 menu is necessary (adding IC2 of j and j+1).
        f2_flat = f[:, k:].reshape(-1, k, k)
        monotone2 = np.all(np.diff(f2_flat, axis=2) >= -1e-12, axis=(1, 2))
        for row in np.flatnonzero(~certified & in_bounds & monotone2):
            rewards = minimal_payments_flat(f[row], market)
            if rewards is not None:
                r[row] = np.maximum(rewards, 0.0)
                feasible[row] = True
                violations[row] = 0
    return f, r, feasible, violations


def minimal_payments_batch(
    f1: np.ndarray,
    f2: np.ndarray,
    market: Market,
    exact: bool = True,
    tol: float = DEFAULT_TOLERANCE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-cost rewards for a batch of menus, vectorised over the batch.

    Parameters
    ----------
    f1 : np.ndarray
        Period-1 resources, shape (B, K).
    f2 : np.ndarray
        Period-2 resources, shape (B, K, K).
    market : Market
        The market.
    exact : bool
        When True, rows the closed form cannot certify (an infeasible local-binding
        candidate with monotone period-2 menus, or a non-monotone transition matrix) are
        solved by the LP, so every row is exact. When False only the closed form is used:
        its rewards are always feasible when reported feasible, and least-cost whenever the
        transition matrix is monotone; a few implementable menus are then reported infeasible.
    tol : float
        Tolerance of the feasibility check, a fraction of the market's money scale.

    Returns
    -------
    r1 : np.ndarray
        Period-1 rewards (B, K); NaN in rows that are not implementable.
    r2 : np.ndarray
        Period-2 rewards (B, K, K); NaN in rows that are not implementable.
    feasible : np.ndarray
        Boolean mask (B,) of implementable rows.
    """
    k = market.num_types
    _, r, feasible, _ = _batch_payments(f1, f2, market, exact, tol)
    r = np.where(feasible[:, None], r, np.nan)
    return r[:, :k], r[:, k:].reshape(-1, k, k), feasible


def score_f_menus(
    f1: np.ndarray,
    f2: np.ndarray,
    market: Market,
    exact: bool = True,
    tol: float = DEFAULT_TOLERANCE,
) -> tuple[np.ndarray, np.ndarray]:
    """Cloud utility and number of violated constraints of a batch of f-menus.

    Feasible rows are scored with their least-cost rewards (violations 0). An infeasible
    row is scored with the closed-form rewards of the local-binding structure, and its
    violation count says how many constraints (and bounds) those rewards break, so a
    designer can shape a penalty from it. See :func:`minimal_payments_batch` for ``exact``.

    Returns
    -------
    cloud_utility : np.ndarray
        Shape (B,).
    violations : np.ndarray
        Shape (B,), integers.
    """
    f, r, _, violations = _batch_payments(f1, f2, market, exact, tol)
    weights = item_weights(market)
    used = weights > 0
    values = value_of_work(f[:, used], market) - r[:, used]
    return values @ weights[used], violations.astype(int)
