"""The value of re-offering period 2 after the reports (what the commitment costs the cloud)."""

from __future__ import annotations

import numpy as np
import pytest

from fed_agent.contracts import (
    complete_information,
    energy_cost,
    named_market,
    optimal_contract,
    value_of_work,
)
from fed_agent.contracts.renegotiation import renegotiation_gain


def test_reoffering_period_two_on_the_default_market() -> None:
    market = named_market("default")
    optimum = optimal_contract(market)
    result = renegotiation_gain(optimum.contract, market)
    assert result.committed == pytest.approx(optimum.cloud_utility, rel=1e-9)
    assert result.reoffered == pytest.approx(90.7185, abs=1e-3)
    assert result.gain == pytest.approx(0.0597, abs=5e-4)


def test_a_known_period_two_type_is_served_at_complete_information() -> None:
    # with an identity transition the report reveals the period-2 type. Every type still
    # needs an item, so the types below keep f_lo and the known type i earns the rent
    # c(f_lo) (1/theta_0 - 1/theta_i); with exclusion they exit and i is served at its
    # complete-information surplus
    market = named_market("persistent").replace(transition=np.eye(3), participation="per_period")
    signed = optimal_contract(market).contract
    full = complete_information(market).contract
    surplus = value_of_work(full.f1, market) - energy_cost(full.f1, market) / market.types
    low = float(energy_cost(market.f_lower_ghz, market))
    rent = low * (1 / market.types[0] - 1 / market.types)
    result = renegotiation_gain(signed, market)
    np.testing.assert_allclose(result.period2_values, surplus - rent, rtol=1e-6)
    excluding = renegotiation_gain(signed, market, exclusion=True)
    np.testing.assert_allclose(excluding.period2_values, surplus, rtol=1e-6)
    assert excluding.gain > result.gain > 0
