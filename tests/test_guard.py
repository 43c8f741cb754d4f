"""The guard never lets a policy make the cloud lose money on an ES."""

from __future__ import annotations

import numpy as np
import pytest

from fed_agent.contracts import (
    DynamicContract,
    MarketBatch,
    MarketRanges,
    audit,
    cloud_utility,
    cloud_utility_batch,
    named_market,
    optimal_contract,
    sample_market,
    solve_reference,
)
from fed_agent.contracts.pricing import reference_menus
from fed_agent.incentives.guard import (
    DESIGNED,
    EXACT,
    FALLBACK,
    NO_OFFER,
    guard_offers,
)


def markets(count: int, participation: str = "per_period", seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    ranges = MarketRanges(participation=participation)
    return [sample_market(rng, ranges, 3) for _ in range(count)]


def loss_making(market) -> DynamicContract:
    """Top effort for everyone, paid five times the least willing type's cost."""
    k, f = market.num_types, market.f_max_ghz
    reward = 5 * market.kappa * market.workload_gcycles * f * f / market.types[0]
    return DynamicContract.from_flat(np.full(k * (k + 1), f), np.full(k * (k + 1), reward), k)


def unimplementable(market) -> DynamicContract:
    """Period-2 menus that fall with the type, paid nothing: breaks IR and IC."""
    k = market.num_types
    f2 = np.tile(np.linspace(market.f_max_ghz, market.f_lower_ghz, k), (k, 1))
    return DynamicContract(np.full(k, market.f_lower_ghz), np.zeros(k), f2, np.zeros((k, k)))


@pytest.mark.parametrize("participation", ["per_period", "ex_ante"])
@pytest.mark.parametrize("priced", [True, False])
@pytest.mark.parametrize("bad", [loss_making, unimplementable])
def test_a_bad_policy_never_makes_the_cloud_lose_money(participation, priced, bad) -> None:
    given = markets(30, participation, seed=1)
    offers = guard_offers(given, [bad(m) for m in given], priced=priced)
    for market, contract, source, utility in zip(
        given, offers.contracts, offers.sources, offers.cloud_utility, strict=True
    ):
        if source == NO_OFFER:
            assert contract is None and utility == 0.0
            continue
        assert audit(contract, market) == []
        assert cloud_utility(contract, market) == pytest.approx(utility, rel=1e-9, abs=1e-9)
        assert utility >= 0.0
    assert FALLBACK in offers.sources


def test_an_exact_optimum_is_kept_and_scored_as_such() -> None:
    given = markets(10, seed=2)
    optima = [optimal_contract(m) for m in given]
    offers = guard_offers(given, [s.contract for s in optima], priced=True)
    positive = [s.cloud_utility > 0 for s in optima]
    assert [s == DESIGNED for s in offers.sources] == positive
    for solution, utility, keep in zip(optima, offers.cloud_utility, positive, strict=True):
        if keep:
            assert utility == pytest.approx(solution.cloud_utility, rel=1e-9)


def test_repricing_lowers_overpaid_rewards_to_the_least_cost() -> None:
    market = named_market("default")
    optimum = optimal_contract(market).contract
    overpaid = DynamicContract(optimum.f1, optimum.r1 + 3.0, optimum.f2, optimum.r2 + 3.0)
    offers = guard_offers([market], [overpaid], priced=False)
    assert offers.sources == [DESIGNED]
    assert offers.cloud_utility[0] == pytest.approx(
        optimal_contract(market).cloud_utility, rel=1e-6
    )


def test_no_offer_where_even_the_optimum_loses_money() -> None:
    # cheap work value, expensive energy: every contract that all types must take loses
    market = named_market("default").replace(omega=3.0, kappa=2.0)
    assert optimal_contract(market).cloud_utility < 0
    offers = guard_offers([market], [optimal_contract(market).contract], priced=True)
    assert offers.sources == [NO_OFFER] and offers.contracts == [None]


@pytest.mark.parametrize("participation", ["per_period", "ex_ante"])
def test_reference_is_the_exact_uniform_contract_per_period_and_feasible_ex_ante(
    participation: str,
) -> None:
    given = markets(12, participation, seed=3)
    batch = MarketBatch.from_markets(given)
    f1, r1, f2, r2 = reference_menus(batch)
    for row, market in enumerate(given):
        contract = DynamicContract(f1[row], r1[row], f2[row], r2[row])
        assert audit(contract, market) == []
        exact = solve_reference("uniform", market).cloud_utility
        utility = cloud_utility(contract, market)
        if participation == "per_period":
            assert utility == pytest.approx(exact, rel=1e-6, abs=1e-6)
        else:
            assert utility <= exact + 1e-6 * (1 + abs(exact))


def scarce_market():
    """The default market with a least willing type of 0.08 and omega 16: the pooling
    reference must pay every type the cost of theta = 0.08 and loses money, screening pays."""
    return named_market("default").replace(types=np.linspace(0.08, 2.0, 3), omega=16.0)


def test_an_exact_solve_serves_a_market_where_proposal_and_reference_lose_money() -> None:
    market = scarce_market()
    batch = MarketBatch.from_markets([market])
    assert cloud_utility_batch(*reference_menus(batch), batch)[0] < -5
    optimum = optimal_contract(market)
    assert optimum.cloud_utility > 1.0
    offers = guard_offers([market], [loss_making(market)], priced=True)
    assert offers.sources == [EXACT] and offers.exact_solves == 1
    assert offers.cloud_utility[0] == pytest.approx(optimum.cloud_utility, rel=1e-9)
    assert audit(offers.contracts[0], market) == []
    assert cloud_utility(offers.contracts[0], market) == pytest.approx(optimum.cloud_utility)


def test_only_an_untrusted_proposal_that_loses_to_the_reference_is_checked_exactly() -> None:
    market = named_market("default")
    proposal = unimplementable(market)
    trusted = guard_offers([market], [proposal], priced=True)
    assert trusted.sources == [FALLBACK] and trusted.exact_solves == 0
    doubted = guard_offers([market], [proposal], priced=True, trusted=np.array([False]))
    assert doubted.sources == [EXACT] and doubted.exact_solves == 1
    assert doubted.cloud_utility[0] == pytest.approx(85.61148, abs=1e-4)
    # an untrusted proposal that beats the reference and half the complete-information value
    # (91.16) is kept without a solve
    good = guard_offers(
        [market], [optimal_contract(market).contract], priced=True, trusted=np.array([False])
    )
    assert good.sources == [DESIGNED] and good.exact_solves == 0


@pytest.mark.parametrize("participation", ["per_period", "ex_ante"])
def test_under_renegotiation_proof_the_guard_offers_that_contract(participation) -> None:
    from fed_agent.contracts import renegotiation_proof_contract
    from fed_agent.contracts.escrow import defer_pay
    from fed_agent.incentives.guard import renegotiation_proof_offers

    given = [named_market("default", participation), named_market("persistent", participation)]
    offers = renegotiation_proof_offers(given)
    assert offers.sources == [EXACT, EXACT] and offers.exact_solves == 2
    for market, contract, utility in zip(
        given, offers.contracts, offers.cloud_utility, strict=True
    ):
        proof = renegotiation_proof_contract(market)
        assert utility == pytest.approx(proof.cloud_utility, rel=1e-9)
        expected = defer_pay(proof.contract, market)  # deferred under ex ante, as every offer
        for name in ("f1", "r1", "f2", "r2"):
            np.testing.assert_allclose(getattr(contract, name), getattr(expected, name))
        assert cloud_utility(contract, market) == pytest.approx(utility, rel=1e-9)
        # the full-commitment optimum is worth more, but it is not renegotiation-proof
        assert utility < optimal_contract(market).cloud_utility


def test_a_market_without_a_renegotiation_proof_contract_gets_no_offer(monkeypatch, caplog):
    from fed_agent.contracts.solvers.renegotiation_proof import NoRenegotiationProofContract
    from fed_agent.incentives import guard

    def refuse(market, exclusion=False):
        raise NoRenegotiationProofContract("no renegotiation-proof contract: none here")

    monkeypatch.setattr(guard, "renegotiation_proof_contract", refuse)
    market = named_market("default")
    offers = guard.renegotiation_proof_offers([market])
    assert offers.sources == [NO_OFFER] and offers.contracts == [None]
    assert offers.cloud_utility[0] == 0.0
    assert "no offer on market 0 of the batch: no renegotiation-proof contract" in caplog.text
