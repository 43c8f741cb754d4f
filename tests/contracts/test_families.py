"""The persistence family of markets and where the dynamic contract pays off on it."""

from __future__ import annotations

import numpy as np
import pytest

from fed_agent.contracts import (
    NAMED_MARKETS,
    PARTICIPATION_RULES,
    Market,
    MarketParams,
    audit,
    complete_information,
    family_market,
    family_params,
    iid_transition,
    named_market,
    optimal_contract,
    persistence_transition,
    reversal_matrix,
    static_contract,
    with_persistence,
)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_persistence_one_is_the_identity_and_minus_one_the_reversal(k: int) -> None:
    np.testing.assert_array_equal(persistence_transition(k, 1.0), np.eye(k))
    reversal = persistence_transition(k, -1.0)
    np.testing.assert_array_equal(reversal, reversal_matrix(k))
    for i in range(k):
        assert reversal[i, k - 1 - i] == 1.0


def test_persistence_zero_makes_every_row_the_prior() -> None:
    prior = [0.5, 0.3, 0.2]
    np.testing.assert_allclose(persistence_transition(3, 0.0, prior), [prior] * 3)
    np.testing.assert_allclose(iid_transition(4), np.full((4, 4), 0.25))


@pytest.mark.parametrize("p", [1.0, 0.7, 0.4, 0.0, -0.4, -0.7, -1.0])
@pytest.mark.parametrize("k", [2, 3, 5, 8])
def test_family_rows_sum_to_one_and_interpolate(p: float, k: int) -> None:
    matrix = persistence_transition(k, p)
    assert np.all(matrix >= 0)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-12)
    structure = np.eye(k) if p >= 0 else np.eye(k)[::-1]
    np.testing.assert_allclose(matrix, abs(p) * structure + (1 - abs(p)) / k, atol=1e-12)


def test_reversal_member_of_k3_leans_each_row_to_the_mirror_type() -> None:
    matrix = persistence_transition(3, -0.4)
    np.testing.assert_allclose(
        matrix, [[0.2, 0.2, 0.6], [0.2, 0.6, 0.2], [0.6, 0.2, 0.2]], atol=1e-12
    )
    assert not family_market(-0.4).transition_is_monotone
    assert family_market(0.4).transition_is_monotone


@pytest.mark.parametrize("bad", [1.5, -1.01, float("nan"), float("inf")])
def test_bad_persistence_names_the_field_and_the_range(bad: float) -> None:
    with pytest.raises(ValueError, match=r"^persistence: must lie in \[-1, 1\]"):
        persistence_transition(3, bad)


@pytest.mark.parametrize("bad", [1, 0, 2.5])
def test_bad_num_types_names_the_field(bad: float) -> None:
    with pytest.raises(ValueError, match=r"^num_types: .*K >= 2"):
        persistence_transition(bad, 0.5)


def test_bad_prior_and_transition_override_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"^prior: "):
        persistence_transition(3, 0.5, [0.5, 0.6, -0.1])
    with pytest.raises(ValueError, match=r"^prior: expected shape \(3,\)"):
        persistence_transition(3, 0.5, [0.5, 0.5])
    with pytest.raises(ValueError, match=r"^transition: "):
        family_params(0.5, transition=np.eye(3).tolist())
    with pytest.raises(ValueError, match=r"^participation: unknown value 'sometimes'"):
        family_params(0.5, participation="sometimes")


def test_family_params_keep_the_defaults_table() -> None:
    params = family_params(-0.4, 5, "ex_ante", discount=0.5)
    defaults = MarketParams()
    assert params.num_types == 5 and params.participation == "ex_ante"
    assert params.discount == 0.5
    for name in ("theta_min", "theta_max", "omega", "workload_gcycles", "kappa", "t_max_s"):
        assert getattr(params, name) == getattr(defaults, name)
    market = Market.from_params(params)
    np.testing.assert_allclose(market.transition, persistence_transition(5, -0.4))


def test_with_persistence_uses_the_markets_own_prior() -> None:
    market = named_market("default").replace(prior=np.array([0.6, 0.3, 0.1]))
    moved = with_persistence(market, 0.0)
    np.testing.assert_allclose(moved.transition, [[0.6, 0.3, 0.1]] * 3)
    assert moved.discount == market.discount


def test_named_family_markets() -> None:
    assert {"persistent", "reversal", "uncorrelated"} <= set(NAMED_MARKETS)
    persistent = named_market("persistent")
    assert persistent.participation == "per_period"
    np.testing.assert_allclose(persistent.transition[0], [0.7, 0.3, 0.0])
    assert named_market("persistent_paper").num_types == 5
    # the default market is the reversal member with ex ante participation
    np.testing.assert_array_equal(
        named_market("default").transition, named_market("reversal").transition
    )
    assert named_market("default").participation == "ex_ante"
    reversal = named_market("reversal")
    assert reversal.participation == "ex_ante" and reversal.discount == 0.5
    np.testing.assert_allclose(reversal.transition, persistence_transition(3, -0.8))
    paper = named_market("reversal_paper")
    np.testing.assert_allclose(paper.transition, persistence_transition(5, -0.8))
    np.testing.assert_allclose(named_market("uncorrelated").transition, np.full((3, 3), 1 / 3))


@pytest.mark.parametrize("participation", PARTICIPATION_RULES)
@pytest.mark.parametrize("k", [3, 5])
def test_identity_member_optimum_equals_the_static_menu(participation: str, k: int) -> None:
    market = family_market(1.0, k, participation)
    optimum = optimal_contract(market).cloud_utility
    assert optimum == pytest.approx(static_contract(market).cloud_utility, abs=1e-6)


def test_static_menu_under_ex_ante_is_one_menu_with_the_ex_ante_ir() -> None:
    # One menu reused in both periods; under ex_ante only the epoch IR binds, so the static
    # menu can charge part of the period-2 rent in advance and beats its per-period self.
    market = family_market(0.0, 3, "ex_ante")
    solution = static_contract(market)
    contract = solution.contract
    for i in range(3):
        np.testing.assert_allclose(contract.f2[i], contract.f1, atol=1e-9)
        np.testing.assert_allclose(contract.r2[i], contract.r1, atol=1e-9)
    assert audit(contract, market) == []
    per_period = static_contract(market.replace(participation="per_period")).cloud_utility
    assert solution.cloud_utility > per_period + 1.0
    # the lowest type's period-1 utility is negative: only the epoch IR holds it
    low_rent = (
        contract.r1[0]
        - market.kappa * market.workload_gcycles * contract.f1[0] ** 2 / (market.types[0])
    )
    assert low_rent < -1e-3


@pytest.mark.parametrize(
    ("name", "optimum", "static"), [("default", 85.611, 80.112), ("paper", 85.785, 81.304)]
)
def test_dynamics_pay_off_on_the_default_markets(name: str, optimum: float, static: float) -> None:
    # optimum >= 1.05 x static, rent share >= 0.3, also at K = 5
    market = named_market(name)
    exact = optimal_contract(market).cloud_utility
    menu = static_contract(market).cloud_utility
    complete = complete_information(market).cloud_utility
    assert exact / menu >= 1.05
    assert (exact - menu) / (complete - menu) >= 0.3
    # figures of docs/contract-model.md
    assert exact == pytest.approx(optimum, abs=0.01)
    assert menu == pytest.approx(static, abs=0.01)


def test_ex_ante_optimum_is_enforceable_by_holding_back_period1_pay() -> None:
    # every history's period-2 loss is covered by the period-1 pay the cloud holds back
    market = named_market("default")
    contract = optimal_contract(market).contract
    period2 = contract.r2 - market.kappa * market.workload_gcycles * contract.f2**2 / market.types
    assert np.all(contract.r1[:, None] + period2 >= -1e-6)
    assert period2.min() < -1.0  # the cloud does ask for period-2 losses, within that bound


def test_dynamics_barely_matter_on_the_persistent_market() -> None:
    market = named_market("persistent")
    optimum = optimal_contract(market).cloud_utility
    assert optimum / static_contract(market).cloud_utility < 1.001
