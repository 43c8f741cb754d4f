"""The audit catches broken menus; ESs self-select as the menu intends."""

from __future__ import annotations

import numpy as np
import pytest

from fed_agent.contracts import (
    ContractItem,
    DynamicContract,
    audit,
    best_response,
    cloud_utility,
    cloud_utility_best_response,
    es_choice,
    es_rents,
    es_utility,
    named_market,
    optimal_contract,
    period2_choice,
)


@pytest.fixture(scope="module")
def optimum():
    market = named_market("persistent")
    return market, optimal_contract(market).contract


def _with(contract: DynamicContract, **changes: np.ndarray) -> DynamicContract:
    values = {"f1": contract.f1, "r1": contract.r1, "f2": contract.f2, "r2": contract.r2}
    values.update(changes)
    return DynamicContract(**values)


def test_audit_reports_a_cut_reward_as_ir_violation_of_its_size(optimum) -> None:
    market, contract = optimum
    r2 = contract.r2.copy()
    r2[1, 0] -= 2.0  # IR of the lowest type binds after every history
    violations = audit(_with(contract, r2=r2), market)
    ir = [v for v in violations if v.kind == "IR"]
    assert [(v.indices, round(v.size, 6)) for v in ir] == [((1, 0), 2.0)]


def test_audit_reports_a_raised_low_item_as_intertemporal_ic(optimum) -> None:
    market, contract = optimum
    r1 = contract.r1.copy()
    r1[0] += 5.0  # type 1's downward intertemporal IC binds at the optimum
    violations = audit(_with(contract, r1=r1), market)
    sizes = {v.indices: v.size for v in violations if v.kind == "IC_intertemporal"}
    assert sizes[(1, 0)] == pytest.approx(5.0, abs=1e-6)
    # the ES does what the audit predicts: type 1 now takes item 0
    broken = _with(contract, r1=r1)
    assert es_choice(broken, market, 1) == 0
    assert cloud_utility_best_response(broken, market) < cloud_utility(broken, market) + 1e-9


def test_audit_reports_bounds_and_period2_ic() -> None:
    market = named_market("persistent")
    contract = DynamicContract(
        f1=np.array([0.5, 2.0, 3.0]),
        r1=np.array([10.0, 20.0, 30.0]),
        f2=np.tile([3.0, 2.0, 1.0], (3, 1)),
        r2=np.tile([40.0, 30.0, 20.0], (3, 1)),
    )
    kinds = {v.kind for v in audit(contract, market)}
    assert {"bounds", "IC2"} <= kinds
    bounds = [v for v in audit(contract, market) if v.kind == "bounds"]
    assert bounds[0].indices == (0,) and bounds[0].size == pytest.approx(0.5)


def test_optimum_is_truthful_and_rents_match(optimum) -> None:
    market, contract = optimum
    for i in range(3):
        assert es_choice(contract, market, i) == i
        for j in range(3):
            # truthful up to identical items: where the optimum bunches types (report 0's
            # row pools types 1 and 2), a tie goes to the lowest index, never to the type
            pick = period2_choice(contract, market, i, j)
            assert contract.terms(2, pick, i) == pytest.approx(contract.terms(2, j, i))
        assert period2_choice(contract, market, i, 2) == (1 if i == 0 else 2)
    assert cloud_utility_best_response(contract, market) == pytest.approx(
        cloud_utility(contract, market)
    )
    rents = es_rents(contract, market)
    assert rents[0] == pytest.approx(es_utility(contract, market, 0, 0))
    assert np.all(np.diff(rents) > 0)  # more willing types keep more rent


def test_best_response_declines_and_breaks_ties() -> None:
    market = named_market("persistent")
    # c(2 GHz) = 0.2 * 20 * 4 = 16 and c(1 GHz) = 4
    menu = [ContractItem(2.0, 16.0 / 1.1), ContractItem(1.0, 4.0 / 1.1)]
    # type 1.1 gets 0 from both: a tie goes to the higher f
    assert best_response(menu, 1.1, market) == 0
    # identical items: the lowest index, whatever the type (a tie reveals nothing)
    flat = [ContractItem(1.0, 25.0)] * 3
    assert {best_response(flat, float(theta), market) for theta in market.types} == {0}
    # a less willing type loses on both items and declines
    assert best_response(menu, 0.2, market) is None
    assert best_response([], 1.0, market) is None


def test_contract_validates_shapes_and_signs() -> None:
    with pytest.raises(ValueError, match="f2: expected shape"):
        DynamicContract(np.ones(2), np.ones(2), np.ones((3, 3)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="r1: every entry must be >= 0"):
        DynamicContract(np.ones(2), -np.ones(2), np.ones((2, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="reward"):
        ContractItem(1.0, float("nan"))
    contract = DynamicContract.static(np.array([1.0, 2.0]), np.array([3.0, 4.0]))
    assert contract.period2_menu(1) == [ContractItem(1.0, 3.0), ContractItem(2.0, 4.0)]
    assert contract.period1_menu()[1].f_ghz == 2.0
