"""Contract policies by name; shipped checkpoints are found also from a Flower app bundle."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from fed_agent.contracts import DynamicContract, audit, named_market, optimal_contract
from fed_agent.incentives import policies
from fed_agent.incentives.config import IncentiveConfig
from fed_agent.incentives.guard import EXACT, FALLBACK


def test_flat_fee_is_one_item_for_everyone_in_both_periods():
    contract = policies.flat_fee_contract(named_market("default"), 3.0, 35.0)
    assert np.all(contract.f1 == 3.0) and np.all(contract.r2 == 35.0)
    assert contract.f2.shape == (3, 3)


@pytest.mark.parametrize("name", ["optimal", "static", "uniform", "complete_information"])
def test_reference_policies_design_feasible_menus_in_one_call(name):
    markets = [named_market("default"), named_market("default", participation="ex_ante")]
    offers = policies.make_policy(IncentiveConfig(policy=name), 3, "full")(markets)
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
        ("market.commitment=sometimes", "market.commitment: unknown value 'sometimes'"),
    ],
)
def test_a_market_outside_its_domain_fails_when_the_config_loads(override, field):
    from fed_agent.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=re.escape(field)):
        load_config("default", override)


def _unimplementable(market):
    """Period-2 menus that fall with the type, paid nothing: breaks IR and IC."""
    k = market.num_types
    f2 = np.tile(np.linspace(market.f_max_ghz, market.f_lower_ghz, k), (k, 1))
    return DynamicContract(np.full(k, market.f_lower_ghz), np.zeros(k), f2, np.zeros((k, k)))


def test_a_learned_policy_is_trusted_only_on_markets_its_designer_covers():
    policy = policies.make_policy(IncentiveConfig(policy="edmsac"), 3, "full")
    inside = named_market("default")
    outside = inside.replace(discount=0.9)  # the shipped designer was trained at delta 0.5
    assert policy.covers([inside, outside]).tolist() == [True, False]
    bad = dataclasses.replace(policy, design=lambda ms: [_unimplementable(m) for m in ms])
    offers = bad([inside, outside])
    # inside: the proposal is refused for the pooling reference, with no exact solve; outside
    # the guard solves the market and offers the exact optimum
    assert offers.sources == [FALLBACK, EXACT] and offers.exact_solves == 1
    assert offers.cloud_utility[1] == pytest.approx(optimal_contract(outside).cloud_utility)
    assert offers.cloud_utility[0] < optimal_contract(inside).cloud_utility - 1
    # a deadline's floor on f is outside every designer's training: solved exactly too
    assert bad([inside], deadline=True).sources == [EXACT]


def test_with_exclusion_a_learned_policy_offers_the_exit_where_it_pays():
    # the default market with a deadline: the least willing type cannot meet it profitably
    market = named_market("default").replace(f_min_ghz=3.1)
    policy = policies.make_policy(IncentiveConfig(policy="edmsac", exclusion=True), 3, "full")
    excluding = optimal_contract(market, exclusion=True)
    assert excluding.cloud_utility > optimal_contract(market).cloud_utility + 1
    offers = policy([market], deadline=True)
    assert offers.sources == [EXACT]
    assert offers.cloud_utility[0] == pytest.approx(excluding.cloud_utility)
    assert offers.contracts[0].f1[0] == 0.0  # type 0 takes the exit in period 1


def test_under_renegotiation_proof_a_learned_policy_designs_nothing():
    from fed_agent.config import load_config
    from fed_agent.contracts import renegotiation_proof_contract

    cfg = load_config("default", "market.commitment=renegotiation_proof")
    assert cfg.market.commitment == "renegotiation_proof"
    assert load_config("default").market.commitment == "full"
    policy = policies.make_policy(IncentiveConfig(policy="edmsac"), 3, cfg.market.commitment)

    def refuse(markets):
        raise AssertionError("the designer is not asked under renegotiation_proof")

    market = named_market("default")
    offers = dataclasses.replace(policy, design=refuse)([market])
    assert offers.sources == [EXACT]
    assert offers.cloud_utility[0] == pytest.approx(
        renegotiation_proof_contract(market).cloud_utility
    )
    with pytest.raises(ValueError, match="market.commitment: unknown value"):
        policies.make_policy(IncentiveConfig(policy="optimal"), 3, "sometimes")
