"""Reference solutions: closed forms, brute force, ordering, timing."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
from scipy.optimize import brentq, minimize_scalar

from fed_agent.contracts import (
    PARTICIPATION_RULES,
    Market,
    MarketParams,
    audit,
    cloud_utility,
    complete_information,
    energy_cost,
    named_market,
    optimal_contract,
    score_f_menus,
    solve_reference,
    static_contract,
    uniform_contract,
    value_of_work,
)


def one_period_screening_value(market: Market, weights: np.ndarray) -> tuple[np.ndarray, float]:
    """Textbook one-period screening with prior ``weights`` (no monotonicity issues here):
    type i's f maximises w_i G(f) - c(f) [w_i / theta_i + (1/theta_i - 1/theta_{i+1}) sum_{l>i} w_l].
    """
    theta = market.types
    k = theta.size
    tail = np.concatenate([np.cumsum(weights[::-1])[::-1][1:], [0.0]])
    inv = 1 / theta
    gaps = np.concatenate([inv[:-1] - inv[1:], [0.0]])
    virtual = weights * inv + gaps * tail
    f = np.empty(k)
    for i in range(k):
        res = minimize_scalar(
            lambda v, i=i: (
                -(weights[i] * value_of_work(v, market) - virtual[i] * energy_cost(v, market))
            ),
            bounds=(market.f_lower_ghz, market.f_max_ghz),
            method="bounded",
            options={"xatol": 1e-10},
        )
        f[i] = res.x
    assert np.all(np.diff(f) >= -1e-9), "test market must not need ironing"
    value = float(weights @ value_of_work(f, market) - virtual @ energy_cost(f, market))
    return f, value


@pytest.mark.parametrize("participation", PARTICIPATION_RULES)
def test_zero_discount_reduces_to_one_period_screening(participation: str) -> None:
    market = named_market("persistent_paper", participation).replace(discount=0.0)
    f, value = one_period_screening_value(market, market.prior)
    solution = optimal_contract(market)
    assert solution.cloud_utility == pytest.approx(value, rel=1e-7)
    np.testing.assert_allclose(solution.contract.f1, f, atol=1e-4)


@pytest.mark.parametrize("participation", PARTICIPATION_RULES)
def test_identity_transition_repeats_the_static_screening_contract(participation: str) -> None:
    # Perfectly persistent types: the optimum repeats the one-period optimum (Baron-Besanko).
    market = named_market("persistent", participation).replace(transition=np.eye(3))
    _, value = one_period_screening_value(market, market.prior)
    optimum = optimal_contract(market)
    assert optimum.cloud_utility == pytest.approx((1 + market.discount) * value, rel=1e-7)
    assert static_contract(market).cloud_utility == pytest.approx(optimum.cloud_utility, rel=1e-7)
    np.testing.assert_allclose(np.diag(optimum.contract.f2), optimum.contract.f1, atol=1e-4)


def test_complete_information_solves_the_first_order_condition() -> None:
    market = named_market("persistent")
    solution = complete_information(market)
    a = 1 + market.t_max_s - market.upload_s
    for theta, f in zip(market.types, solution.contract.f1, strict=True):
        foc = lambda v, t=theta: market.omega * 20 / (v * (a * v - 20)) - 2 * 0.2 * 20 * v / t  # noqa: E731
        expected = brentq(foc, 20 / a + 1e-9, 50.0)
        assert f == pytest.approx(np.clip(expected, 1.0, 5.0), abs=1e-9)
    np.testing.assert_allclose(
        solution.contract.r1, energy_cost(solution.contract.f1, market) / market.types
    )
    assert audit(solution.contract, market, kinds=("IR", "bounds")) == []
    # it is not incentive compatible: higher types would take the lowest type's item
    assert any(v.kind == "IC_intertemporal" for v in audit(solution.contract, market))


def _grid_search(market: Market, rounds: int = 6, points: int = 7) -> float:
    """Brute force for K = 2: every grid menu whose f rise with the type in each menu (which
    IC needs), priced by the minimal payments, zooming in around the best point."""
    low = np.full(6, market.f_lower_ghz)
    high = np.full(6, market.f_max_ghz)
    best_value, best_f = -np.inf, None
    for _ in range(rounds):
        pairs = []
        for block in range(3):
            axis_lo = np.linspace(low[2 * block], high[2 * block], points)
            axis_hi = np.linspace(low[2 * block + 1], high[2 * block + 1], points)
            grid = np.array(list(itertools.product(axis_lo, axis_hi)))
            pairs.append(grid[grid[:, 0] <= grid[:, 1] + 1e-12])
        index = np.indices([len(p) for p in pairs]).reshape(3, -1).T
        menus = np.hstack([pairs[block][index[:, block]] for block in range(3)])
        values, violations = score_f_menus(
            menus[:, :2], menus[:, 2:].reshape(-1, 2, 2), market, exact=False
        )
        values = np.where(violations == 0, values, -np.inf)
        best = int(np.argmax(values))
        if values[best] > best_value:
            best_value, best_f = values[best], menus[best]
        step = (high - low) / (points - 1)
        low = np.maximum(best_f - 1.5 * step, market.f_lower_ghz)
        high = np.minimum(best_f + 1.5 * step, market.f_max_ghz)
    return float(best_value)


@pytest.mark.parametrize(
    ("participation", "stay", "discount"),
    [("per_period", 0.7, 0.9), ("ex_ante", 0.7, 0.9), ("per_period", 0.55, 0.6)],
)
def test_optimum_matches_brute_force_on_two_types(
    participation: str, stay: float, discount: float
) -> None:
    market = Market.from_params(
        MarketParams(
            num_types=2,
            types=[0.4, 1.6],
            prior=[0.4, 0.6],
            transition=[[stay, 1 - stay], [1 - stay, stay]],
            discount=discount,
            participation=participation,
        )
    )
    optimum = optimal_contract(market).cloud_utility
    brute = _grid_search(market)
    assert brute <= optimum + 1e-9 * abs(optimum)
    assert optimum - brute <= 1e-3 * abs(optimum)


@pytest.mark.parametrize("name", ["default", "paper"])
@pytest.mark.parametrize("participation", PARTICIPATION_RULES)
def test_references_are_feasible_and_ordered(name: str, participation: str) -> None:
    market = named_market(name, participation)
    full = complete_information(market).cloud_utility
    solutions = [optimal_contract(market), static_contract(market), uniform_contract(market)]
    for solution in solutions:
        assert audit(solution.contract, market) == [], solution.name
        assert solution.optimality_gap is not None and solution.optimality_gap < 1e-8
    optimum, static, uniform = (s.cloud_utility for s in solutions)
    assert full > optimum >= static >= uniform
    random = solve_reference("random", market, np.random.default_rng(3))
    assert audit(random.contract, market) == []
    assert random.cloud_utility <= optimum + 1e-9


def test_default_market_figures_are_pinned() -> None:
    # Regression values of the exact optimum (docs/contract-model.md quotes them).
    assert optimal_contract(named_market("persistent")).cloud_utility == pytest.approx(
        89.7093047, abs=1e-5
    )
    assert optimal_contract(named_market("persistent", "ex_ante")).cloud_utility == pytest.approx(
        94.1431098, abs=1e-5
    )
    assert complete_information(named_market("persistent")).cloud_utility == pytest.approx(
        116.596999, abs=1e-5
    )


def test_ex_ante_participation_is_worth_at_least_per_period() -> None:
    for name in ("default", "paper"):
        per_period = optimal_contract(named_market(name)).cloud_utility
        ex_ante = optimal_contract(named_market(name, "ex_ante")).cloud_utility
        assert ex_ante >= per_period


def test_paper_scale_optimum_is_fast() -> None:
    market = named_market("persistent_paper")
    optimal_contract(market)  # warm caches and imports
    start = time.perf_counter()
    solution = optimal_contract(market)
    assert time.perf_counter() - start < 2.0
    assert cloud_utility(solution.contract, market) == pytest.approx(solution.cloud_utility)


def test_unknown_reference_lists_the_choices() -> None:
    with pytest.raises(ValueError, match="complete_information.*uniform"):
        solve_reference("best", named_market("persistent"))


# A federation training market (demonstration 271 of seed 0) on which HiGHS ended one
# cutting-plane LP with an unknown model status at the tight tolerances.
HARD_MARKET = {
    "types": np.array([0.2, 1.1, 2.0]),
    "prior": np.array([0.17136704981821807, 0.04030239388123608, 0.7883305563005458]),
    "transition": np.array(
        [
            [0.06666666666666665, 0.06666666666666665, 0.8666666666666667],
            [0.06666666666666665, 0.8666666666666667, 0.06666666666666665],
            [0.8666666666666667, 0.06666666666666665, 0.06666666666666665],
        ]
    ),
    "discount": 0.5,
    "workload_gcycles": 25.51586409235938,
    "module_bytes": 8872040.747351762,
    "bandwidth_hz": 20e6,
    "tx_power_dbm": 23.0,
    "channel_gain": 1e-8,
    "noise_dbm": -100.0,
    "kappa": 0.2,
    "omega": 30.0,
    "t_max_s": 25.0,
    "f_min_ghz": 1.0,
    "f_max_ghz": 5.0,
    "participation": "ex_ante",
}


def test_a_cutting_plane_lp_that_highs_cannot_finish_is_retried(monkeypatch) -> None:
    from fed_agent.contracts.solvers import convex

    market = Market(**HARD_MARKET)
    monkeypatch.setattr(convex, "FALLBACK_SETTINGS", convex.FALLBACK_SETTINGS[:1])
    with pytest.raises(RuntimeError, match="cutting-plane LP failed"):
        optimal_contract(market)
    monkeypatch.undo()
    solution = optimal_contract(market)
    assert solution.optimality_gap <= 1e-6
    assert audit(solution.contract, market) == []
    assert solution.cloud_utility >= static_contract(market).cloud_utility - 1e-9
