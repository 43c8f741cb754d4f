"""Exact solver of the design problem: a concave program in (cost, reward) by cutting planes.

In the variables x = c(f) (energy cost of each item) and R (rewards), every constraint of the
problem is linear and the cloud's value G(f(x)) is concave in x (G is concave increasing in f
and f = sqrt(x / (kappa W)) is concave), so the design problem is a concave maximisation over
a polyhedron and its optimum is global. We solve it by Kelley's cutting planes: each
hypograph of G is replaced by tangent cuts, an LP (HiGHS) gives an upper bound and a contract,
the contract's true utility a lower bound, and cuts are added where the LP overestimates G
until the two bounds meet. The gap is a certificate of optimality, not a heuristic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import OptimizeResult, linprog

from fed_agent.contracts.constraints import build_constraints, item_weights
from fed_agent.contracts.market import Market
from fed_agent.contracts.payments import HIGHS_OPTIONS, TIE_BREAK_WEIGHT
from fed_agent.contracts.utility import energy_cost, value_of_work

INITIAL_CUTS = 12


@dataclass(frozen=True)
class ConvexResult:
    """Flat resources and rewards of the optimum with its certified gap."""

    f: np.ndarray
    rewards: np.ndarray
    upper_bound: float
    lower_bound: float
    iterations: int


def _value_and_slope(x: np.ndarray, market: Market) -> tuple[np.ndarray, np.ndarray]:
    """G(f(x)) and its derivative in x, where f(x) = sqrt(x / (kappa W))."""
    kw = market.kappa * market.workload_gcycles
    f = np.sqrt(x / kw)
    headroom = 1.0 + market.t_max_s - market.workload_gcycles / f - market.upload_s
    slope_f = market.omega * market.workload_gcycles / (f * f * headroom)
    return value_of_work(f, market), slope_f / (2.0 * kw * f)


# HiGHS settings tried in turn on one cutting-plane LP: the tight tolerances first; on the
# rare LP where they end in an unknown model status (about 1 in 1,000 random federation
# markets), interior point, then dual simplex at HiGHS's default tolerances.
FALLBACK_SETTINGS = (("highs", HIGHS_OPTIONS), ("highs-ipm", {}), ("highs-ds", {}))


def _solve_cut_lp(
    objective: np.ndarray, rows: np.ndarray, rhs: np.ndarray, bounds: list
) -> OptimizeResult | None:
    """The LP's optimal result under the first setting of FALLBACK_SETTINGS that solves it,
    or None."""
    for method, options in FALLBACK_SETTINGS:
        result = linprog(
            objective, A_ub=rows, b_ub=rhs, bounds=bounds, method=method, options=options
        )
        if result.status == 0:
            return result
    return None


def solve_tied(
    market: Market,
    cost_map: np.ndarray,
    reward_map: np.ndarray,
    kinds: tuple[str, ...] = ("IR", "IC2", "IC_intertemporal"),
    rel_gap: float = 1e-9,
    max_iterations: int = 300,
) -> ConvexResult:
    """Maximise the cloud's utility over contracts whose items share variables.

    Parameters
    ----------
    market : Market
        The market.
    cost_map, reward_map : np.ndarray
        Integer arrays of length K + K^2: flat item k uses cost variable ``cost_map[k]`` and
        reward variable ``reward_map[k]`` (identity maps = the unrestricted optimum; a static
        contract maps period-2 item (i, j) to j; a uniform one maps everything to 0).
    kinds : tuple of str
        Constraint kinds to impose (complete information imposes IR only).
    rel_gap : float
        Stop when upper bound - lower bound <= rel_gap * (1 + |lower bound|).
    """
    system = build_constraints(market)
    keep = np.array([kind in kinds for kind, _ in system.labels])
    weights = item_weights(market)
    n_cost, n_reward = int(cost_map.max()) + 1, int(reward_map.max()) + 1
    tie_cost = np.zeros((cost_map.size, n_cost))
    tie_cost[np.arange(cost_map.size), cost_map] = 1.0
    tie_reward = np.zeros((reward_map.size, n_reward))
    tie_reward[np.arange(reward_map.size), reward_map] = 1.0
    a_cost = system.a_cost[keep] @ tie_cost
    a_reward = system.a_reward[keep] @ tie_reward
    value_weight = weights @ tie_cost
    reward_weight = weights @ tie_reward + TIE_BREAK_WEIGHT * max(weights.max(), 1e-12)

    x_lo = float(energy_cost(market.f_lower_ghz, market))
    x_hi = float(energy_cost(market.f_max_ghz, market))
    grid = energy_cost(np.linspace(market.f_lower_ghz, market.f_max_ghz, INITIAL_CUTS), market)
    cut_points = [np.full(n_cost, point) for point in grid]

    # Variables: [x (n_cost), R (n_reward), t (n_cost)]; maximise value_weight.t - reward_weight.R
    objective = np.concatenate([np.zeros(n_cost), reward_weight, -value_weight])
    base_rows = np.hstack([a_cost, a_reward, np.zeros((a_cost.shape[0], n_cost))])
    bounds = [(x_lo, x_hi)] * n_cost + [(0.0, None)] * n_reward + [(None, None)] * n_cost
    eye = np.eye(n_cost)
    cut_rows: list[np.ndarray] = []
    cut_rhs: list[np.ndarray] = []

    def add_cuts(points: np.ndarray, which: np.ndarray) -> None:
        value, slope = _value_and_slope(points, market)
        rows = np.hstack([-slope[:, None] * eye, np.zeros((n_cost, n_reward)), eye])[which]
        cut_rows.append(rows)
        cut_rhs.append((value - slope * points)[which])

    for point in cut_points:
        add_cuts(point, np.ones(n_cost, dtype=bool))
    best_upper, best_lower, best = np.inf, -np.inf, None
    iterations = 0
    while iterations < max_iterations:
        iterations += 1
        rows = np.vstack([base_rows, *cut_rows])
        rhs = np.concatenate([np.zeros(base_rows.shape[0]), *cut_rhs])
        result = _solve_cut_lp(objective, rows, rhs, bounds)
        if result is None:
            raise RuntimeError(
                f"cutting-plane LP failed at iteration {iterations} under every HiGHS setting"
            )
        x = np.clip(result.x[:n_cost], x_lo, x_hi)
        rewards = np.maximum(result.x[n_cost : n_cost + n_reward], 0.0)
        t = result.x[n_cost + n_reward :]
        value, _ = _value_and_slope(x, market)
        lower = float(value_weight @ value - (weights @ tie_reward) @ rewards)
        upper = float(value_weight @ t - (weights @ tie_reward) @ rewards)
        best_upper = min(best_upper, upper)
        if lower > best_lower:
            best_lower, best = lower, (x, rewards)
        if best_upper - best_lower <= rel_gap * (1.0 + abs(best_lower)):
            break
        # Cut only where the LP overestimates G (the cut is tight there afterwards).
        add_cuts(x, (t - value) > 1e-12 * (1.0 + np.abs(value)))
    x, rewards = best
    f = np.sqrt(x / (market.kappa * market.workload_gcycles))
    return ConvexResult(
        f=f @ tie_cost.T,
        rewards=rewards @ tie_reward.T,
        upper_bound=best_upper,
        lower_bound=best_lower,
        iterations=iterations,
    )
