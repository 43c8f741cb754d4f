"""Contract policies by name; shipped checkpoints are found also from a Flower app bundle."""

from __future__ import annotations

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
    contracts = policies.make_policy(IncentiveConfig(policy=name))(markets)
    assert len(contracts) == 2
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
    found = policies.shipped_checkpoint("edmsac")
    assert found.is_file() and found.name == "edmsac_federation.npz"
    monkeypatch.setattr(policies, "_installed_assets", lambda: None)
    with pytest.raises(FileNotFoundError, match="edmsac_federation.npz not found"):
        policies.shipped_checkpoint("edmsac")
