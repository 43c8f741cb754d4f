"""Exact least-cost rewards for menus of many markets: the closed form where it is certified,
one stacked minimal payment LP for the rest.

This is the one place that turns designed menus of f into implementable contracts at the
scale of a federated round (a thousand markets): the learned designer's proposals and the
strategy's guard both price through :func:`price_menus`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fed_agent.contracts.batch import MarketBatch, ScoredMenus, cloud_utility_batch, score_menus
from fed_agent.contracts.market import Market
from fed_agent.contracts.payments import minimal_payments_stacked


@dataclass(frozen=True)
class PricedMenus:
    """Menus of B markets with their least-cost rewards.

    Attributes
    ----------
    f1, r1 : np.ndarray
        (B, K) period-1 resources and rewards (rewards NaN where not implementable).
    f2, r2 : np.ndarray
        (B, K, K) period-2 resources and rewards.
    implementable : np.ndarray
        (B,) some rewards satisfy every constraint for this menu of f.
    certified : np.ndarray
        (B,) the rewards come from the certified closed form (else from the LP).
    utility : np.ndarray
        (B,) expected cloud utility per ES with these rewards (-inf where not implementable).
    """

    f1: np.ndarray
    r1: np.ndarray
    f2: np.ndarray
    r2: np.ndarray
    implementable: np.ndarray
    certified: np.ndarray
    utility: np.ndarray


def price_menus(
    f1: np.ndarray,
    f2: np.ndarray,
    markets: Sequence[Market],
    batch: MarketBatch | None = None,
    scored: ScoredMenus | None = None,
) -> PricedMenus:
    """Least-cost rewards of menus (f1 (B, K), f2 (B, K, K)), one per market.

    Rows the closed form certifies (a monotone transition matrix, only downward constraints
    binding, feasible) keep its rewards; every other row is priced by the minimal payment LP,
    all of them in one stacked solve (:func:`minimal_payments_stacked`). ``batch`` and the
    closed-form ``scored`` menus are recomputed unless given.
    """
    batch = batch if batch is not None else MarketBatch.from_markets(markets)
    k = batch.num_types
    scored = scored if scored is not None else score_menus(f1, f2, batch)
    r1, r2 = np.maximum(scored.r1, 0.0), np.maximum(scored.r2, 0.0)
    implementable = scored.certified.copy()
    rest = np.flatnonzero(~scored.certified)
    if rest.size:
        flat = np.concatenate([f1[rest], f2[rest].reshape(rest.size, k * k)], axis=1)
        known = scored.violations[rest] == 0
        rewards = minimal_payments_stacked(flat, [markets[r] for r in rest], known)
        r1[rest], r2[rest] = rewards[:, :k], rewards[:, k:].reshape(-1, k, k)
        implementable[rest] = np.all(np.isfinite(rewards), axis=1)
    utility = np.where(
        implementable,
        cloud_utility_batch(f1, np.nan_to_num(r1), f2, np.nan_to_num(r2), batch),
        -np.inf,
    )
    return PricedMenus(f1, r1, f2, r2, implementable, scored.certified.copy(), utility)


def reference_willingness(batch: MarketBatch) -> np.ndarray:
    """theta_ref of the pooling reference per market, (B,) (see :func:`reference_menus`)."""
    inv = 1.0 / batch.types
    delta = batch.discount[:, None]
    lifetime = (inv + delta * np.einsum("bij,bj->bi", batch.transition, inv)) / (1 + delta)
    return np.where(batch.ex_ante, 1.0 / lifetime.max(axis=1), batch.types[:, 0])


def reference_menus(batch: MarketBatch) -> tuple[np.ndarray, ...]:
    """The best pooling contract of each market in closed form: f1, r1 (B, K), f2, r2 (B, K, K).

    One item (f, R) for every type and period, R = c(f) / theta_ref and f efficient for
    theta_ref. Per period, theta_ref is the lowest type (the least willing must still take
    part); ex ante, the binding epoch IR is the period-1 type with the highest expected
    lifetime cost per unit of c(f), 1/theta_ref = max_i (1/theta_i + delta sum_j P_ij /
    theta_j) / (1 + delta), and 2 R >= c(f)/theta_1 keeps the commitment enforceable. It is
    always implementable (one item: IC holds trivially), and it is the exact uniform optimum
    per period: the cheap reference of the strategy's guard and the designer's fallback.
    """
    theta = reference_willingness(batch)
    f = batch.efficient_resource_for(theta[:, None])[:, 0]
    reward = batch.energy_cost(f) / theta
    k = batch.num_types
    ones1, ones2 = np.ones((batch.size, k)), np.ones((batch.size, k, k))
    return (
        f[:, None] * ones1,
        reward[:, None] * ones1,
        f[:, None, None] * ones2,
        reward[:, None, None] * ones2,
    )
