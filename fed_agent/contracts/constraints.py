"""The constraints of the design problem as one linear system in (cost, reward).

Every constraint of docs/contract-model.md (IR, period-2 IC, intertemporal IC) is linear in
the energy costs ``x = c(f)`` and rewards ``R`` of the K + K^2 items, so one matrix pair
serves the audit, the minimal payment LP and the convex solvers: a contract is feasible when
``A_cost @ x + A_reward @ R <= 0`` row by row. Items are indexed as in
``DynamicContract.flat_f``: period-1 item i at i, period-2 item (i, j) at K + i K + j.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fed_agent.contracts.market import Market


@dataclass(frozen=True, eq=False)
class ConstraintSystem:
    """Rows ``A_cost @ x + A_reward @ R <= 0``; ``labels[m]`` = (kind, type indices) of row m."""

    a_cost: np.ndarray
    a_reward: np.ndarray
    labels: tuple[tuple[str, tuple[int, ...]], ...]


def period1_index(i: int) -> int:
    """Flat index of period-1 item i."""
    return i


def period2_index(i: int, j: int, num_types: int) -> int:
    """Flat index of period-2 item j of the menu after period-1 report i."""
    return num_types + i * num_types + j


def item_types(market: Market) -> np.ndarray:
    """Willingness theta of the type each flat item is meant for, shape (K + K^2,)."""
    k = market.num_types
    return np.concatenate([market.types, np.tile(market.types, k)])


def item_weights(market: Market) -> np.ndarray:
    """Probability weight of each flat item in the cloud's utility (eq. U_cloud):
    rho_i for period-1 item i, delta rho_i P_ij for period-2 item (i, j)."""
    period2 = market.discount * market.prior[:, None] * market.transition
    return np.concatenate([market.prior, period2.ravel()])


def constraint_labels(num_types: int) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """(kind, type indices) of every row of the system, in row order, for K types:
    IR (period 1, then each (i, j)), period-2 IC (i, j, j'), intertemporal IC (i, i')."""
    k = num_types
    labels: list[tuple[str, tuple[int, ...]]] = [("IR", (i,)) for i in range(k)]
    labels += [("IR", (i, j)) for i in range(k) for j in range(k)]
    labels += [("IC2", (i, j, o)) for i in range(k) for j in range(k) for o in range(k) if o != j]
    labels += [("IC_intertemporal", (i, o)) for i in range(k) for o in range(k) if o != i]
    return tuple(labels)


def constraint_arrays(
    types: np.ndarray, discount: np.ndarray, transition: np.ndarray, ex_ante: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``A_cost`` and ``A_reward`` of B markets at once, each of shape (B, M, K + K^2).

    Rows follow :func:`constraint_labels`. ``types`` (B, K), ``discount`` (B,), ``transition``
    (B, K, K), ``ex_ante`` (B,) bool (the participation rule; else per period). The loops run
    over the M rows, never over markets, so a thousand markets cost about as much as one.
    """
    b, k = types.shape
    n = k * (k + 1)
    labels = constraint_labels(k)
    cost, reward = np.zeros((b, len(labels), n)), np.zeros((b, len(labels), n))
    ex_ante = np.asarray(ex_ante, dtype=float)
    per_period = 1.0 - ex_ante

    def utility(row: int, index: int, theta: np.ndarray, weight: np.ndarray | float) -> None:
        """Add weight * (R_index - x_index / theta) to ``row``."""
        cost[:, row, index] -= weight / theta
        reward[:, row, index] += weight

    def lifetime(row: int, true_type: int, report: int, sign: np.ndarray | float) -> None:
        """Add sign * the epoch utility of type ``true_type`` reporting ``report``, then the
        truth in period 2."""
        utility(row, period1_index(report), types[:, true_type], sign)
        for j in range(k):
            weight = sign * discount * transition[:, true_type, j]
            utility(row, period2_index(report, j, k), types[:, j], weight)

    for row, (kind, index) in enumerate(labels):
        if kind == "IR" and len(index) == 1:
            # per period: -(period-1 utility) <= 0; ex ante: -(epoch utility) <= 0
            (i,) = index
            utility(row, period1_index(i), types[:, i], -per_period)
            lifetime(row, i, i, -ex_ante)
        elif kind == "IR":
            # per period: -(period-2 utility) <= 0. Ex ante, the commitment the federation
            # can enforce: it holds period-1 pay back until the period-2 work is delivered, so
            # an ES stays only if the held pay plus its period-2 item covers its period-2
            # cost (R_i + R_ij - x_ij / theta_j >= 0): no history may ask for a period-2 loss
            # larger than what walking away would forfeit.
            i, j = index
            utility(row, period2_index(i, j, k), types[:, j], -1.0)
            reward[:, row, period1_index(i)] -= ex_ante
        elif kind == "IC2":
            # type j after history i prefers item (i, j) to item (i, other)
            i, j, other = index
            utility(row, period2_index(i, other, k), types[:, j], 1.0)
            utility(row, period2_index(i, j, k), types[:, j], -1.0)
        else:
            # period-1 type i prefers reporting i to any other (then truthful)
            i, other = index
            lifetime(row, i, other, 1.0)
            lifetime(row, i, i, -1.0)
    return cost, reward


def build_constraints(market: Market) -> ConstraintSystem:
    """All IR, period-2 IC and intertemporal IC rows of ``market`` (cached on the market)."""
    cached = market._derived.get("constraints")
    if cached is not None:
        return cached
    cost, reward = constraint_arrays(
        market.types[None],
        np.array([market.discount]),
        market.transition[None],
        np.array([_ex_ante(market)]),
    )
    system = ConstraintSystem(cost[0], reward[0], constraint_labels(market.num_types))
    market._derived["constraints"] = system
    return system


def _ex_ante(market: Market) -> bool:
    """The market's participation rule is ex ante (else per period)."""
    if market.participation not in ("per_period", "ex_ante"):
        raise ValueError(f"participation: unknown rule {market.participation!r}")
    return market.participation == "ex_ante"


def value_scale(omega, t_max_s, discount):
    """The money scale of a market: max(1, (1 + delta) omega ln(1 + T_max)).

    One period of an ES's work is worth G(f) = omega ln(1 + T_max - T(f)) < omega ln(1 + T_max)
    to the cloud (T(f) > 0), so (1 + delta) omega ln(1 + T_max) bounds what an epoch of one
    ES can be worth, and with it the complete-information value of the market. Tolerances of
    the audit, the batch verification and the ES's best response are fractions of this scale:
    a fixed amount of money per market, whatever rewards a contract proposes (a tolerance
    relative to the rewards would grow with them and let a contract with huge rewards on
    items of no weight hide a large violation elsewhere). Works element-wise on arrays.
    """
    scale = (1.0 + np.asarray(discount)) * np.asarray(omega) * np.log1p(np.asarray(t_max_s))
    return np.maximum(1.0, scale)


def market_value_scale(market: Market) -> float:
    """:func:`value_scale` of one market."""
    return float(value_scale(market.omega, market.t_max_s, market.discount))
