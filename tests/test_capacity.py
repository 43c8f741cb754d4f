"""Capacity-aware design: a place in the round has a price, and contracts are designed for it.

The priced market values a working item at G(f) - price and keeps every cost and constraint,
so a contract designed on it is feasible on the real market and its priced utility is the
real one less price x expected places; with many more offers than places the best price
leaves the less willing types out (only the most willing type works on some ESs).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from fed_agent.config import load_config
from fed_agent.contracts import (
    DynamicContract,
    Market,
    MarketParams,
    audit,
    cloud_utility,
    energy_cost,
    optimal_contract,
    value_of_work,
)
from fed_agent.incentives.capacity import (
    capacity_offers,
    expected_places,
    price_candidates,
    priced_market,
    round_value,
)
from fed_agent.incentives.guard import GuardedOffers
from fed_agent.incentives.policies import make_policy
from fed_agent.incentives.profiles import deadline_market, es_market, simulated_profiles

MARKET = Market.from_params(MarketParams())


def test_the_priced_market_values_work_at_g_less_the_price_and_keeps_every_cost():
    priced = priced_market(MARKET, 20.0)
    f = np.array([1.5, 2.5, 4.0])
    assert np.allclose(value_of_work(f, priced), value_of_work(f, MARKET) - 20.0)
    assert np.allclose(energy_cost(f, priced), energy_cost(f, MARKET))
    assert value_of_work(0.0, priced) == 0.0  # the exit is worth nothing on both
    assert priced_market(MARKET, 0.0) is MARKET


def test_a_contract_designed_at_a_place_price_is_feasible_and_scored_as_u_less_price_places():
    price = 30.0
    contract = optimal_contract(priced_market(MARKET, price), exclusion=True).contract
    assert audit(contract, MARKET) == []  # IR, IC and bounds hold on the real market
    places = expected_places(contract.f1, contract.f2, MARKET)
    priced_utility = cloud_utility(contract, priced_market(MARKET, price))
    assert priced_utility == pytest.approx(cloud_utility(contract, MARKET) - price * places)
    # a price this high leaves the least willing period-1 type out
    assert contract.f1[0] == 0 and contract.f1[-1] > 0


def test_expected_places_weigh_period_two_by_the_discount():
    # type 0 exits in period 1 (prior 1/3 each), every period-2 item works (weight delta = 0.5)
    f1, f2 = np.array([0.0, 2.0, 2.0]), np.full((3, 3), 2.0)
    assert expected_places(f1, f2, MARKET) == pytest.approx(2 / 3 + 0.5)


@pytest.mark.parametrize("price", [-1.0, 30.0 * math.log(26.0)])
def test_a_price_outside_its_range_fails_in_one_line(price):
    with pytest.raises(ValueError, match=r"place price: must be in \[0, 97.7"):
        priced_market(MARKET, price)


def _certain_market() -> Market:
    """Every ES is type 2 in period 1 and keeps its type (P = I)."""
    return MARKET.replace(prior=np.array([0.0, 0.0, 1.0]), transition=np.eye(3))


def test_round_value_fills_the_places_with_the_best_surpluses_in_the_models_terms():
    market = _certain_market()
    f = np.array([3.0, 3.0, 3.0])
    # deferred form: nothing in period 1; R_i / delta owed in every period-2 item after i
    owed = np.array([0.0, 0.0, 40.0])
    cheap = DynamicContract(
        f, np.zeros(3), np.tile(f, (3, 1)), np.full((3, 3), 10.0) + owed[:, None]
    )
    dear = DynamicContract(
        f, np.zeros(3), np.tile(f, (3, 1)), np.full((3, 3), 30.0) + owed[:, None]
    )
    sources = ["exact", "exact", "no_offer"]
    offers = GuardedOffers([cheap, dear, None], sources, np.zeros(3), deferred=[owed, owed, None])
    g = float(value_of_work(3.0, market))
    rng = np.random.default_rng(0)
    # one place: the cheap ES, its period-1 pay R_2 = delta x 40 = 20, its period-2 pay 10
    one = round_value(offers, [market] * 3, 1, rng)
    assert one == pytest.approx((g - 20.0) + 0.5 * (g - 10.0))
    two = round_value(offers, [market] * 3, 2, rng)
    assert two == pytest.approx(2 * (g - 20.0) + 0.5 * ((g - 10.0) + (g - 30.0)))


def _crowded_markets(count: int) -> list[Market]:
    """Deadline markets (7 s) of the default experiment's first ``count`` simulated ESs."""
    cfg = load_config("default", ["incentive.exclusion=true", "incentive.selection=deadline"])
    markets = []
    for partition in range(count):
        public, _ = simulated_profiles(0, partition, cfg.market, cfg.incentive)
        market = deadline_market(es_market(cfg.market, public, None, None), 7.0)
        if market is not None:
            markets.append(market)
    return markets


def test_no_price_is_tried_when_every_offer_has_a_place():
    markets = _crowded_markets(6)
    assert price_candidates(markets, len(markets), np.random.default_rng(0)) == [0.0]


def test_with_four_offers_a_place_the_best_price_leaves_more_types_out():
    markets = _crowded_markets(24)
    cfg = load_config("default", ["incentive.exclusion=true"])
    policy = make_policy(cfg.incentive, cfg.market.num_types, cfg.market.commitment)

    design_times = []

    def design(batch):
        offers = policy(batch, deadline=True)
        design_times.append(offers.design_s)
        return offers

    unpriced = design(markets)
    design_times.clear()
    chosen = capacity_offers(design, markets, 6, np.random.default_rng(0))
    assert chosen.place_price > 0 and chosen.scores[chosen.place_price] > chosen.scores[0.0]
    # the round's design time is every candidate's, not only the chosen one's
    assert len(design_times) == len(chosen.scores) == 4
    assert chosen.offers.design_s == pytest.approx(sum(design_times))
    assert chosen.offers.guard_s > 0

    def working(offers: GuardedOffers) -> int:  # working period-1 items over the offers
        return sum(int((c.f1 > 0).sum()) for c in offers.contracts if c is not None)

    assert working(chosen.offers) < working(unpriced)
    only_most_willing = [
        c for c in chosen.offers.contracts if c is not None and (c.f1 > 0).tolist() == [0, 0, 1]
    ]
    assert only_most_willing  # some ESs are worth a place only as their most willing type
    for contract, market, owed in zip(
        chosen.offers.contracts, markets, chosen.offers.deferred, strict=True
    ):
        if contract is not None:  # undo the deferral: the designed contract passes the audit
            designed = DynamicContract(
                contract.f1, market.discount * owed, contract.f2, contract.r2 - owed[:, None]
            )
            assert audit(designed, market) == []


@pytest.mark.parametrize("price_places", [True, False])
def test_the_recruiter_prices_places_only_when_asked(
    tmp_path, smoke_module, monkeypatch, price_places
):
    import strategies.recruiter as recruiter
    from tests.strategies.test_contract_strategy import make_strategy, train_round

    priced = []

    def counting(*args, **kwargs):
        priced.append(len(args[1]))  # the markets designed at a place price
        return capacity_offers(*args, **kwargs)

    monkeypatch.setattr(recruiter, "capacity_offers", counting)
    overrides = (
        "incentive=optimal incentive.exclusion=true incentive.selection=deadline "
        f"federation.es_per_round=1 incentive.price_places={str(price_places).lower()}"
    )
    strategy, grid = make_strategy(tmp_path, smoke_module, overrides)
    train_round(strategy, grid, smoke_module)
    assert priced == ([3] if price_places else [])  # one design for the 3 ESs' markets
    assert strategy.engagements  # offers either way
