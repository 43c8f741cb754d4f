"""Every numeric config field refuses NaN, infinities, out-of-range values and wrong types
when the config loads, with an error that names the field.

The fields are found by walking the dataclasses of ``ExperimentConfig``, so a numeric field
added later is checked too (and this test fails until its ``__post_init__`` checks it).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import typing

import pytest

from fed_agent.config import (
    AgentConfig,
    ConfigError,
    DataConfig,
    ExperimentConfig,
    FederationConfig,
    ModelConfig,
    load_config,
)
from fed_agent.contracts import MarketParams
from fed_agent.incentives.config import IncentiveConfig
from fed_agent.privacy import PrivacyConfig
from fed_agent.screening.config import ScreeningConfig
from fed_agent.validation import check_number, number_option

NEGATIVE_ONE_IS_VALID = {"market.tx_power_dbm", "market.noise_dbm", "market.persistence"}
"""dBm levels are negative; a persistence of -1 is a full reversal of willingness."""


def _numeric_fields(cls: type, prefix: str = "") -> dict[str, type]:
    """Dotted key -> ``int`` or ``float`` for every scalar numeric field under ``cls``."""
    found: dict[str, type] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        kinds = set(typing.get_args(hint)) - {type(None)} or {hint}
        if len(kinds) == 1 and dataclasses.is_dataclass(next(iter(kinds))):
            found.update(_numeric_fields(next(iter(kinds)), f"{prefix}{f.name}."))
        elif kinds <= {int, float} and bool not in kinds:
            found[f"{prefix}{f.name}"] = float if float in kinds else int
    return found


NUMERIC = _numeric_fields(ExperimentConfig)


def test_the_walk_finds_the_fields_of_every_group():
    groups = {key.split(".")[0] for key in NUMERIC if "." in key}
    assert groups == {
        "federation",
        "model",
        "training",
        "data",
        "market",
        "incentive",
        "privacy",
        "screening",
    }
    assert NUMERIC["seed"] is int and NUMERIC["privacy.noise_multiplier"] is float
    assert NUMERIC["market.persistence"] is float  # Optional[float]
    assert len(NUMERIC) >= 70


def _group_class(key: str) -> type:
    if "." not in key:
        return ExperimentConfig
    hints = typing.get_type_hints(ExperimentConfig)
    return hints[key.split(".")[0]]


@pytest.mark.parametrize("key", sorted(NUMERIC))
def test_every_numeric_field_refuses_nan_inf_and_minus_one_on_construction(key):
    """Fast: each group's dataclass built with one bad value (no Hydra)."""
    values = [math.nan, math.inf, -math.inf] + [-1] * (key not in NEGATIVE_ONE_IS_VALID)
    for value in values:
        with pytest.raises(ValueError, match=re.escape(key)):
            _group_class(key)(**{key.split(".")[-1]: value})


@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(NUMERIC))
def test_every_numeric_field_refuses_bad_overrides_naming_the_field(key):
    """Through ``load_config`` (Hydra): NaN, inf, -1 and a wrong type (80 fields: ~40 s)."""
    values = ["nan", "inf", "abc"] + ["-1"] * (key not in NEGATIVE_ONE_IS_VALID)
    for value in values:
        with pytest.raises(ConfigError) as err:
            load_config("default", [f"{key}={value}"])
        message = str(err.value)
        assert key in message, f"{key}={value}: {message}"
        assert "\n" not in message


@pytest.mark.parametrize(
    "override",
    ["privacy.noise_multiplier=nan", "federation.num_es=true", "training.max_grad_norm=-1"],
)
def test_bad_overrides_fail_in_load_config_naming_the_field(override):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=re.escape(key)) as err:
        load_config("default", [override])
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("key", "value"),
    [("market.tx_power_dbm", "-1"), ("market.persistence", "-1"), ("market.noise_dbm", "-110")],
)
def test_negative_values_load_where_they_are_valid(key, value):
    cfg = load_config("default", [f"{key}={value}"])
    assert getattr(cfg.market, key.split(".")[1]) == float(value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("market.prior=[0.5,0.5]", "market.prior: must be a list of num_types = 3 numbers"),
        ("market.prior=[0.5,0.6,-0.1]", "market.prior: must be a probability vector"),
        ("market.prior=[0.2,0.2,0.2]", "market.prior: must be a probability vector"),
        ("market.prior=[nan,0.5,0.5]", "market.prior: must be a probability vector"),
        ("market.prior=[a,b,c]", "market.prior=.*could not be converted to Float"),
        ("market.types=[1,2]", "market.types: must be a list of num_types = 3 numbers"),
        ("market.types=[3,2,1]", "market.types: must be strictly increasing"),
        ("market.types=[-1,1,2]", "market.types: every type must be > 0"),
        ("market.types=[1,2,inf]", "market.types: every entry must be finite"),
        (
            "market.transition=[[1.0,0.0,0.0],[0.0,1.0,0.0]]",
            "market.transition: must be a list of num_types = 3 rows",
        ),
        (
            "market.transition=[[1.0,0.0],[0.0,1.0],[0.0,1.0]]",
            r"market.transition\[0\]: must be a list of num_types = 3 numbers",
        ),
        (
            "market.transition=[[0.5,0.6,0.0],[1.0,0.0,0.0],[0.0,0.0,1.0]]",
            "market.transition: must be row-stochastic",
        ),
        (
            "market.transition=[[1.5,-0.5,0.0],[1.0,0.0,0.0],[0.0,0.0,1.0]]",
            "market.transition: must be row-stochastic",
        ),
        (
            "market.transition=[[nan,0.0,1.0],[1.0,0.0,0.0],[0.0,0.0,1.0]]",
            "market.transition: every entry must be finite",
        ),
        ("market.t_max_s=0.01", "market.f_max_ghz: the latency bound t_max_s needs f >="),
        ("incentive.channel_gain_spread_db=200", "incentive.channel_gain_spread_db: the simul"),
    ],
)
def test_market_lists_and_the_market_they_build_are_checked_at_load(override, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_config("default", [override])
    assert "\n" not in str(err.value)


def test_a_valid_market_list_override_loads_and_builds_that_market():
    cfg = load_config(
        "default",
        [
            "market.types=[0.5,1.0,3.0]",
            "market.prior=[0.2,0.3,0.5]",
            "market.transition=[[0.0,0.5,0.5],[1.0,0.0,0.0],[0.25,0.25,0.5]]",
        ],
    )
    assert cfg.market.types == [0.5, 1.0, 3.0] and cfg.market.prior == [0.2, 0.3, 0.5]
    assert cfg.market.transition[2] == [0.25, 0.25, 0.5]


def _flag_fields() -> list[str]:
    """Dotted key of every ``bool`` field of a group of ``ExperimentConfig``."""
    found = []
    for group, cls in typing.get_type_hints(ExperimentConfig).items():
        if dataclasses.is_dataclass(cls):
            hints = typing.get_type_hints(cls)
            found += [f"{group}.{f.name}" for f in dataclasses.fields(cls) if hints[f.name] is bool]
    return found


FLAGS = _flag_fields()


def test_the_walk_finds_the_flags_of_every_group():
    assert {"model.train_lm_head", "screening.quality_clause", "privacy.enabled"} <= set(FLAGS)
    assert {"federation.fold_offers", "incentive.exclusion", "agent.merged"} <= set(FLAGS)


@pytest.mark.parametrize("key", FLAGS)
def test_every_flag_refuses_anything_but_true_or_false_on_construction(key):
    """A manifest's ``"no"`` (or a 0, a 1, a null) builds no config, naming the field."""
    for value in ("no", "false", 0, 1, None):
        with pytest.raises(ValueError, match=re.escape(f"{key} must be true or false")):
            _group_class(key)(**{key.split(".")[-1]: value})
    for value in (True, False):
        assert (
            getattr(_group_class(key)(**{key.split(".")[-1]: value}), key.split(".")[-1]) is value
        )


@pytest.mark.parametrize(
    ("build", "key"),
    [
        (lambda: PrivacyConfig(noise_multiplier="1.0"), "privacy.noise_multiplier"),
        (lambda: PrivacyConfig(clipping_norm=True), "privacy.clipping_norm"),
        (lambda: IncentiveConfig(flat_fee=math.nan), "incentive.flat_fee"),
        (lambda: IncentiveConfig(max_offers_per_round=2.0), "incentive.max_offers_per_round"),
        (lambda: ScreeningConfig(high_norm_ratio=math.inf), "screening.high_norm_ratio"),
        (lambda: MarketParams(prior=["a", "b", "c"]), "market.prior"),
        (lambda: MarketParams(types=[0.5, True, 2.0]), "market.types"),
        (lambda: ModelConfig(num_kv_heads=[2]), "model.num_kv_heads"),
        (lambda: ModelConfig(lora_dropout=[0.1]), "model.lora_dropout"),
        (lambda: FederationConfig(client_gpus=[]), "federation.client_gpus"),
        (lambda: DataConfig(tasks=5), "data.tasks"),
        (lambda: DataConfig(tasks="decide"), "data.tasks"),
        (lambda: AgentConfig(module_name=0.0), "agent.module_name"),
    ],
)
def test_direct_construction_refuses_wrong_types_too(build, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        build()


@pytest.mark.parametrize(
    ("value", "kwargs", "message"),
    [
        (math.nan, {"low": 0}, "x must be a finite number >= 0, got nan"),
        (-math.inf, {}, "x must be a finite number, got -inf"),
        (1.0, {"low": 1, "ends": "(]"}, "x must be a finite number > 1, got 1.0"),
        (1.0, {"low": 0, "high": 1, "ends": "[)"}, r"x must be a finite number in \[0, 1\)"),
        (0, {"low": 1, "integer": True}, "x must be >= 1, got 0"),
        (2.0, {"low": 1, "integer": True}, "x must be an integer, got 2.0"),
        (True, {}, "x must be a number, got True"),
        ("1", {}, "x must be a number, got '1'"),
        (10**400, {"low": 0}, "x must be a finite number >= 0, got 1000000000"),
        (
            2**64,
            {"high": 2**64, "ends": "[)", "integer": True},
            r"x must be < 1.84467e\+19, got 18446744073709551616",
        ),
    ],
)
def test_check_number_states_the_rule_it_applies(value, kwargs, message):
    with pytest.raises(ValueError, match=f"^{message}"):
        check_number("x", value, **kwargs)


def test_check_number_accepts_values_at_closed_ends():
    check_number("x", 2**64 - 1, 0, 2**64, ends="[)", integer=True)  # not rounded to 2**64
    check_number("x", 0, 0, 1)
    check_number("x", 1.0, 0, 1, ends="(]")
    check_number("x", 3, 1, integer=True)


@pytest.mark.parametrize(
    ("text", "kwargs", "message"),
    [
        ("-1", {"low": 0, "integer": True}, "must be >= 0, got -1"),
        ("2.5", {"low": 0, "integer": True}, "must be an integer, got '2.5'"),
        ("nan", {"low": 0, "ends": "()"}, "must be a finite number > 0, got nan"),
        ("inf", {}, "must be a finite number, got inf"),
        ("abc", {}, "must be a number, got 'abc'"),
    ],
)
def test_number_option_refuses_what_check_number_refuses(text, kwargs, message):
    with pytest.raises(argparse.ArgumentTypeError, match=f"^{re.escape(message)}$"):
        number_option(**kwargs)(text)


def test_number_option_returns_the_parsed_number():
    assert number_option(0, integer=True)("7") == 7 and isinstance(number_option()("7"), float)
    assert number_option(0, ends="()")("1e-3") == 0.001
