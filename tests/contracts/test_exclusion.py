"""Exclusion: any item may be the exit (no work, no pay); the exact solver finds which."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fed_agent.contracts import (
    PARTICIPATION_RULES,
    audit,
    cloud_utility,
    named_market,
    optimal_contract,
    solve_reference,
)
from fed_agent.contracts.escrow import defer_pay
from fed_agent.contracts.solvers import solve_tied
from fed_agent.contracts.solvers.references import excluded_items
from fed_agent.incentives.guard import EXACT, guard_offers
from tests.contracts.conftest import assert_every_type_signs_and_stays


def scarce(num_types: int = 3, participation: str = "ex_ante"):
    """The default economics with a least willing type of 0.08 and omega 16: serving that
    type costs more than its work is worth."""
    market = named_market("default").replace(
        types=np.linspace(0.08, 2.0, 3), omega=16.0, participation=participation
    )
    if num_types == 2:
        market = market.replace(
            types=np.array([0.08, 2.0]),
            prior=np.array([0.5, 0.5]),
            transition=np.array([[0.3, 0.7], [0.7, 0.3]]),
        )
    return market


@pytest.mark.parametrize("participation", PARTICIPATION_RULES)
def test_branch_and_bound_matches_every_exit_pattern_on_two_types(participation) -> None:
    market = scarce(2, participation)
    identity = np.arange(6)
    found = solve_tied(market, identity, identity, exclusion=True)
    best = -np.inf
    for pattern in itertools.product([False, True], repeat=6):
        try:
            fixed = solve_tied(market, identity, identity, exclusion=True, exits=np.array(pattern))
        except RuntimeError:
            continue  # no contract with exactly these exits
        best = max(best, fixed.lower_bound)
    assert found.lower_bound == pytest.approx(best, rel=1e-7)
    assert found.upper_bound - found.lower_bound <= 1e-8 * (1 + abs(found.lower_bound))
    without = optimal_contract(market).cloud_utility
    assert found.lower_bound > without + 1.0


def test_exclusion_on_a_market_where_the_least_willing_type_costs_too_much() -> None:
    market = scarce()
    optimum = optimal_contract(market, exclusion=True)
    assert optimal_contract(market).cloud_utility == pytest.approx(7.7938, abs=1e-3)
    assert optimum.cloud_utility == pytest.approx(33.9354, abs=1e-3)
    assert optimum.optimality_gap < 1e-8
    # type 0 is excluded in period 1 and in period 2 after every report
    assert optimum.excluded_types == "1:0 2:0,0 2:0,1 2:1,0 2:2,0"
    assert audit(optimum.contract, market) == []
    assert cloud_utility(optimum.contract, market) == pytest.approx(optimum.cloud_utility)
    values = {
        name: solve_reference(name, market, exclusion=True).cloud_utility
        for name in ("complete_information", "best_static", "static", "uniform")
    }
    assert values["complete_information"] >= optimum.cloud_utility >= values["best_static"]
    assert values["best_static"] >= values["static"] >= values["uniform"] == 0.0
    offered = defer_pay(optimum.contract, market)
    assert_every_type_signs_and_stays(offered, market)


def test_exclusion_changes_nothing_where_every_type_is_worth_serving() -> None:
    market = named_market("default")
    optimum = optimal_contract(market, exclusion=True)
    assert optimum.cloud_utility == pytest.approx(85.61148, abs=1e-4)
    assert excluded_items(optimum.contract) == ""
    # on the persistent market the least willing type is best left out after report 0
    persistent = optimal_contract(named_market("persistent"), exclusion=True)
    # type 0 after report 0, and the item of type 0 after report 2, which P[2, 0] = 0 leaves
    # unused (exiting it frees the rents it held)
    assert persistent.excluded_types == "2:0,0 2:2,0"
    assert persistent.cloud_utility == pytest.approx(92.49848, abs=1e-4)


def test_the_guard_can_offer_an_exact_contract_that_excludes() -> None:
    market = scarce()
    proposal = optimal_contract(market).contract  # without exits: 7.79
    kept = guard_offers([market], [proposal], priced=True)
    assert kept.cloud_utility[0] == pytest.approx(7.7938, abs=1e-3)
    # untrusted, the proposal earns less than half the complete-information value (23.5)
    untrusted = np.array([False])
    offers = guard_offers([market], [proposal], priced=True, exclusion=True, trusted=untrusted)
    assert offers.sources == [EXACT]
    assert offers.cloud_utility[0] == pytest.approx(33.9354, abs=1e-3)
    designed = optimal_contract(market, exclusion=True).contract
    assert audit(designed, market) == []
    # offered deferred: an exit item after report i carries the held period-1 pay R_i / delta
    # (pay for period-1 work, released in period 2 without period-2 work)
    (offered,) = offers.contracts
    np.testing.assert_allclose(offered.r2, defer_pay(designed, market).r2, atol=1e-9)
    assert offered.f1[0] == 0 and offered.r1[0] == 0
    assert offered.f2[1, 0] == 0 and offered.r2[1, 0] == pytest.approx(designed.r1[1] / 0.5)


def test_the_solve_command_tabulates_excluded_types() -> None:
    from fed_agent.commands.contract import solve_table

    market = named_market("default").replace(participation="per_period")
    rows, blocks = solve_table(market, ["optimal", "best_static", "random"], 0, exclusion=True)
    assert [row["solution"] for row in rows] == ["optimal", "best_static"]
    assert rows[0]["excluded_types"] == "2:0,0" and rows[1]["excluded_types"] == ""
    assert rows[0]["cloud_utility"] == pytest.approx(76.9609, abs=1e-3)
    assert rows[1]["cloud_utility"] == pytest.approx(70.1708, abs=1e-3)
    assert "excluded 2:0,0" in blocks[0]
