"""Held pay is valued as the model values period-2 money: the offered contract defers it."""

from __future__ import annotations

import numpy as np
import pytest

from fed_agent.contracts import (
    audit,
    cloud_utility,
    es_choice,
    es_rents,
    named_market,
    optimal_contract,
)
from fed_agent.contracts.escrow import defer_pay, held_epoch_rents, holds_pay
from fed_agent.incentives.guard import guard_offers
from tests.contracts.conftest import assert_every_type_signs_and_stays


def test_pay_held_unchanged_costs_type_two_its_signature_at_the_default_optimum() -> None:
    market = named_market("default")
    optimum = optimal_contract(market).contract
    # the model's rent of type 2 is 0.409; its held period-1 reward 14.92 is worth 0.5 x 14.92
    assert es_rents(optimum, market)[2] == pytest.approx(0.40866, abs=1e-4)
    assert optimum.r1[2] == pytest.approx(14.9215, abs=1e-3)
    assert held_epoch_rents(optimum, market)[2] == pytest.approx(0.40866 - 0.5 * 14.9215, abs=1e-3)
    # an ES that discounts held pay does not take its own item: types 1 and 2 mimic type 0
    assert [es_choice(optimum, market, i) for i in range(3)] == [0, 0, 0]


def test_deferred_optimum_is_signed_by_every_type_and_worth_the_same() -> None:
    market = named_market("default")
    optimum = optimal_contract(market).contract
    offered = defer_pay(optimum, market)
    assert np.all(offered.r1 == 0)
    np.testing.assert_allclose(offered.r2 - optimum.r2, np.tile(optimum.r1[:, None] / 0.5, 3))
    # every type's discounted epoch rent is the model's rent, and none is negative
    rents = held_epoch_rents(offered, market)
    np.testing.assert_allclose(rents, es_rents(optimum, market), atol=1e-9)
    assert np.all(rents >= -1e-9)
    assert audit(offered, market) == []
    assert cloud_utility(offered, market) == pytest.approx(cloud_utility(optimum, market))
    assert_every_type_signs_and_stays(offered, market)


def test_nothing_is_deferred_per_period_or_without_a_period_two_value() -> None:
    market = named_market("default")
    optimum = optimal_contract(market).contract
    assert holds_pay(market)
    for other in (market.replace(participation="per_period"), market.replace(discount=0.0)):
        assert not holds_pay(other)
        assert defer_pay(optimum, other) is optimum


def test_the_guard_offers_the_deferred_form_ex_ante() -> None:
    market = named_market("default")
    optimum = optimal_contract(market)
    offers = guard_offers([market], [optimum.contract], priced=True)
    (offered,) = offers.contracts
    assert np.all(offered.r1 == 0) and offers.cloud_utility[0] == pytest.approx(85.61148, 1e-6)
    assert [es_choice(offered, market, i) for i in range(3)] == [0, 1, 2]
