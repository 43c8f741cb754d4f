"""The least-rent closed forms of the minimal payment rule, row by row over markets.

For a menu of f, period 2's rents come from the local-binding structure (the lowest type's
participation floor and every local downward IC bind), and the intertemporal ICs are then
difference constraints in the period-1 (per period) or epoch (ex ante) rents, solved as
longest paths by a vectorised Bellman-Ford (docs/contract-model.md, "Minimal payments in
closed form"). Every row b is a menu for its own market, so ``fed_agent.contracts.payments``
(one market, many menus) and ``fed_agent.contracts.batch`` (many markets) share these
routines: ``per_period_closed_form`` and ``ex_ante_closed_form`` are the one home of each.
"""

from __future__ import annotations

import numpy as np


def _least_solution(lower: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least y with y >= lower and y_i >= y_h + edges[:, i, h] (a system of difference
    constraints, solved as longest paths by Bellman-Ford, vectorised over the batch).

    Returns y (NaN rows where a positive cycle makes the system infeasible) and y computed
    with the downward edges (h < i) only, which the optimality certificate compares with.
    """
    k = lower.shape[1]
    downward = lower.copy()
    for i in range(1, k):
        downward[:, i] = np.maximum(lower[:, i], np.max(downward[:, :i] + edges[:, i, :i], axis=1))
    y = downward.copy()
    for _ in range(k):
        updated = np.maximum(lower, np.max(y[:, None, :] + edges, axis=2))
        if np.array_equal(updated, y):
            break
        y = updated
    cycle = np.any(np.max(y[:, None, :] + edges, axis=2) > y + 1e-9 * (1 + np.abs(y)), axis=1)
    y[cycle] = np.nan
    return y, downward


def _rent_terms(
    x1: np.ndarray,
    x2: np.ndarray,
    inv_theta: np.ndarray,
    transition: np.ndarray,
    discount: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Period-2 rents of the least-rent structure and the terms of the period-1 ICs.

    Every row b is a menu for its own market: costs x1 (B, K) and x2 (B, K, K), inverse
    types 1/theta (B, K), transition matrices (B, K, K), discounts (B,). Period 2: the
    lowest type's participation floor and every local downward IC bind (rents m).

    Returns
    -------
    rent2 : np.ndarray
        (B, K, K) period-2 rents m.
    gain : np.ndarray
        (B, K, K): gain[b, i, h] = c(f_h) (1/theta_h - 1/theta_i) + delta sum_j P_ij m_hj,
        what true type i gets besides item h's period-1 rent by reporting h (-inf for h = i).
    own : np.ndarray
        (B, K): own[b, i] = delta sum_j P_ij m_ij, the continuation rent of truth-telling.
    """
    k = inv_theta.shape[1]
    gap = inv_theta[:, :-1] - inv_theta[:, 1:]
    rent2 = np.zeros_like(x2)
    rent2[:, :, 1:] = np.cumsum(x2[:, :, :-1] * gap[:, None, :], axis=2)
    # continuation[b, i, h] = delta sum_j P_ij rent2[b, h, j]: true type i, period-1 report h
    continuation = discount[:, None, None] * np.einsum("bij,bhj->bih", transition, rent2)
    own = continuation[:, np.arange(k), np.arange(k)]
    # mimic[b, i, h] = period-1 cost saving of type i taking item h: c(f_h) (1/theta_h - 1/theta_i)
    mimic = x1[:, None, :] * (inv_theta[:, None, :] - inv_theta[:, :, None])
    not_self = np.where(np.eye(k, dtype=bool), -np.inf, 0.0)
    return rent2, mimic + continuation + not_self, own


def per_period_closed_form(
    x1: np.ndarray,
    x2: np.ndarray,
    inv_theta: np.ndarray,
    transition: np.ndarray,
    discount: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-rent rewards of the per-period rule, every row a menu for its own market.

    The one home of the per-period closed form: ``payments._closed_form_rewards`` (one
    market, many menus) and ``fed_agent.contracts.batch.least_rent_rewards`` (many markets)
    both call it.
    Given the period-2 rents of :func:`_rent_terms`, the intertemporal IC constraints are
    difference constraints in the period-1 rents U1_i >= 0, whose least solution is a
    longest-path problem.

    Parameters
    ----------
    x1, x2 : np.ndarray
        Energy costs c(f) of the menus, (B, K) and (B, K, K).
    inv_theta : np.ndarray
        1 / theta per row, (B, K).
    transition : np.ndarray
        (B, K, K).
    discount : np.ndarray
        (B,).

    Returns
    -------
    tuple[np.ndarray, np.ndarray, np.ndarray]
        r1 (B, K) (NaN rows where a positive cycle leaves no least rents), r2 (B, K, K) and
        a (B,) mask where only downward constraints bind, which (with a monotone transition
        matrix) certifies that the rewards are least-cost.
    """
    rent2, gain, own = _rent_terms(x1, x2, inv_theta, transition, discount)
    rent1, downward = _least_solution(np.zeros_like(x1), gain - own[:, :, None])
    only_downward = np.all(np.abs(rent1 - downward) <= 1e-9 * (1 + np.abs(downward)), axis=1)
    return rent1 + x1 * inv_theta, rent2 + x2 * inv_theta[:, None, :], only_downward


def ex_ante_closed_form(
    x1: np.ndarray,
    x2: np.ndarray,
    inv_theta: np.ndarray,
    transition: np.ndarray,
    discount: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-rent rewards of the ex ante rule, every row a menu for its own market.

    Given the period-2 rents of :func:`_rent_terms`, the intertemporal IC constraints are
    difference constraints in the epoch rents W_i >= 0 (the level of a period-2 menu cancels
    in every IC), whose least solution is again a longest-path problem. Period 2 keeps its
    per-period rents; the rest of the epoch rent goes into period 1 until R_i = 0, then into
    the level of the period-2 menu. Arguments and returns as :func:`per_period_closed_form`.
    """
    rows, k = x1.shape
    delta = discount[:, None]
    rent2, gain, own = _rent_terms(x1, x2, inv_theta, transition, discount)
    floor = -x1 * inv_theta + own - delta * x2[:, :, 0] * inv_theta[:, :1]
    total, downward = _least_solution(np.maximum(floor, 0.0), gain - own[:, None, :])
    rent1 = np.maximum(total - own, -x1 * inv_theta)
    level = np.where(delta > 0, (total - rent1 - own) / np.where(delta > 0, delta, 1.0), 0.0)
    only_downward = np.all(np.abs(total - downward) <= 1e-9 * (1 + np.abs(total)), axis=1)
    r1 = rent1 + x1 * inv_theta
    r2 = rent2 + level[:, :, None] + x2 * inv_theta[:, None, :]
    return r1, r2, only_downward


CLOSED_FORMS = {"per_period": per_period_closed_form, "ex_ante": ex_ante_closed_form}
"""The least-rent closed form of each participation rule (row-wise over markets)."""
