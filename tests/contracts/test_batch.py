"""The batch-over-markets API agrees with the single-market contract model, market by market.

Every function of ``fed_agent.contracts.batch`` is checked by value against its
single-market counterpart (``Market``'s derived quantities, ``contracts.utility``,
``item_weights``, the ``audit``, ``score_f_menus``, the ``minimal_payments`` LP and the
complete-information reference) on the named markets and on random ones.
"""

from __future__ import annotations

import numpy as np
import pytest

from fed_agent.contracts import (
    DynamicContract,
    Market,
    MarketBatch,
    MarketRanges,
    audit,
    cloud_utility,
    cloud_utility_batch,
    complete_information,
    complete_information_utility,
    count_violations,
    energy_cost,
    item_weights,
    least_rent_rewards,
    minimal_payments,
    named_market,
    sample_market,
    score_f_menus,
    score_menus,
    value_of_work,
)
from fed_agent.contracts.solvers import efficient_resource

INCENTIVE_KINDS = ("IR", "IC2", "IC_intertemporal")


def markets_of(name: str, seed: int, count: int = 10, **ranges: str) -> list[Market]:
    """The named market and ``count`` random markets with its number of types."""
    market = named_market(name)
    rng = np.random.default_rng(seed)
    drawn = [sample_market(rng, MarketRanges(**ranges), market.num_types) for _ in range(count)]
    return [market, *drawn]


# per-period markets with monotone transitions (where the closed form is least-cost), then
# every rule and arbitrary transitions (where the batch must refuse to certify)
CLOSED_FORM = {"default": markets_of("default", 0, 20), "paper": markets_of("paper", 1)}
MIXED = {
    f"{name}-{participation}-dirichlet": markets_of(
        name, seed, 12, transition="dirichlet", participation=participation
    )
    + [named_market(name, participation)]
    for name, seed, participation in (
        ("default", 2, "ex_ante"),
        ("paper", 3, "ex_ante"),
        ("default", 4, "per_period"),
    )
}
GROUPS = {f"{name}-closed-form": m for name, m in CLOSED_FORM.items()} | MIXED


def rising_menus(
    markets: list[Market], seed: int, rising: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """A random menu per market between f_lo and the efficient f (the designer's box),
    rising with the type unless ``rising`` is False (then mostly not implementable)."""
    rng = np.random.default_rng(seed)
    k = markets[0].num_types
    lo = np.array([m.f_lower_ghz for m in markets])[:, None, None]
    caps = np.stack([efficient_resource(m.types, m) for m in markets])[:, None, :]
    u = rng.uniform(0, 1, (len(markets), k + 1, k))
    menus = lo + (np.sort(u, axis=2) if rising else u) * (caps - lo)
    return menus[:, 0], menus[:, 1:]


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_market_batch_stacks_the_markets_and_recomputes_their_derived_quantities(
    group: str,
) -> None:
    markets = GROUPS[group]
    batch = MarketBatch.from_markets(markets)
    assert batch.size == len(markets)
    assert batch.num_types == markets[0].num_types
    np.testing.assert_array_equal(batch.types, [m.types for m in markets])
    np.testing.assert_array_equal(batch.prior, [m.prior for m in markets])
    np.testing.assert_array_equal(batch.transition, [m.transition for m in markets])
    np.testing.assert_array_equal(batch.discount, [m.discount for m in markets])
    np.testing.assert_allclose(batch.upload_s, [m.upload_s for m in markets], rtol=1e-12)
    np.testing.assert_allclose(batch.f_lo, [m.f_lower_ghz for m in markets], rtol=1e-12)
    np.testing.assert_array_equal(batch.f_hi, [m.f_max_ghz for m in markets])
    assert batch.closed_form.tolist() == [m.transition_is_monotone for m in markets]
    assert batch.ex_ante.tolist() == [m.participation == "ex_ante" for m in markets]
    expected = np.stack([efficient_resource(m.types, m) for m in markets])
    np.testing.assert_allclose(batch.efficient_resource(), expected, rtol=1e-9)


def test_every_group_has_both_closed_form_and_other_markets() -> None:
    closed = np.concatenate([MarketBatch.from_markets(m).closed_form for m in GROUPS.values()])
    assert closed.any() and not closed.all()


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_value_cost_and_weights_agree_with_the_contract_model(group: str) -> None:
    markets = GROUPS[group]
    batch = MarketBatch.from_markets(markets)
    f1, f2 = rising_menus(markets, seed=5)
    values1, values2 = batch.value_of_work(f1), batch.value_of_work(f2)
    costs1, costs2 = batch.energy_cost(f1), batch.energy_cost(f2)
    w1, w2 = batch.item_weights()
    for row, market in enumerate(markets):
        np.testing.assert_allclose(values1[row], value_of_work(f1[row], market), rtol=1e-12)
        np.testing.assert_allclose(values2[row], value_of_work(f2[row], market), rtol=1e-12)
        np.testing.assert_allclose(costs1[row], energy_cost(f1[row], market), rtol=1e-12)
        np.testing.assert_allclose(costs2[row], energy_cost(f2[row], market), rtol=1e-12)
        flat = np.concatenate([w1[row], w2[row].ravel()])
        np.testing.assert_allclose(flat, item_weights(market), rtol=1e-12)


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_complete_information_utility_is_the_reference_contracts(group: str) -> None:
    markets = GROUPS[group]
    expected = [complete_information(m).cloud_utility for m in markets]
    utility = complete_information_utility(MarketBatch.from_markets(markets))
    np.testing.assert_allclose(utility, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("rising", [True, False])
@pytest.mark.parametrize("group", sorted(GROUPS))
def test_score_menus_agrees_with_score_f_menus_market_by_market(group: str, rising: bool) -> None:
    markets = GROUPS[group]
    batch = MarketBatch.from_markets(markets)
    f1, f2 = rising_menus(markets, seed=6, rising=rising)
    scored = score_menus(f1, f2, batch)
    for row, market in enumerate(markets):
        menu = f1[row : row + 1], f2[row : row + 1]
        utility, violations = score_f_menus(*menu, market, exact=False)
        assert (violations[0] == 0) == (scored.violations[row] == 0)
        # infeasible rows too: both score the same closed-form rewards
        assert scored.utility[row] == pytest.approx(utility[0], rel=1e-9, abs=1e-9)
        assert scored.certified[row] == (batch.closed_form[row] and scored.violations[row] == 0)
        if scored.certified[row]:
            exact, _ = score_f_menus(*menu, market, exact=True)
            assert scored.utility[row] == pytest.approx(exact[0], rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("group", sorted(CLOSED_FORM))
def test_certified_rewards_cost_what_the_lp_pays(group: str) -> None:
    markets = CLOSED_FORM[group]
    batch = MarketBatch.from_markets(markets)
    f1, f2 = rising_menus(markets, seed=7)
    r1, r2, only_downward = least_rent_rewards(f1, f2, batch)
    scored = score_menus(f1, f2, batch)
    assert scored.certified.sum() >= len(markets) // 2
    for row in np.flatnonzero(scored.certified):
        market = markets[row]
        reference = minimal_payments(f1[row], f2[row], market)
        assert reference is not None and only_downward[row]
        contract = DynamicContract(f1[row], r1[row], f2[row], r2[row])
        assert audit(contract, market) == []
        # least cost is unique, the rewards are not (rent may move between the periods at the
        # same expected cost): compare what the cloud pays and earns
        payment = item_weights(market) @ np.concatenate([r1[row], r2[row].ravel()])
        assert payment == pytest.approx(item_weights(market) @ reference.flat_r(), abs=1e-6)
        assert scored.utility[row] == pytest.approx(cloud_utility(reference, market), abs=1e-6)


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_cloud_utility_batch_is_cloud_utility_of_each_contract(group: str) -> None:
    markets = GROUPS[group]
    f1, f2 = rising_menus(markets, seed=8)
    rng = np.random.default_rng(9)
    k = markets[0].num_types
    r1, r2 = rng.uniform(0, 50, (len(markets), k)), rng.uniform(0, 50, (len(markets), k, k))
    utility = cloud_utility_batch(f1, r1, f2, r2, MarketBatch.from_markets(markets))
    for row, market in enumerate(markets):
        contract = DynamicContract(f1[row], r1[row], f2[row], r2[row])
        assert utility[row] == pytest.approx(cloud_utility(contract, market), rel=1e-12)


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_count_violations_counts_what_the_audit_finds(group: str) -> None:
    per_period = GROUPS[group]  # both rules: ex ante rows are checked with the epoch IR
    batch = MarketBatch.from_markets(per_period)
    f1, f2 = rising_menus(per_period, seed=10)
    scored = score_menus(f1, f2, batch)
    rng = np.random.default_rng(11)
    cut1 = rng.uniform(0.9, 1.0, scored.r1.shape) * (rng.uniform(size=scored.r1.shape) < 0.3)
    cut2 = rng.uniform(0.9, 1.0, scored.r2.shape) * (rng.uniform(size=scored.r2.shape) < 0.3)
    for r1, r2 in ((scored.r1, scored.r2), (scored.r1 * (1 - cut1), scored.r2 * (1 - cut2))):
        counts = count_violations(f1, r1, f2, r2, batch)
        expected = [
            len(audit(DynamicContract(f1[b], r1[b], f2[b], r2[b]), m, kinds=INCENTIVE_KINDS))
            for b, m in enumerate(per_period)
        ]
        np.testing.assert_array_equal(counts, expected)
    assert np.any(counts > 0)


def test_market_batch_refuses_markets_of_different_sizes() -> None:
    with pytest.raises(ValueError, match="one number of types"):
        MarketBatch.from_markets([named_market("persistent"), named_market("persistent_paper")])
