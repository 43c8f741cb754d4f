"""The pre-run check that a policy can design a contract on the configured market."""

from __future__ import annotations

import pytest
import torch

from fed_agent.config import load_config
from fed_agent.contracts import Market
from fed_agent.incentives.policies import check_designable, make_policy


def _policy_and_market(*overrides: str):
    cfg = load_config("default", list(overrides))
    policy = make_policy(cfg.incentive, cfg.market.num_types, cfg.market.commitment)
    return policy, Market.from_params(cfg.market)


def test_the_check_leaves_the_torch_rng_where_it_was() -> None:
    policy, market = _policy_and_market()
    torch.manual_seed(3)
    before = torch.get_rng_state()
    check_designable(policy, market)
    assert torch.equal(torch.get_rng_state(), before)
    # what the run draws next is what it drew without the check
    torch.manual_seed(3)
    expected = torch.randn(4)
    torch.manual_seed(3)
    check_designable(policy, market)
    assert torch.equal(torch.randn(4), expected)


@pytest.mark.parametrize("policy_name", ["edmsac", "optimal", "fedavg_flat_fee"])
def test_the_default_market_is_designable_by_every_kind_of_policy(policy_name) -> None:
    check_designable(*_policy_and_market(f"incentive={policy_name}"))


def test_a_flat_fee_needs_no_design_and_passes_any_scale() -> None:
    check_designable(*_policy_and_market("incentive=fedavg_flat_fee", "market.kappa=1e30"))


def test_an_unsolvable_market_is_one_line_naming_the_policy() -> None:
    policy, market = _policy_and_market("incentive=optimal", "market.kappa=1e-30")
    with pytest.raises(ValueError, match=r"^market: the optimal policy cannot design") as err:
        check_designable(policy, market)
    assert "\n" not in str(err.value) and "cutting-plane LP failed" in str(err.value)


@pytest.mark.parametrize("policy_name", ["edmsac", "optimal", "static", "complete_information"])
def test_a_market_the_solvers_overflow_on_is_refused(policy_name) -> None:
    # the designer's proposal at theta_max=1e308 came back with overflow warnings and a
    # contract worth 71 against the exact 103: an overflow is a failure of the design
    policy, market = _policy_and_market(f"incentive={policy_name}", "market.theta_max=1e308")
    with pytest.raises(ValueError, match=rf"^market: the {policy_name} policy .*overflow"):
        check_designable(policy, market)


@pytest.mark.parametrize("experiment", ["default", "smoke", "digits", "vlm"])
@pytest.mark.parametrize("market", [None, "paper", "persistent"])
def test_every_shipped_market_passes_the_overflow_check(experiment, market) -> None:
    cfg = load_config(experiment, [] if market is None else [f"market={market}"])
    if cfg.incentive.policy in ("none",):
        pytest.skip("no contracts to design")
    policy = make_policy(cfg.incentive, cfg.market.num_types, cfg.market.commitment)
    check_designable(policy, Market.from_params(cfg.market))
