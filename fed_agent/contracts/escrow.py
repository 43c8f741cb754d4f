"""Held pay under ex ante participation, valued as the model values period-2 money.

Under ``ex_ante`` the federation enforces the ES's commitment to period 2 by holding its
period-1 pay until the period-2 work is delivered (docs/contract-model.md, "Modelling
choices" 5). The model values a unit of period-2 money at ``delta`` for the cloud and the ES
alike, so a period-1 reward R_i that is held and released unchanged in period 2 is worth only
delta R_i to the ES: at the default market's optimum type 2's epoch rent would fall from
0.409 to 0.409 - 0.5 x 14.92 = -7.05 and it would not sign.

The consistent contract defers all pay: the period-1 reward becomes 0 and every item of the
period-2 menu after report i pays R_i / delta more. For every ES and every report this is
worth exactly what the designed contract is worth in the model (delta sum_j P_ij R_i / delta
= R_i), to the cloud as well, so every IC, the epoch IR and the cloud's utility are
unchanged; the commitment row R_i + R_ij - c(f_ij)/theta_j >= 0 becomes
R_i / delta + R_ij - c(f_ij)/theta_j >= 0, which it implies (delta <= 1). Nothing is held
any more: walking away in period 2 forfeits the deferred pay, which is part of the period-2
item. With delta = 0 period 2 is worth nothing to anyone, no pay can be deferred and none is
held.
"""

from __future__ import annotations

import numpy as np

from fed_agent.contracts.contract import DynamicContract
from fed_agent.contracts.market import Market
from fed_agent.contracts.utility import energy_cost, es_period_utility


def holds_pay(market: Market) -> bool:
    """Whether the federation holds period-1 pay until period 2 (ex ante, delta > 0)."""
    return market.participation == "ex_ante" and market.discount > 0


def deferred_menus(
    r1: np.ndarray, r2: np.ndarray, discount: np.ndarray, defer: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Rewards of B contracts with all period-1 pay deferred where ``defer`` (B,) is true.

    ``r1`` (B, K), ``r2`` (B, K, K), ``discount`` (B,). Rows with ``defer`` false (or delta
    0) are returned unchanged.
    """
    defer = np.asarray(defer, bool) & (np.asarray(discount) > 0)
    safe = np.where(defer, discount, 1.0)
    shifted = r2 + (r1 / safe[:, None])[:, :, None]
    return (
        np.where(defer[:, None], 0.0, r1),
        np.where(defer[:, None, None], shifted, r2),
    )


def defer_pay(contract: DynamicContract, market: Market) -> DynamicContract:
    """The equivalent contract that pays nothing in period 1 (see the module docstring).

    Unchanged unless the federation holds pay (:func:`holds_pay`).
    """
    if not holds_pay(market):
        return contract
    r1, r2 = deferred_menus(
        contract.r1[None], contract.r2[None], np.array([market.discount]), np.array([True])
    )
    return DynamicContract(contract.f1, r1[0], contract.f2, r2[0])


def held_epoch_rents(contract: DynamicContract, market: Market) -> np.ndarray:
    """Each truthful period-1 type's epoch utility when its period-1 reward is held and paid
    unchanged in period 2 (worth delta per unit), shape (K,).

    Equal to ``es_rents`` for a contract whose period-1 rewards are 0 (:func:`defer_pay`).
    """
    theta = market.types
    out = np.empty(market.num_types)
    held = market.discount if holds_pay(market) else 1.0
    for i in range(market.num_types):
        period1 = held * contract.r1[i] - float(energy_cost(contract.f1[i], market)) / theta[i]
        period2 = es_period_utility(contract.r2[i], contract.f2[i], theta, market)
        out[i] = period1 + market.discount * market.transition[i] @ period2
    return out
