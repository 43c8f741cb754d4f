"""Property tests over random markets (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings

from fed_agent.contracts import (
    audit,
    cloud_utility,
    cloud_utility_best_response,
    complete_information,
    es_choice,
    es_utility,
    optimal_contract,
    period2_choice,
    static_contract,
    uniform_contract,
)
from fed_agent.contracts.escrow import defer_pay
from fed_agent.contracts.market import Market
from fed_agent.contracts.utility import es_period_utility
from tests.contracts.conftest import random_markets

TOL = 1e-7


@settings(max_examples=20, deadline=None)
@given(random_markets())
def test_references_pass_the_audit_and_are_ordered(market: Market) -> None:
    full = complete_information(market)
    optimum = optimal_contract(market)
    static = static_contract(market)
    uniform = uniform_contract(market)
    assert audit(full.contract, market, kinds=("IR", "bounds")) == []
    for solution in (optimum, static, uniform):
        assert audit(solution.contract, market) == [], solution.name
    scale = TOL * (1 + abs(full.cloud_utility))
    assert full.cloud_utility >= optimum.cloud_utility - scale
    assert optimum.cloud_utility >= static.cloud_utility - scale
    assert static.cloud_utility >= uniform.cloud_utility - scale


@settings(max_examples=10, deadline=None)
@given(random_markets())
def test_every_es_gets_its_intended_utility_in_the_optimum(market: Market) -> None:
    # offered with its period-1 pay deferred, as the guard offers it (held pay is worth delta)
    designed = optimal_contract(market).contract
    contract = defer_pay(designed, market)
    assert cloud_utility(contract, market) == pytest.approx(cloud_utility(designed, market))
    k = market.num_types
    tie = 1e-6
    for i in range(k):
        # an ES breaks ties by the higher f, never by its type, so where a constraint binds it
        # may pick another item; it always signs and never gets less than its own item gives
        report = es_choice(contract, market, i)
        assert report is not None
        assert es_utility(contract, market, i, report) >= es_utility(contract, market, i, i) - tie
        for j in range(k):
            pick = period2_choice(contract, market, i, j)
            theta = market.types[j]
            own = es_period_utility(contract.r2[i, j], contract.f2[i, j], theta, market)
            got = es_period_utility(contract.r2[i, pick], contract.f2[i, pick], theta, market)
            assert got == pytest.approx(own, abs=tie)
    # with every choice truthful, best responses earn the designed utility
    truthful = all(es_choice(contract, market, i) == i for i in range(k)) and all(
        period2_choice(contract, market, i, j) == j for i in range(k) for j in range(k)
    )
    if truthful:
        expected = cloud_utility(contract, market)
        assert abs(cloud_utility_best_response(contract, market) - expected) <= 1e-6 * (
            1 + abs(expected)
        )


@settings(max_examples=10, deadline=None)
@given(random_markets())
def test_batch_minimal_payments_match_the_lp(market: Market) -> None:
    import numpy as np

    from fed_agent.contracts import minimal_payments, score_f_menus

    rng = np.random.default_rng(int(market.types[0] * 1e6))
    k = market.num_types
    f1 = np.sort(rng.uniform(market.f_lower_ghz, market.f_max_ghz, (8, k)), axis=1)
    f2 = np.sort(rng.uniform(market.f_lower_ghz, market.f_max_ghz, (8, k, k)), axis=2)
    values, violations = score_f_menus(f1, f2, market)
    for b in range(8):
        reference = minimal_payments(f1[b], f2[b], market)
        assert (violations[b] == 0) == (reference is not None)
        if reference is not None:
            expected = cloud_utility(reference, market)
            assert abs(values[b] - expected) <= 1e-6 * (1 + abs(expected))
