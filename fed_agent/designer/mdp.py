"""The designer's decision process: market -> state, action -> menu, menu -> reward.

docs/contract-model.md ("The designer as a decision process"): one-step episodes, the state
is the normalised market, the action a point of [-1, 1]^(K + K^2) that this module turns
into a menu of computing resources f (the minimal payment rule then gives the rewards R),
and the reward is the cloud utility of the resulting contract. This is the one boundary
between action units and contract units.
"""

from __future__ import annotations

import numpy as np

from fed_agent.contracts import MarketBatch, MarketRanges, complete_information_utility

FEATURE_RANGES = MarketRanges()
"""The ranges every state feature is normalised over, the same for every designer."""
EFFICIENT_SHARE = 0.75
"""Share of each action coordinate's range that leads up to the complete-information
efficient f; the rest reaches up to f_max (see :func:`actions_to_menus`)."""
PERIOD1_DROP_SHARE = 0.1
"""Share of a period-1 coordinate's range that places f below the previous type's."""


def state_features(batch: MarketBatch, ranges: MarketRanges = FEATURE_RANGES) -> np.ndarray:
    """The normalised state of each market, shape (B, 3K + K^2 + 7), float32.

    Columns: theta (K), prior (K), transition (K^2), discount, workload W, upload time S/r,
    kappa, omega, T_max, the participation rule (-1 per period, +1 ex ante) and the
    complete-information efficient f per type (K), a closed-form summary of how costs and
    value trade off. Every quantity is mapped linearly from the range that ``ranges`` allows
    to [-1, 1] (probabilities from [0, 1]; upload time from [0, 0.5] s; f from
    [f_lo, f_hi]); values outside the ranges stay finite.
    """
    theta_hi = ranges.theta_min[1] + ranges.theta_span[1]

    def unit(x: np.ndarray, lo: float | np.ndarray, hi: float | np.ndarray) -> np.ndarray:
        return 2 * (x - lo) / (hi - lo) - 1

    f_lo, f_hi = batch.f_lo[:, None], batch.f_hi[:, None]
    columns = [
        unit(batch.types, ranges.theta_min[0], theta_hi),
        unit(batch.prior, 0.0, 1.0),
        unit(batch.transition.reshape(batch.size, -1), 0.0, 1.0),
        unit(batch.discount[:, None], *ranges.discount),
        unit(batch.workload[:, None], *ranges.workload_gcycles),
        unit(batch.upload_s[:, None], 0.0, 0.5),
        unit(batch.kappa[:, None], *ranges.kappa),
        unit(batch.omega[:, None], *ranges.omega),
        unit(batch.t_max[:, None], *ranges.t_max_s),
        np.where(batch.ex_ante, 1.0, -1.0)[:, None],
        unit(batch.efficient_resource(), f_lo, f_hi),
    ]
    return np.concatenate(columns, axis=1).astype(np.float32)


def state_dim(num_types: int) -> int:
    """Width of :func:`state_features` for K types."""
    return 3 * num_types + num_types**2 + 7


def action_dim(num_types: int) -> int:
    """Width of an action, K + K^2 (one f per menu item; R follows from the payment rule)."""
    return num_types + num_types**2


def _knots(previous: np.ndarray, efficient: np.ndarray, f_lo: np.ndarray, f_hi: np.ndarray):
    """The f at the segment ends of one coordinate: f_lo, previous, efficient, f_hi."""
    knee = np.minimum(np.maximum(efficient, previous), f_hi)
    return [f_lo, previous, knee, f_hi]


def _segment_ends(period1: bool) -> np.ndarray:
    """Where each segment of a coordinate's u in [0, 1] ends (see :func:`actions_to_menus`)."""
    drop = PERIOD1_DROP_SHARE if period1 else 0.0
    return np.array([0.0, drop, drop + (1 - drop) * EFFICIENT_SHARE, 1.0])


def _forward(u: np.ndarray, knots: list[np.ndarray], ends: np.ndarray) -> np.ndarray:
    f = np.zeros_like(u)
    for s in range(3):
        width = ends[s + 1] - ends[s]
        if width <= 0:
            continue
        share = np.clip((u - ends[s]) / width, 0.0, 1.0)
        inside = (u >= ends[s]) & ((u <= ends[s + 1]) if s == 2 else (u < ends[s + 1]))
        f = np.where(inside, knots[s] + share * (knots[s + 1] - knots[s]), f)
    return f


def _inverse(f: np.ndarray, knots: list[np.ndarray], ends: np.ndarray) -> np.ndarray:
    f = np.clip(f, knots[0] if ends[1] > 0 else knots[1], knots[3])
    u = np.zeros_like(f)
    for s in reversed(range(3)):
        width = ends[s + 1] - ends[s]
        if width <= 0:
            continue
        span = knots[s + 1] - knots[s]
        share = np.where(span > 1e-12, (f - knots[s]) / np.maximum(span, 1e-12), 0.0)
        inside = (f >= knots[s]) & (f <= knots[s + 1]) & ((span > 1e-12) | (s == 1))
        u = np.where(inside & (u == 0), ends[s] + np.clip(share, 0, 1) * width, u)
    return u


def actions_to_menus(actions: np.ndarray, batch: MarketBatch) -> tuple[np.ndarray, np.ndarray]:
    """Map actions in [-1, 1]^(K + K^2) to menus of computing resources (the one boundary).

    Each of the K + 1 menus (period 1, and period 2 after each report) is built from the
    lowest type up; u = (a + 1) / 2 in [0, 1] places type k's f piecewise linearly relative
    to the previous type's f (f_lo for the lowest type):

    - period 2: u in [0, s] (s = ``EFFICIENT_SHARE``) covers the way up from the previous f
      to the type's complete-information efficient f, u in [s, 1] the way on up to f_max.
      Every period-2 menu rises with the type (incentive compatibility needs it), and every
      rising menu in [f_lo, f_max] is reached, also the optima above the efficient level
      that ex ante participation and non-monotone transitions produce.
    - period 1: the first ``PERIOD1_DROP_SHARE`` of u covers [f_lo, previous f] (an exact
      optimum can fall with the type in period 1 when transitions are not monotone: the
      continuation pays for it), the rest as in period 2. So every period-1 menu in
      [f_lo, f_max]^K is reached.

    The knot at the efficient level keeps most of the action space where the per-period
    optima lie (information rents distort f downwards there).

    Parameters
    ----------
    actions : np.ndarray
        Shape (B, K + K^2), period-1 coordinates first, then period 2 row by row.
    batch : MarketBatch
        The B markets.

    Returns
    -------
    tuple[np.ndarray, np.ndarray]
        f1 of shape (B, K) and f2 of shape (B, K, K), in GHz.
    """
    k = batch.num_types
    u = (np.clip(np.asarray(actions, dtype=float), -1.0, 1.0) + 1.0) / 2.0
    u = u.reshape(batch.size, k + 1, k)
    menus = np.empty_like(u)
    for row in range(k + 1):
        menus[:, row] = _menu(u[:, row], batch, period1=row == 0)
    return menus[:, 0], menus[:, 1:]


def _menu(u: np.ndarray, batch: MarketBatch, period1: bool) -> np.ndarray:
    ends = _segment_ends(period1)
    efficient = batch.efficient_resource()
    f = np.empty_like(u)
    previous = batch.f_lo
    for j in range(u.shape[1]):
        knots = _knots(previous, efficient[:, j], batch.f_lo, batch.f_hi)
        f[:, j] = previous = _forward(u[:, j], knots, ends)
    return f


def menus_to_actions(f1: np.ndarray, f2: np.ndarray, batch: MarketBatch) -> np.ndarray:
    """Inverse of :func:`actions_to_menus`: the action of each menu, (B, K + K^2).

    A menu outside the mapping's image (a period-2 menu falling with the type, or f outside
    [f_lo, f_max]) is projected onto it item by item, so
    ``actions_to_menus(menus_to_actions(m))`` equals ``m`` exactly when ``m`` can be
    expressed: the tests and the designer benchmark measure expressiveness so.
    """
    k = batch.num_types
    menus = np.concatenate([np.asarray(f1)[:, None, :], np.asarray(f2)], axis=1)
    efficient = batch.efficient_resource()
    u = np.zeros_like(menus)
    for row in range(k + 1):
        ends = _segment_ends(row == 0)
        previous = batch.f_lo
        for j in range(k):
            knots = _knots(previous, efficient[:, j], batch.f_lo, batch.f_hi)
            u[:, row, j] = _inverse(menus[:, row, j], knots, ends)
            previous = _forward(u[:, row, j], knots, ends)
    return (2 * u - 1).reshape(batch.size, -1)


def designer_reward(
    utility: np.ndarray,
    violations: np.ndarray,
    batch: MarketBatch,
    scale_frac: float,
    penalty: float,
) -> np.ndarray:
    """The learning signal of one-step episodes, (B,).

    (U - U_complete_information) / (scale_frac * omega ln(1 + T_max)) - penalty * violations.
    Subtracting the closed-form complete-information utility centres rewards per market
    (it is a market-dependent constant, so the optimal menu does not change) and the unit
    omega ln(1 + T_max), the most one period of work can be worth, makes markets of
    different value scales comparable; the optimum is never used. A menu that the closed
    form cannot implement is scored with its (too optimistic) closed-form utility minus a
    penalty per violated constraint.
    """
    scale = scale_frac * batch.omega * np.log1p(batch.t_max)
    centred = (utility - complete_information_utility(batch)) / scale
    return centred - penalty * violations
