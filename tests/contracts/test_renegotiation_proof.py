"""The renegotiation-proof contract: the cloud would not replace its period-2 menus."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.optimize import linprog

from fed_agent.contracts import (
    Market,
    MarketParams,
    MarketRanges,
    audit,
    best_static_contract,
    cloud_utility_best_response,
    energy_cost,
    named_market,
    optimal_contract,
    renegotiation_proof_contract,
    sample_market,
    solve_reference,
    value_of_work,
)
from fed_agent.contracts.constraints import build_constraints, market_value_scale
from fed_agent.contracts.renegotiation import renegotiation_gain
from fed_agent.contracts.solvers.renegotiation_proof import (
    PAY_TOLERANCE,
    STRICT_MARGIN,
    period2_optimum,
)

# (market, rule): renegotiation-proof optimum, measured (docs/contract-model.md)
VALUES = {
    ("default", "ex_ante"): 79.6752,
    ("default", "per_period"): 71.1291,
    ("paper", "ex_ante"): 80.0819,
    ("paper", "per_period"): 71.3103,
}


@pytest.mark.parametrize(("name", "rule"), sorted(VALUES))
def test_renegotiating_it_gains_nothing_and_it_meets_every_constraint(name, rule) -> None:
    market = named_market(name, rule)
    proof = renegotiation_proof_contract(market)
    assert proof.cloud_utility == pytest.approx(VALUES[name, rule], abs=1e-3)
    assert proof.optimality_gap < 1e-9
    assert audit(proof.contract, market) == []
    result = renegotiation_gain(proof.contract, market)
    assert abs(result.gain) < 1e-8
    # the full-commitment optimum is worth more and its gain from renegotiating is large
    optimum = optimal_contract(market)
    assert optimum.cloud_utility > proof.cloud_utility + 1
    assert renegotiation_gain(optimum.contract, market).gain > 0.01
    # every history's period-2 menu is a one-period optimum for the belief P[i, .]
    contract = proof.contract
    for i in range(market.num_types):
        _, _, best = period2_optimum(market, market.transition[i])
        got = market.transition[i] @ (value_of_work(contract.f2[i], market) - contract.r2[i])
        # its expected pay may exceed the optimum's by the solver's room, PAY_TOLERANCE
        room = PAY_TOLERANCE * market_value_scale(market)
        assert best - room - 1e-9 <= got <= best + 1e-9
        assert np.all(contract.r2[i] - energy_cost(contract.f2[i], market) / market.types >= -1e-9)


def test_without_commitment_the_cloud_can_earn_less_than_a_static_pair() -> None:
    # per period on the default market conditioning on the report still pays (above the best
    # static pair); under ex ante the static pair charges the expected period-2 rent through
    # the held pay, which a menu the cloud would re-offer cannot, and it falls below
    per_period = named_market("default", "per_period")
    assert (
        best_static_contract(per_period).cloud_utility
        < renegotiation_proof_contract(per_period).cloud_utility
        < optimal_contract(per_period).cloud_utility
    )
    ex_ante = named_market("default", "ex_ante")
    assert (
        renegotiation_proof_contract(ex_ante).cloud_utility
        < best_static_contract(ex_ante).cloud_utility - 4
    )


def test_with_iid_types_it_is_the_best_static_pair() -> None:
    # the report says nothing about period 2: the belief after every report is the prior,
    # and the best report-independent period-2 menu is the one-period optimum for it
    market = named_market("uncorrelated")
    proof = renegotiation_proof_contract(market)
    # up to the strict margin of the intertemporal IC (STRICT_MARGIN of the money scale)
    margin = STRICT_MARGIN * market_value_scale(market)
    static = best_static_contract(market).cloud_utility
    assert static - 3 * margin <= proof.cloud_utility <= static
    assert proof.cloud_utility < optimal_contract(market).cloud_utility - 1


def test_it_is_a_reference_solver_and_solves_with_exclusion() -> None:
    market = named_market("default", "per_period")
    named = solve_reference("renegotiation_proof", market)
    assert named.cloud_utility == pytest.approx(VALUES["default", "per_period"], abs=1e-3)
    excluding = solve_reference("renegotiation_proof", market, exclusion=True)
    assert audit(excluding.contract, market) == []
    assert abs(renegotiation_gain(excluding.contract, market, exclusion=True).gain) < 1e-8
    assert excluding.cloud_utility == pytest.approx(74.9227, abs=1e-3)
    assert excluding.excluded_types == "2:0,0 2:1,0"
    assert excluding.cloud_utility <= optimal_contract(market, exclusion=True).cloud_utility
    # exits are not always worth it here: under ex ante the cloud would exclude type 0 after
    # reports 0 and 1 once it has seen them, and a period-2 menu that does so must be what it
    # signs, which costs more in period 1 than the exits save (a richer re-offer binds it more)
    ex_ante = named_market("default", "ex_ante")
    assert solve_reference("renegotiation_proof", ex_ante, exclusion=True).cloud_utility == (
        pytest.approx(75.8325, abs=1e-3)
    )


def _period1_lp(f1: np.ndarray, f2: np.ndarray, r2: np.ndarray, market: Market) -> float:
    """The cloud's best utility with period-1 f = ``f1`` and the period-2 menus fixed: an LP
    in the period-1 rewards over the model's rows, or -inf when none is feasible."""
    k = market.num_types
    system = build_constraints(market)
    x = energy_cost(np.concatenate([f1, f2.ravel()]), market)
    rhs = -system.a_cost @ x - system.a_reward[:, k:] @ r2.ravel()
    result = linprog(market.prior, A_ub=system.a_reward[:, :k], b_ub=rhs, bounds=[(0, None)] * k)
    if result.status != 0:
        return -np.inf
    period2 = market.transition * (value_of_work(f2, market) - r2)
    first = market.prior @ value_of_work(f1, market) - result.fun
    return float(first + market.discount * market.prior @ period2.sum(axis=1))


@pytest.mark.parametrize("rule", ["per_period", "ex_ante"])
def test_a_grid_over_period_one_never_beats_it(rule) -> None:
    # K = 2, every entry of P positive: each period-2 menu is the unique one-period optimum,
    # so what is left is the period-1 menu; a grid over f1 priced by an independent LP
    market = Market.from_params(MarketParams(num_types=2, participation=rule))
    f2 = np.empty((2, 2))
    r2 = np.empty((2, 2))
    for i in range(2):
        f2[i], r2[i], _ = period2_optimum(market, market.transition[i])
    proof = renegotiation_proof_contract(market).cloud_utility
    low, high = np.full(2, market.f_lower_ghz), np.full(2, market.f_max_ghz)
    for _ in range(3):  # a zooming grid: 21 x 21 points, then around the best one
        axes = [np.linspace(a, b, 21) for a, b in zip(low, high, strict=True)]
        best, at = max(
            (_period1_lp(np.array(f), f2, r2, market), f) for f in itertools.product(*axes)
        )
        step = (high - low) / 20
        low = np.maximum(np.array(at) - 2 * step, market.f_lower_ghz)
        high = np.minimum(np.array(at) + 2 * step, market.f_max_ghz)
        assert best <= proof + 1e-6
    assert best >= proof - 1e-4 * abs(proof)


def test_the_solve_command_reports_renegotiation_gains() -> None:
    from fed_agent.commands.contract import solve_table

    market = named_market("default")
    rows, blocks = solve_table(market, ["optimal", "renegotiation_proof"], 0, gains=True)
    assert rows[0]["renegotiation_gain"] == pytest.approx(0.0597, abs=5e-4)
    assert abs(rows[1]["renegotiation_gain"]) < 1e-8
    assert rows[1]["cloud_utility"] == pytest.approx(VALUES["default", "ex_ante"], abs=1e-3)
    assert rows[1]["violations"] == 0
    assert "renegotiation gain +5.96" in blocks[0]


@pytest.mark.parametrize("transition", ["neighbour", "dirichlet"])
@pytest.mark.parametrize("participation", ["per_period", "ex_ante"])
def test_on_random_markets_it_exists_and_lies_below_full_commitment(transition, participation):
    rng = np.random.default_rng(5)
    ranges = MarketRanges(transition=transition, participation=participation)
    for num_types in (2, 3, 4):
        market = sample_market(rng, ranges, num_types)
        proof = renegotiation_proof_contract(market)
        assert audit(proof.contract, market) == []
        assert abs(renegotiation_gain(proof.contract, market).gain) < 1e-8
        optimum = optimal_contract(market).cloud_utility
        assert proof.cloud_utility <= optimum + 1e-8 * (1 + abs(optimum))


@pytest.mark.parametrize("participation", ["per_period", "ex_ante"])
def test_items_of_weight_zero_are_chosen_with_period_one(participation) -> None:
    # on `persistent` type 2 is impossible after report 0 and type 0 after report 2; those
    # items are free ex post and chosen for the intertemporal IC. The least rents are what
    # deters a misreport, which is what the one-period solver's tie-break picks too
    market = named_market("persistent", participation)
    contract = renegotiation_proof_contract(market).contract
    for i in range(market.num_types):
        f, _, _ = period2_optimum(market, market.transition[i])
        np.testing.assert_allclose(contract.f2[i], f, atol=1e-6)
    assert contract.f2[0, 2] == pytest.approx(contract.f2[0, 1], abs=1e-6)  # pooled upward
    assert contract.f2[2, 0] == pytest.approx(market.f_lower_ghz, abs=1e-6)


@pytest.mark.parametrize("name", ["default", "paper", "persistent"])
@pytest.mark.parametrize("participation", ["per_period", "ex_ante"])
def test_the_simulated_es_signs_the_offered_form_and_stays(name, participation) -> None:
    from fed_agent.incentives.guard import renegotiation_proof_offers
    from tests.contracts.conftest import assert_every_type_signs_and_stays

    market = named_market(name, participation)
    offers = renegotiation_proof_offers([market])
    offered = offers.contracts[0]
    if participation == "ex_ante":  # deferred: nothing paid in period 1
        assert np.all(offered.r1 == 0)
    assert_every_type_signs_and_stays(offered, market)
    # so ESs that best-respond (ties broken by the type-free rule) give the cloud its value
    assert cloud_utility_best_response(offered, market) == pytest.approx(offers.cloud_utility[0])
