"""The minimal payment rule: LP, closed form, batch path."""

from __future__ import annotations

import numpy as np
import pytest

from fed_agent.contracts import (
    PARTICIPATION_RULES,
    DynamicContract,
    Market,
    MarketParams,
    audit,
    cloud_utility,
    energy_cost,
    minimal_payments,
    minimal_payments_batch,
    named_market,
    optimal_contract,
    score_f_menus,
)


def test_one_period_rewards_by_hand() -> None:
    # delta = 0, K = 2: R_1 = c(f_1)/theta_1, R_2 = c(f_2)/theta_2 + c(f_1)(1/theta_1 - 1/theta_2)
    market = Market.from_params(
        MarketParams(
            num_types=2, types=[0.5, 2.0], transition=[[1.0, 0.0], [0.0, 1.0]], discount=0.0
        )
    )
    f1 = np.array([1.5, 3.0])
    f2 = np.array([[1.0, 2.0], [1.0, 2.0]])
    contract = minimal_payments(f1, f2, market)
    assert contract is not None
    c = 0.2 * 20 * f1**2  # 9 and 36
    np.testing.assert_allclose(
        contract.r1, [c[0] / 0.5, c[1] / 2.0 + c[0] * (2.0 - 0.5)], rtol=1e-8
    )
    np.testing.assert_allclose(contract.r1, [18.0, 31.5], rtol=1e-8)


def test_period2_rents_chain_up_from_the_lowest_type() -> None:
    market = named_market("persistent")
    f1 = np.array([1.0, 2.0, 3.0])
    f2 = np.tile([1.5, 2.0, 2.5], (3, 1))
    contract = minimal_payments(f1, f2, market)
    assert contract is not None
    c2 = energy_cost(f2[0], market)
    inv = 1 / market.types
    expected = [c2[0] * inv[0], c2[1] * inv[1] + c2[0] * (inv[0] - inv[1])]
    expected.append(c2[2] * inv[2] + (expected[1] - c2[1] * inv[1]) + c2[1] * (inv[1] - inv[2]))
    np.testing.assert_allclose(contract.r2[0], expected, rtol=1e-7)


def test_decreasing_period2_menu_is_not_implementable() -> None:
    market = named_market("persistent")
    f2 = np.tile([3.0, 2.0, 2.5], (3, 1))
    assert minimal_payments(np.array([1.0, 2.0, 3.0]), f2, market) is None
    _, _, feasible = minimal_payments_batch(np.array([[1.0, 2.0, 3.0]]), f2[None], market)
    assert not feasible[0]


def test_out_of_bounds_menu_is_refused() -> None:
    market = named_market("persistent")
    assert minimal_payments(np.array([0.5, 2.0, 3.0]), np.full((3, 3), 2.0), market) is None


def _random_sorted_menus(market: Market, rng: np.random.Generator, batch: int):
    k = market.num_types
    f1 = np.sort(rng.uniform(market.f_lower_ghz, market.f_max_ghz, (batch, k)), axis=1)
    f2 = np.sort(rng.uniform(market.f_lower_ghz, market.f_max_ghz, (batch, k, k)), axis=2)
    return f1, f2


@pytest.mark.parametrize("name", ["default", "paper"])
@pytest.mark.parametrize("participation", PARTICIPATION_RULES)
def test_batch_agrees_with_the_lp_on_random_menus(name: str, participation: str) -> None:
    market = named_market(name, participation)
    f1, f2 = _random_sorted_menus(market, np.random.default_rng(7), 40)
    r1, r2, feasible = minimal_payments_batch(f1, f2, market)
    values, violations = score_f_menus(f1, f2, market)
    fast_values, fast_violations = score_f_menus(f1, f2, market, exact=False)
    for b in range(len(f1)):
        reference = minimal_payments(f1[b], f2[b], market)
        assert feasible[b] == (reference is not None)
        if reference is None:
            assert violations[b] > 0 and np.isnan(r1[b]).all()
            continue
        contract = DynamicContract(f1[b], r1[b], f2[b], r2[b])
        assert audit(contract, market) == []
        assert values[b] == pytest.approx(cloud_utility(reference, market), abs=1e-6)
        assert violations[b] == 0
        # the closed form alone is never better than the LP, and equal when certified
        if fast_violations[b] == 0:
            assert fast_values[b] <= values[b] + 1e-6


def test_batch_closed_form_is_exact_near_the_optimum() -> None:
    # Optimal menus are regular (only downward constraints bind): the vectorised closed form
    # must reproduce the LP rewards there without any fallback.
    for participation in PARTICIPATION_RULES:
        market = named_market("persistent_paper", participation)
        optimum = optimal_contract(market).contract
        rng = np.random.default_rng(0)
        f1 = np.clip(optimum.f1 + rng.normal(0, 0.01, (64, 5)), 1.0, 5.0)
        f1.sort(axis=1)
        f2 = np.clip(optimum.f2 + rng.normal(0, 0.01, (64, 5, 5)), 1.0, 5.0)
        f2.sort(axis=2)
        fast, fast_violations = score_f_menus(f1, f2, market, exact=False)
        exact, _ = score_f_menus(f1, f2, market, exact=True)
        assert np.all(fast_violations == 0)
        np.testing.assert_allclose(fast, exact, atol=1e-6)
        value = score_f_menus(optimum.f1[None], optimum.f2[None], market)[0][0]
        assert value == pytest.approx(optimal_contract(market).cloud_utility, abs=1e-5)


def test_batch_shapes_are_checked() -> None:
    market = named_market("persistent")
    with pytest.raises(ValueError, match="f1/f2"):
        score_f_menus(np.ones((4, 2)), np.ones((4, 3, 3)), market)


def test_infeasible_menus_are_scored_with_their_violation_count() -> None:
    market = named_market("persistent")
    f1 = np.array([[3.0, 2.0, 1.0]])  # decreasing: higher types mimic the lowest
    f2 = np.tile([3.0, 2.0, 1.0], (1, 3, 1))
    values, violations = score_f_menus(f1, f2, market)
    assert violations[0] > 0 and np.isfinite(values[0])
