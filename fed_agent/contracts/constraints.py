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


def _utility_row(n: int, index: int, theta: float, weight: float = 1.0) -> tuple:
    """Coefficients of weight * (R_index - x_index / theta)."""
    cost, reward = np.zeros(n), np.zeros(n)
    cost[index] = -weight / theta
    reward[index] = weight
    return cost, reward


def _lifetime_row(market: Market, true_type: int, report: int) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients of the epoch utility of period-1 type ``true_type`` reporting ``report``
    and then telling its period-2 type truthfully."""
    k, n = market.num_types, market.num_types * (market.num_types + 1)
    theta = market.types
    cost, reward = _utility_row(n, period1_index(report), theta[true_type])
    for j in range(k):
        weight = market.discount * market.transition[true_type, j]
        c, r = _utility_row(n, period2_index(report, j, k), theta[j], weight)
        cost += c
        reward += r
    return cost, reward


def build_constraints(market: Market) -> ConstraintSystem:
    """All IR, period-2 IC and intertemporal IC rows of ``market`` (cached on the market)."""
    cached = market._derived.get("constraints")
    if cached is not None:
        return cached
    k, n = market.num_types, market.num_types * (market.num_types + 1)
    theta = market.types
    costs: list[np.ndarray] = []
    rewards: list[np.ndarray] = []
    labels: list[tuple[str, tuple[int, ...]]] = []

    def add(kind: str, index: tuple[int, ...], cost: np.ndarray, reward: np.ndarray) -> None:
        costs.append(cost)
        rewards.append(reward)
        labels.append((kind, index))

    # Individual rationality, written as -(utility) <= 0.
    if market.participation == "per_period":
        for i in range(k):
            c, r = _utility_row(n, period1_index(i), theta[i])
            add("IR", (i,), -c, -r)
        for i in range(k):
            for j in range(k):
                c, r = _utility_row(n, period2_index(i, j, k), theta[j])
                add("IR", (i, j), -c, -r)
    elif market.participation == "ex_ante":
        for i in range(k):
            c, r = _lifetime_row(market, i, i)
            add("IR", (i,), -c, -r)
        # Commitment the federation can enforce: it holds period-1 pay back until the
        # period-2 work is delivered, so an ES stays only if the held pay plus its period-2
        # item covers its period-2 cost (R_i + R_ij - x_ij / theta_j >= 0): no history may
        # ask for a period-2 loss larger than what walking away would forfeit.
        for i in range(k):
            for j in range(k):
                c, r = _utility_row(n, period2_index(i, j, k), theta[j])
                r[period1_index(i)] += 1.0
                add("IR", (i, j), -c, -r)
    else:
        raise ValueError(f"participation: unknown rule {market.participation!r}")
    # Period-2 IC: type j after history i prefers item (i, j) to item (i, j').
    for i in range(k):
        for j in range(k):
            truthful_c, truthful_r = _utility_row(n, period2_index(i, j, k), theta[j])
            for other in range(k):
                if other != j:
                    c, r = _utility_row(n, period2_index(i, other, k), theta[j])
                    add("IC2", (i, j, other), c - truthful_c, r - truthful_r)
    # Intertemporal IC: period-1 type i prefers reporting i to any i' (then truthful).
    for i in range(k):
        truthful_c, truthful_r = _lifetime_row(market, i, i)
        for other in range(k):
            if other != i:
                c, r = _lifetime_row(market, i, other)
                add("IC_intertemporal", (i, other), c - truthful_c, r - truthful_r)
    system = ConstraintSystem(np.array(costs), np.array(rewards), tuple(labels))
    market._derived["constraints"] = system
    return system


def constraint_slack_scale(rewards: np.ndarray) -> np.ndarray | float:
    """Scale of a contract's utilities (1 + largest reward), for relative tolerances."""
    return 1.0 + np.max(np.abs(rewards), axis=-1)
