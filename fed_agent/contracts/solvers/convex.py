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

import heapq
import itertools
from dataclasses import dataclass

import numpy as np
from scipy.optimize import OptimizeResult, brentq, linprog

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
    """Branch-and-bound nodes solved (1 without exclusion)."""
    excluded: np.ndarray | None = None
    """(K + K^2,) items that are the exit (f = 0, R = 0), with exclusion."""


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


IN, FREE, OUT = 0, 1, 2
"""Status of a cost variable in the exclusion branch and bound: it works (x in [x_lo, x_hi],
value G), it may work or exit (x in [0, x_hi], value the concave envelope of G and the exit
point (0, 0)), or it exits (x = 0, R = 0, value 0)."""
EXIT_TOLERANCE = 1e-9
MAX_NODES = 200


def envelope_point(market: Market, x_lo: float, x_hi: float) -> float:
    """Where the line from the exit point (0, 0) touches G(f(x)) on [x_lo, x_hi].

    The concave envelope of {(0, 0)} and G on [x_lo, x_hi] is that line up to this point and
    G after it. h(x) = G - x G' rises with x (G is concave), so the point is x_lo when
    h(x_lo) >= 0, x_hi when h(x_hi) <= 0, else the root of h.
    """

    def h(x: float) -> float:
        value, slope = _value_and_slope(np.array([x]), market)
        return float(value[0] - x * slope[0])

    if h(x_lo) >= 0:
        return x_lo
    if h(x_hi) <= 0:
        return x_hi
    return float(brentq(h, x_lo, x_hi, xtol=1e-12 * x_hi))


@dataclass
class _Problem:
    """The cutting-plane LP of :func:`solve_tied` without its cuts."""

    market: Market
    objective: np.ndarray
    base_rows: np.ndarray
    base_rhs: np.ndarray
    fixed: np.ndarray
    """(n_cost,) the value each cost variable is held at, NaN where it is free."""
    value_weight: np.ndarray
    reward_weight: np.ndarray
    n_cost: int
    n_reward: int
    x_lo: float
    x_hi: float
    x_touch: float
    rel_gap: float
    max_iterations: int

    def values(self, x: np.ndarray, status: np.ndarray) -> np.ndarray:
        """The value each variable's status gives its x (G, the envelope or 0)."""
        work = np.maximum(x, self.x_lo)
        value, _ = _value_and_slope(work, self.market)
        chord = self._chord_slope() * x
        envelope = np.where(x >= self.x_touch, value, chord)
        return np.where(status == IN, value, np.where(status == FREE, envelope, 0.0))

    def _chord_slope(self) -> float:
        value, _ = _value_and_slope(np.array([self.x_touch]), self.market)
        return float(value[0] / self.x_touch)

    def solve(self, status: np.ndarray) -> tuple[float, float, np.ndarray, np.ndarray] | None:
        """Kelley's cutting planes for one status vector: (upper bound, value, x, R) of the
        relaxation, or None when it has no feasible point."""
        n_cost, n_reward = self.n_cost, self.n_reward
        free, out = status == FREE, status == OUT
        low = np.where(status == IN, self.x_lo, 0.0)
        high = np.where(out, 0.0, self.x_hi)
        held = ~np.isnan(self.fixed) & ~out
        low = np.where(held, np.clip(self.fixed, low, high), low)
        high = np.where(held, low, high)
        bounds = (
            list(zip(low, high, strict=True))
            + [(0.0, 0.0) if out[v] else (0.0, None) for v in range(n_reward)]
            + [(None, 0.0) if out[v] else (None, None) for v in range(n_cost)]
        )
        eye = np.eye(n_cost)
        cut_rows: list[np.ndarray] = []
        cut_rhs: list[np.ndarray] = []
        # tangents below the touching point would cut the exit point off a FREE variable,
        # and when the line touches at x_hi the line alone is its envelope
        tangents_ok = ~free | (self.x_touch < self.x_hi)

        def add_cuts(points: np.ndarray, which: np.ndarray) -> None:
            points = np.where(free, np.maximum(points, self.x_touch), points)
            which = which & ~out & tangents_ok
            value, slope = _value_and_slope(np.maximum(points, self.x_lo), self.market)
            rows = np.hstack([-slope[:, None] * eye, np.zeros((n_cost, n_reward)), eye])[which]
            cut_rows.append(rows)
            cut_rhs.append((value - slope * points)[which])

        if free.any():
            rows = np.hstack([-self._chord_slope() * eye, np.zeros((n_cost, n_reward)), eye])
            cut_rows.append(rows[free])
            cut_rhs.append(np.zeros(int(free.sum())))
        grid = energy_cost(
            np.linspace(self.market.f_lower_ghz, self.market.f_max_ghz, INITIAL_CUTS), self.market
        )
        for point in grid:
            add_cuts(np.full(n_cost, point), np.ones(n_cost, dtype=bool))
        best_upper, best_lower, best = np.inf, -np.inf, None
        iterations = 0
        while iterations < self.max_iterations:
            iterations += 1
            rows = np.vstack([self.base_rows, *cut_rows])
            rhs = np.concatenate([self.base_rhs, *cut_rhs])
            result = _solve_cut_lp(self.objective, rows, rhs, bounds)
            if result is None:
                if iterations == 1 and (status != IN).any():
                    return None  # a branch whose exits leave no feasible contract
                raise RuntimeError(
                    f"cutting-plane LP failed at iteration {iterations} under every HiGHS setting"
                )
            x = np.clip(result.x[:n_cost], low, high)
            rewards = np.maximum(result.x[n_cost : n_cost + n_reward], 0.0)
            t = result.x[n_cost + n_reward :]
            value = self.values(x, status)
            paid = self.reward_weight @ rewards
            lower = float(self.value_weight @ value - paid)
            upper = float(self.value_weight @ t - paid)
            best_upper = min(best_upper, upper)
            if lower > best_lower:
                best_lower, best = lower, (x, rewards)
            if best_upper - best_lower <= self.rel_gap * (1.0 + abs(best_lower)):
                break
            # Cut only where the LP overestimates the value (the cut is tight there afterwards).
            add_cuts(x, (t - value) > 1e-12 * (1.0 + np.abs(value)))
        x, rewards = best
        return best_upper, best_lower, x, rewards


def _rows(
    a_cost: np.ndarray, a_reward: np.ndarray, extra: tuple[np.ndarray, ...] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The model's rows (right-hand side 0) followed by ``extra`` ``(A_cost, A_reward, rhs)``."""
    rhs = np.zeros(a_cost.shape[0])
    if extra is None:
        return a_cost, a_reward, rhs
    return (
        np.vstack([a_cost, extra[0]]),
        np.vstack([a_reward, extra[1]]),
        np.concatenate([rhs, extra[2]]),
    )


def solve_tied(
    market: Market,
    cost_map: np.ndarray,
    reward_map: np.ndarray,
    kinds: tuple[str, ...] = ("IR", "IC2", "IC_intertemporal"),
    rel_gap: float = 1e-9,
    max_iterations: int = 300,
    exclusion: bool = False,
    max_nodes: int = MAX_NODES,
    exits: np.ndarray | None = None,
    fixed_cost: np.ndarray | None = None,
    extra_rows: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
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
    exclusion : bool
        Every item may also be the exit (no work, no pay: f = 0, R = 0). Mixed: each
        variable works or exits. Solved by branch and bound: a relaxation lets a variable
        take any x in [0, x_hi] at the value of the concave envelope of G and the exit point
        (an upper bound), and a variable whose relaxed x is neither an exit nor on G is
        branched into "exits" and "works". Needs ``cost_map == reward_map``. Best first;
        after ``max_nodes`` nodes the gap to the best open node is reported.
    exits : np.ndarray, optional
        (n_cost,) bool: these variables are the exit, the others work (no branching; with
        ``exclusion`` only). Tests enumerate exit patterns with it.
    fixed_cost : np.ndarray, optional
        (n_cost,) costs x held at these values (NaN: free); with ``exclusion`` a variable held
        at 0 is the exit and one held above 0 works (neither is branched on).
    extra_rows : tuple, optional
        ``(A_cost, A_reward, rhs)``: more rows ``A_cost @ x + A_reward @ R <= rhs`` over the
        flat items (the renegotiation-proof contract adds its period-2 constraints so).
    """
    system = build_constraints(market)
    keep = np.array([kind in kinds for kind, _ in system.labels])
    weights = item_weights(market)
    n_cost, n_reward = int(cost_map.max()) + 1, int(reward_map.max()) + 1
    if exclusion and not np.array_equal(cost_map, reward_map):
        raise ValueError("exclusion needs the same tied variables for costs and rewards")
    tie_cost = np.zeros((cost_map.size, n_cost))
    tie_cost[np.arange(cost_map.size), cost_map] = 1.0
    tie_reward = np.zeros((reward_map.size, n_reward))
    tie_reward[np.arange(reward_map.size), reward_map] = 1.0
    a_cost, a_reward, rhs = _rows(system.a_cost[keep], system.a_reward[keep], extra_rows)
    a_cost, a_reward = a_cost @ tie_cost, a_reward @ tie_reward
    fixed = np.full(n_cost, np.nan) if fixed_cost is None else np.asarray(fixed_cost, float)
    value_weight = weights @ tie_cost
    reward_weight = weights @ tie_reward
    tie_break = reward_weight + TIE_BREAK_WEIGHT * max(weights.max(), 1e-12)

    x_lo = float(energy_cost(market.f_lower_ghz, market))
    x_hi = float(energy_cost(market.f_max_ghz, market))
    problem = _Problem(
        market=market,
        # Variables: [x (n_cost), R (n_reward), t (n_cost)]; maximise value.t - reward.R
        objective=np.concatenate([np.zeros(n_cost), tie_break, -value_weight]),
        base_rows=np.hstack([a_cost, a_reward, np.zeros((a_cost.shape[0], n_cost))]),
        base_rhs=rhs,
        fixed=fixed,
        value_weight=value_weight,
        reward_weight=reward_weight,
        n_cost=n_cost,
        n_reward=n_reward,
        x_lo=x_lo,
        x_hi=x_hi,
        x_touch=envelope_point(market, x_lo, x_hi) if exclusion else x_lo,
        rel_gap=rel_gap,
        max_iterations=max_iterations,
    )
    # every variable may exit, also one of no weight: an item no type uses with positive
    # probability still holds the rents of the types above it through their IC
    root = np.full(n_cost, FREE if exclusion else IN)
    if exclusion and exits is not None:
        root = np.where(np.asarray(exits, bool), OUT, IN)
    if exclusion and fixed_cost is not None:
        root = np.where(np.isnan(fixed), root, np.where(fixed == 0, OUT, IN))
    incumbent, best, best_status = -np.inf, None, root
    bound = -np.inf  # the largest relaxation bound of every leaf closed so far
    order = itertools.count()
    queue: list[tuple[float, int, np.ndarray, tuple]] = []

    def push(status: np.ndarray) -> None:
        solved = problem.solve(status)
        if solved is not None:
            heapq.heappush(queue, (-solved[0], next(order), status, solved))

    push(root)
    nodes = 1
    while queue:
        upper, x, rewards = queue[0][3][0], queue[0][3][2], queue[0][3][3]
        if upper <= incumbent + rel_gap * (1.0 + abs(incumbent)):
            break  # best first: no open node can beat the incumbent
        if nodes >= max_nodes:
            break
        _, _, status, _ = heapq.heappop(queue)
        exits = (x <= EXIT_TOLERANCE * x_hi) & (rewards <= EXIT_TOLERANCE * (1 + x_hi))
        on_value = x >= problem.x_touch * (1 - 1e-12)
        undecided = (status == FREE) & ~exits & ~on_value
        if not undecided.any():
            bound = max(bound, upper)  # a leaf: its relaxation bounds what it is worth
            final = np.where(exits & (status != IN), OUT, IN)
            x = np.where(final == OUT, 0.0, np.maximum(x, x_lo))
            rewards = np.where(final == OUT, 0.0, rewards)
            true = float(value_weight @ problem.values(x, final) - reward_weight @ rewards)
            if true > incumbent:
                incumbent, best, best_status = true, (x, rewards), final
            continue
        # branch on the undecided variable of largest weight: it exits, or it works
        branch = int(np.argmax(np.where(undecided, value_weight, -np.inf)))
        for choice in (OUT, IN):
            child = status.copy()
            child[branch] = choice
            push(child)
            nodes += 1
    if queue:
        bound = max(bound, -queue[0][0])
    if best is None:
        raise RuntimeError(f"no feasible contract found in {nodes} branch-and-bound nodes")
    x, rewards = best
    f = np.where(best_status == OUT, 0.0, np.sqrt(x / (market.kappa * market.workload_gcycles)))
    return ConvexResult(
        f=f @ tie_cost.T,
        rewards=rewards @ tie_reward.T,
        upper_bound=max(bound, incumbent),
        lower_bound=incumbent,
        iterations=nodes,
        excluded=(best_status == OUT) @ tie_cost.T > 0.5,
    )
