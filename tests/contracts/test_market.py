"""Market defaults, derived quantities and the refusal of bad input."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fed_agent import latency
from fed_agent.contracts import Market, MarketParams, named_market, neighbour_transition


def test_default_market_matches_the_defaults_table() -> None:
    market = named_market("persistent")
    np.testing.assert_allclose(market.types, [0.2, 1.1, 2.0])
    np.testing.assert_allclose(market.prior, [1 / 3] * 3)
    np.testing.assert_allclose(
        market.transition, [[0.7, 0.3, 0.0], [0.15, 0.7, 0.15], [0.0, 0.3, 0.7]]
    )
    assert (market.discount, market.workload_gcycles, market.kappa) == (0.9, 20.0, 0.2)
    assert (market.omega, market.t_max_s, market.participation) == (30.0, 25.0, "per_period")
    assert named_market("persistent_paper").num_types == 5


def test_uplink_rate_and_upload_time_by_hand() -> None:
    # 23 dBm = 0.19953 W, -100 dBm = 1e-13 W: SNR = 0.19953 * 1e-8 / 1e-13 = 19952.6
    snr = 10 ** (-0.7) * 1e-8 / 1e-13
    rate = 20e6 * np.log2(1 + snr)
    market = named_market("persistent")
    assert market.uplink_rate_bps == pytest.approx(rate, rel=1e-12)
    assert market.uplink_rate_bps == pytest.approx(285.6e6, rel=1e-3)
    assert market.upload_s == pytest.approx(16e6 / rate, rel=1e-12)


def test_latency_and_energy_by_hand() -> None:
    assert latency.dbm_to_watts(30.0) == pytest.approx(1.0)
    np.testing.assert_allclose(latency.construction_latency_s([2.0, 4.0], 20.0, 0.5), [10.5, 5.5])
    np.testing.assert_allclose(latency.construction_cost([1.0, 3.0], 20.0, 0.2), [4.0, 36.0])
    np.testing.assert_allclose(latency.frequency_for_cost(36.0, 20.0, 0.2), 3.0)
    assert latency.round_latency_s([1.0, 7.0, 3.0]) == 7.0
    assert latency.round_latency_s([]) == 0.0


def test_effective_lower_bound_is_raised_when_the_latency_bound_needs_it() -> None:
    market = named_market("persistent")
    assert market.f_lower_ghz == 1.0
    tight = market.replace(t_max_s=5.0)  # needs 20 / f < 6 - S/r
    expected = 20.0 / (6.0 - tight.upload_s - 1e-3)
    assert tight.f_lower_ghz == pytest.approx(expected)
    assert tight.f_lower_ghz > 3.3


def test_neighbour_transition_puts_the_rest_on_the_neighbours() -> None:
    np.testing.assert_allclose(neighbour_transition(2, 0.8), [[0.8, 0.2], [0.2, 0.8]])
    np.testing.assert_allclose(neighbour_transition(4, 0.6).sum(axis=1), 1.0)
    assert neighbour_transition(4, 0.6)[1, 0] == pytest.approx(0.2)


def test_explicit_params_override_generated_values() -> None:
    params = MarketParams(
        num_types=2,
        types=[0.5, 1.5],
        prior=[0.25, 0.75],
        transition=[[1.0, 0.0], [0.5, 0.5]],
        participation="ex_ante",
    )
    market = Market.from_params(params)
    np.testing.assert_allclose(market.types, [0.5, 1.5])
    assert market.participation == "ex_ante"
    assert not dataclasses.is_dataclass(market.types)


def _market(**changes: object) -> Market:
    return named_market("persistent").replace(**changes)


@pytest.mark.parametrize(
    ("changes", "field_name", "rule"),
    [
        ({"transition": np.full((3, 3), 0.5)}, "transition", "row-stochastic"),
        ({"transition": np.eye(2)}, "transition", "square K x K"),
        ({"transition": [[1.2, -0.2, 0], [0, 1, 0], [0, 0, 1]]}, "transition", "entries >= 0"),
        ({"types": [0.2, 2.0, 1.1]}, "types", "strictly increasing"),
        ({"types": [-1.0, 1.0, 2.0]}, "types", "> 0"),
        ({"prior": [0.5, 0.5, 0.5]}, "prior", "probability vector"),
        ({"f_min_ghz": 5.0, "f_max_ghz": 1.0}, "f_min_ghz/f_max_ghz", "non-empty"),
        ({"f_min_ghz": 3.0, "f_max_ghz": 3.0}, "f_min_ghz/f_max_ghz", "non-empty"),
        ({"t_max_s": 1.0}, "f_max_ghz", "bounds of f are empty"),
        ({"discount": 1.5}, "discount", "[0, 1]"),
        ({"kappa": 0.0}, "kappa", "> 0"),
        ({"participation": "sometimes"}, "participation", "valid choices"),
    ],
)
def test_bad_market_is_refused_naming_field_and_rule(
    changes: dict, field_name: str, rule: str
) -> None:
    with pytest.raises(ValueError) as error:
        _market(**changes)
    assert error.value.args[0].startswith(field_name + ":")
    assert rule in error.value.args[0]


@pytest.mark.parametrize(
    ("changes", "field_name", "got"),
    [
        ({"noise_dbm": 1e300}, "bandwidth_hz/tx_power_dbm/channel_gain/noise_dbm", "got 0.0"),
        ({"channel_gain": 1e-300}, "bandwidth_hz/tx_power_dbm/channel_gain/noise_dbm", "got 0.0"),
        ({"tx_power_dbm": -1e30}, "bandwidth_hz/tx_power_dbm/channel_gain/noise_dbm", "got 0.0"),
        ({"tx_power_dbm": 1e300}, "bandwidth_hz/tx_power_dbm/channel_gain/noise_dbm", "got inf"),
        ({"bandwidth_hz": 1e308}, "bandwidth_hz/tx_power_dbm/channel_gain/noise_dbm", "got inf"),
        ({"module_bytes": 1e308, "bandwidth_hz": 1e-10}, "module_bytes", "got inf"),
        ({"kappa": 1e308}, "kappa", "got inf"),
        ({"f_max_ghz": 1e300}, "kappa", "got inf"),
        ({"types": [1e-320, 1.0, 2.0]}, "kappa", "got inf"),
        ({"omega": 1e308}, "omega", "got inf"),
    ],
)
def test_finite_settings_whose_derived_scales_overflow_are_refused(
    changes: dict, field_name: str, got: str
) -> None:
    with pytest.raises(ValueError) as error:
        _market(**changes)
    assert error.value.args[0].startswith(field_name + ":")
    assert got in error.value.args[0]


def test_an_overflowing_market_setting_fails_at_load_in_one_line() -> None:
    from fed_agent.config import ConfigError, load_config

    with pytest.raises(ConfigError) as error:
        load_config("default", ["market.noise_dbm=1e308"])
    assert str(error.value).startswith("market.bandwidth_hz/tx_power_dbm/channel_gain/noise_dbm:")
    assert "finite number > 0, got 0.0 bit/s" in str(error.value)


def test_unknown_market_name_lists_the_choices() -> None:
    with pytest.raises(ValueError, match=r"market.*\['default', 'paper', 'persistent'"):
        named_market("huge")


def test_market_arrays_are_read_only() -> None:
    market = named_market("persistent")
    with pytest.raises(ValueError):
        market.types[0] = 5.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        market.discount = 0.5  # type: ignore[misc]
