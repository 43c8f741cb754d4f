"""Tolerances are amounts of money per market: huge rewards cannot hide a violation."""

from __future__ import annotations

import numpy as np
import pytest

from fed_agent.contracts import (
    ContractItem,
    DynamicContract,
    MarketBatch,
    audit,
    best_response,
    count_violations,
    energy_cost,
    es_choice,
    named_market,
    optimal_contract,
)
from fed_agent.contracts.constraints import market_value_scale
from fed_agent.incentives.guard import DESIGNED, guard_offers


def huge_period_two(market) -> DynamicContract:
    """The delta = 0 optimum with period-2 rewards of 1e9 (weight 0 in the cloud's utility)
    and nothing paid for type 0's period-1 item (its IR fails by c(f_0) / theta_0)."""
    optimum = optimal_contract(market).contract
    r1 = optimum.r1.copy()
    r1[0] = 0.0
    return DynamicContract(optimum.f1, r1, optimum.f2, np.full_like(optimum.r2, 1e9))


@pytest.mark.parametrize("participation", ["ex_ante", "per_period"])
def test_a_huge_period_two_reward_does_not_hide_an_ir_violation(participation) -> None:
    market = named_market("default").replace(discount=0.0, participation=participation)
    contract = huge_period_two(market)
    shortfall = float(energy_cost(contract.f1[0], market)) / market.types[0]
    assert shortfall == pytest.approx(20.0, rel=1e-6)  # f_0 = f_lo = 1 GHz, theta_0 = 0.2
    found = audit(contract, market)
    assert [(v.kind, v.indices) for v in found] == [("IR", (0,))]
    assert found[0].size == pytest.approx(shortfall, rel=1e-9)
    batch = MarketBatch.from_markets([market])
    stacked = [getattr(contract, n)[None] for n in ("f1", "r1", "f2", "r2")]
    assert count_violations(*stacked, batch)[0] == 1
    offers = guard_offers([market], [contract], priced=True)
    assert offers.sources != [DESIGNED]
    # the ES of type 0 does not sign for a certain loss of 20, the others still tell the truth
    assert es_choice(contract, market, 0) is None
    if participation == "ex_ante":
        assert [es_choice(contract, market, i) for i in (1, 2)] == [1, 2]


def test_tolerance_is_a_fixed_amount_of_money_per_market() -> None:
    market = named_market("default")
    scale = market_value_scale(market)
    assert scale == pytest.approx(1.5 * 30 * np.log(26.0))
    optimum = optimal_contract(market).contract
    cost = float(energy_cost(optimum.f1[0], market)) / market.types[0]
    # a menu whose only item loses 1e-3 is declined, however large a reward elsewhere is
    menu = [ContractItem(float(optimum.f1[0]), cost - 1e-3)]
    assert best_response(menu, float(market.types[0]), market) is None
    rich = [*menu, ContractItem(float(market.f_max_ghz), 1e9)]
    assert best_response(rich, float(market.types[0]), market) == 1
    # 1e-3 less on every period-2 item breaks type 0's epoch IR by 0.5 x 1e-3, which the
    # audit reports even next to a reward of 1e9 on an item of the period-1 menu
    short = DynamicContract(optimum.f1, optimum.r1, optimum.f2, optimum.r2 - 1e-3)
    rich_short = DynamicContract(
        optimum.f1, optimum.r1 + np.array([0, 0, 1e9]), optimum.f2, optimum.r2 - 1e-3
    )
    for contract in (short, rich_short):
        epoch_ir = [v for v in audit(contract, market) if v.kind == "IR" and v.indices == (0,)]
        assert len(epoch_ir) == 1 and epoch_ir[0].size == pytest.approx(5e-4, rel=1e-6)
