"""The vectorised constraint build and the stacked minimal payment LP against the per-market path.

A round prices a thousand fresh markets at once, so the constraint systems are built for the
whole batch in one pass (``constraint_arrays``); these tests pin that pass to the per-market
definitions, on batches that mix both participation rules and non-monotone transitions.
"""

from __future__ import annotations

import numpy as np
import pytest

from fed_agent.contracts import MarketRanges, sample_market
from fed_agent.contracts.constraints import build_constraints, constraint_arrays
from fed_agent.contracts.payments import minimal_payments_flat, minimal_payments_stacked
from fed_agent.contracts.solvers import optimal_contract


def _mixed_markets(num_types: int, count: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    rules = ("per_period", "ex_ante")
    return [
        sample_market(rng, MarketRanges(participation=rules[b % 2]), num_types)
        for b in range(count)
    ]


@pytest.mark.parametrize("num_types", [2, 3, 4])
def test_batch_build_equals_each_market_s_system(num_types: int) -> None:
    markets = _mixed_markets(num_types, 6, seed=num_types)
    a_cost, a_reward = constraint_arrays(
        np.stack([m.types for m in markets]),
        np.array([m.discount for m in markets]),
        np.stack([m.transition for m in markets]),
        np.array([m.participation == "ex_ante" for m in markets]),
    )
    for b, market in enumerate(markets):
        system = build_constraints(market)
        np.testing.assert_array_equal(a_cost[b], system.a_cost)
        np.testing.assert_array_equal(a_reward[b], system.a_reward)


def test_ex_ante_rows_differ_from_per_period_rows() -> None:
    """The rule switches the IR rows (epoch IR + enforceable commitment), nothing else."""
    market = _mixed_markets(3, 1, seed=7)[0]
    per_period = build_constraints(market.replace(participation="per_period"))
    ex_ante = build_constraints(market.replace(participation="ex_ante"))
    ir = np.array([kind == "IR" for kind, _ in per_period.labels])
    assert not np.allclose(per_period.a_reward[ir], ex_ante.a_reward[ir])
    np.testing.assert_array_equal(per_period.a_reward[~ir], ex_ante.a_reward[~ir])
    np.testing.assert_array_equal(per_period.a_cost[~ir], ex_ante.a_cost[~ir])


def test_stacked_prices_equal_single_lps_on_a_mixed_batch() -> None:
    """Optimal menus (implementable) and perturbed ones (some not): same rewards, same NaNs."""
    markets = _mixed_markets(3, 12, seed=11)
    rng = np.random.default_rng(0)
    menus = []
    for b, market in enumerate(markets):
        f = optimal_contract(market).contract.flat_f()
        if b % 3 == 2:  # a falling menu is usually not implementable
            f = np.clip(
                f[::-1] * rng.uniform(0.8, 1.2, f.size), market.f_lower_ghz, market.f_max_ghz
            )
        menus.append(f)
    stacked = minimal_payments_stacked(np.array(menus), markets)
    for b, market in enumerate(markets):
        single = minimal_payments_flat(menus[b], market)
        if single is None:
            assert np.all(np.isnan(stacked[b])), b
        else:
            np.testing.assert_allclose(stacked[b], single, rtol=1e-6, atol=1e-6)
