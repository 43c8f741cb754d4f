"""The vectorised constraint build and the stacked minimal payment LP against the per-market path.

A round prices a thousand fresh markets at once, so the constraint systems are built for the
whole batch in one pass (``constraint_arrays``); these tests pin that pass to the per-market
definitions, on batches that mix both participation rules and non-monotone transitions.
"""

from __future__ import annotations

import numpy as np
import pytest

from fed_agent.contracts import DynamicContract, MarketRanges, payments, sample_market
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


@pytest.mark.parametrize(("stack_size", "threads"), [(100, 1), (4, 1), (4, 2), (1, 3)])
def test_stacked_prices_equal_single_lps_on_a_mixed_batch(
    stack_size: int, threads: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Optimal menus (implementable) and perturbed ones (some not): same rewards, same NaNs,
    whether the batch is one LP or many pieces priced on several threads."""
    monkeypatch.setattr(payments, "STACK_SIZE", stack_size)
    monkeypatch.setattr(payments, "SOLVER_THREADS", threads)
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


def test_rows_known_implementable_skip_the_feasibility_test_but_not_the_price() -> None:
    """A row flagged implementable is priced like any other; an unflagged infeasible row in
    the same piece still comes back NaN."""
    markets = _mixed_markets(3, 4, seed=5)
    menus = np.array([optimal_contract(m).contract.flat_f() for m in markets])
    falling = np.clip(menus[3][::-1] * 1.3, markets[3].f_lower_ghz, markets[3].f_max_ghz)
    assert minimal_payments_flat(falling, markets[3]) is None
    menus[3] = falling
    known = np.array([True, True, False, False])
    stacked = minimal_payments_stacked(menus, markets, known)
    assert np.all(np.isnan(stacked[3]))
    for b in range(3):
        np.testing.assert_allclose(
            stacked[b], minimal_payments_flat(menus[b], markets[b]), rtol=1e-6, atol=1e-6
        )


def test_stacked_contracts_equal_one_by_one_and_refuse_what_the_constructor_refuses() -> None:
    rng = np.random.default_rng(3)
    f1, r1 = rng.uniform(1, 2, (5, 3)), rng.uniform(0, 4, (5, 3))
    f2, r2 = rng.uniform(1, 2, (5, 3, 3)), rng.uniform(0, 4, (5, 3, 3))
    for b, contract in enumerate(DynamicContract.stacked(f1, r1, f2, r2)):
        single = DynamicContract(f1[b], r1[b], f2[b], r2[b])
        np.testing.assert_array_equal(contract.flat_f(), single.flat_f())
        np.testing.assert_array_equal(contract.flat_r(), single.flat_r())
        assert not contract.r2.flags.writeable
    bad = r2.copy()
    bad[4, 2, 1] = -1e-3
    with pytest.raises(ValueError, match="r2: every entry must be >= 0"):
        DynamicContract.stacked(f1, r1, f2, bad)
    bad[4, 2, 1] = np.nan
    with pytest.raises(ValueError, match="r2: every entry must be finite"):
        DynamicContract.stacked(f1, r1, f2, bad)
    with pytest.raises(ValueError, match=r"f2: expected shape \(5, 3, 3\)"):
        DynamicContract.stacked(f1, r1, f2[:, :2], r2)
