"""An ES's best response: which item it picks (or whether it declines), period by period, and
the cloud's utility when every ES best-responds."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fed_agent.contracts.audit import DEFAULT_TOLERANCE
from fed_agent.contracts.constraints import market_value_scale
from fed_agent.contracts.contract import ContractItem, DynamicContract
from fed_agent.contracts.escrow import holds_pay
from fed_agent.contracts.market import Market
from fed_agent.contracts.utility import energy_cost, es_period_utility, value_of_work

TIE_TOLERANCE = 10 * DEFAULT_TOLERANCE
"""Utilities closer than this fraction of the market's money scale
(``fed_agent.contracts.constraints.value_scale``) count as a tie: binding IC constraints make
a type exactly indifferent between its item and the one below. It is an amount of money per
market, never relative to the rewards (an ES accepts no loss larger than about 1.5e-6 on the
default market), and ten times the audit's tolerance, so a contract the audit passes is
followed truthfully."""


def _pick(values: np.ndarray, f: np.ndarray, allowed: np.ndarray, tol: float) -> int | None:
    """Index of the best allowed value; ties go to the highest f, then to the lowest index.

    The rule never looks at the ES's type, so a tie reveals nothing: under a flat fee (K
    identical items) every type names item 0. Where a binding downward IC leaves a type
    indifferent between its item and the one below, its own item has the higher f, so an
    optimal menu is still followed truthfully.
    """
    if not np.any(allowed):
        return None
    best = np.max(values[allowed])
    tied = np.flatnonzero(allowed & (values >= best - tol))
    return int(tied[np.argmax(f[tied])])  # argmax: the first (lowest index) of the highest f


def best_response(
    menu_items: Sequence[ContractItem],
    theta: float,
    market: Market,
    tol: float = TIE_TOLERANCE,
) -> int | None:
    """The item an ES of willingness ``theta`` picks from a one-period menu, or None.

    The ES maximises R - c(f)/theta and declines when every item gives it negative utility.
    Ties (within ``tol`` times the market's money scale) go to the higher f, then to the
    lower index (:func:`_pick`: a rule that does not depend on the type).
    """
    if len(menu_items) == 0:
        return None
    f = np.array([item.f_ghz for item in menu_items])
    rewards = np.array([item.reward for item in menu_items])
    values = es_period_utility(rewards, f, theta, market)
    tie = tol * market_value_scale(market)
    return _pick(values, f, values >= -tie, tie)


def _continuation(contract: DynamicContract, market: Market, report: int, tol: float) -> np.ndarray:
    """Period-2 utility of each true period-2 type j after period-1 report ``report``."""
    out = np.zeros(market.num_types)
    for j, theta in enumerate(market.types):
        pick = period2_choice(contract, market, report, j, tol)
        if pick is not None:
            out[j] = float(
                es_period_utility(
                    contract.r2[report, pick], contract.f2[report, pick], theta, market
                )
            )
    return out


def period2_choice(
    contract: DynamicContract,
    market: Market,
    report: int,
    period2_type: int,
    tol: float = TIE_TOLERANCE,
    forfeit: float | None = None,
) -> int | None:
    """Item the ES picks in period 2 after period-1 ``report`` given its period-2 type.

    Under ``ex_ante`` participation the ES is committed: with ``forfeit`` None (the contract
    model) it always picks an item; with ``forfeit`` the pay it would lose by walking away
    (the period-1 pay the federation holds back), it picks its best item if that loses no
    more than ``forfeit``, and otherwise walks away (None).
    """
    theta = float(market.types[period2_type])
    if market.participation == "ex_ante":
        values = es_period_utility(contract.r2[report], contract.f2[report], theta, market)
        tie = tol * market_value_scale(market)
        floor = -np.inf if forfeit is None else -float(forfeit) - tie
        return _pick(values, contract.f2[report], values >= floor, tie)
    return best_response(contract.period2_menu(report), theta, market, tol)


def es_choice(
    contract: DynamicContract,
    market: Market,
    period1_type: int,
    tol: float = TIE_TOLERANCE,
    held: bool | None = None,
) -> int | None:
    """The period-1 report an ES of true period-1 type ``period1_type`` makes, or None.

    The ES weighs each report by its period-1 utility plus delta times its expected period-2
    utility (it knows P but not yet its period-2 type; in period 2 it best-responds).
    ``per_period``: an item with negative period-1 utility is never taken (the ES may leave
    in any period), and declining period 1 means sitting out the epoch. ``ex_ante``: the ES
    takes the report of highest epoch utility if that is non-negative, and is then committed
    for period 2. Ties go to the higher f, then the lower index (never to the type).

    ``held`` (default: :func:`fed_agent.contracts.escrow.holds_pay`, i.e. ex ante with
    delta > 0): the period-1 reward is held and paid unchanged in period 2, so the ES values
    it at delta per unit, as the model values period-2 money. A contract offered in the form
    :func:`fed_agent.contracts.escrow.defer_pay` pays nothing in period 1 and is valued as
    the model values it either way.
    """
    theta = float(market.types[period1_type])
    committed = market.participation == "ex_ante"
    held = holds_pay(market) if held is None else held
    pay_weight = market.discount if held else 1.0
    period1 = pay_weight * contract.r1 - energy_cost(contract.f1, market) / theta
    continuation = np.array(
        [
            market.transition[period1_type] @ _continuation(contract, market, h, tol)
            for h in range(market.num_types)
        ]
    )
    total = period1 + market.discount * continuation
    tie = tol * market_value_scale(market)
    allowed = total >= -tie if committed else period1 >= -tie
    return _pick(total, contract.f1, allowed, tie)


def cloud_utility_best_response(contract: DynamicContract, market: Market) -> float:
    """Expected cloud utility per ES when every ES best-responds (``es_choice`` and
    ``period2_choice``): a menu that breaks IC or IR is scored by what ESs really do.

    An ES that declines period 1 sits out the epoch (value 0); one that declines in period 2
    contributes nothing in period 2. Period-1 pay held until period 2
    (:func:`fed_agent.contracts.escrow.holds_pay`) costs the cloud delta per unit.
    """
    pay_weight = market.discount if holds_pay(market) else 1.0
    g1 = value_of_work(contract.f1, market)
    g2 = value_of_work(contract.f2, market)
    total = 0.0
    for i in range(market.num_types):
        if market.prior[i] == 0:
            continue
        report = es_choice(contract, market, i)
        if report is None:
            continue
        epoch = g1[report] - pay_weight * contract.r1[report]
        for j in range(market.num_types):
            if market.transition[i, j] == 0:
                continue
            pick = period2_choice(contract, market, report, j)
            if pick is not None:
                value = g2[report, pick] - contract.r2[report, pick]
                epoch += market.discount * market.transition[i, j] * value
        total += market.prior[i] * epoch
    return float(total)
