"""Contract policies by name; shipped checkpoints are found also from a Flower app bundle."""

from __future__ import annotations

import re

import numpy as np
import pytest

from fed_agent.contracts import audit, named_market
from fed_agent.incentives import policies
from fed_agent.incentives.config import IncentiveConfig


def test_flat_fee_is_one_item_for_everyone_in_both_periods():
    contract = policies.flat_fee_contract(named_market("default"), 3.0, 35.0)
    assert np.all(contract.f1 == 3.0) and np.all(contract.r2 == 35.0)
    assert contract.f2.shape == (3, 3)


@pytest.mark.parametrize("name", ["optimal", "static", "uniform", "complete_information"])
def test_reference_policies_design_feasible_menus_in_one_call(name):
    markets = [named_market("default"), named_market("default", participation="ex_ante")]
    offers = policies.make_policy(IncentiveConfig(policy=name), 3)(markets)
    contracts = offers.contracts
    assert len(contracts) == 2 and None not in contracts
    if name != "complete_information":  # the oracle is IR only, not IC
        assert all(audit(c, m) == [] for c, m in zip(contracts, markets, strict=True))


def test_unknown_policy_lists_the_choices():
    with pytest.raises(ValueError, match="valid choices"):
        IncentiveConfig(policy="bribe")


def test_checkpoint_is_found_in_the_installation_when_missing_beside_the_code(
    tmp_path, monkeypatch
):
    # a Flower app bundle carries only source and text files: no .npz next to the code
    monkeypatch.setattr(policies, "ASSETS", tmp_path)
    found = policies.shipped_checkpoint("edmsac", 3)
    assert found.is_file() and found.name == "edmsac_federation_k3.npz"
    monkeypatch.setattr(policies, "_installed_assets", lambda: None)
    with pytest.raises(FileNotFoundError, match="edmsac_federation_k3.npz not found"):
        policies.shipped_checkpoint("edmsac", 3)


def test_a_k_without_a_checkpoint_fails_at_config_time_naming_the_shipped_ones():
    from fed_agent.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"K = 7 .*shipped K values: \[3, 5\].*--num-types 7"):
        load_config("default", "market.num_types=7")
    assert load_config("default", "market.num_types=5").market.num_types == 5


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("market.kappa=-1", "kappa: must be in (0, inf)"),
        ("market.discount=1.5", "discount: must be in [0, 1]"),
        ("market.persistence=2", "persistence: must be in [-1, 1]"),
        ("market.num_types=50", "num_types: must be an integer in [2, 10]"),
        ("market.f_max_ghz=0.5", "f_max_ghz: must be > f_min_ghz"),
        ("market.participation=sometimes", "participation: unknown value"),
    ],
)
def test_a_market_outside_its_domain_fails_when_the_config_loads(override, field):
    from fed_agent.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=re.escape(field)):
        load_config("default", override)
