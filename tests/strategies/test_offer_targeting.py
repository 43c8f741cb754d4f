"""Targeted offers (``incentive.offer_targeting=surplus``): with fewer offers than connected
ESs, the offers go to the ESs whose work the cloud expects to be worth most, judged from their
public facts and the cloud's belief; central DP then claims no amplification by sampling."""

from __future__ import annotations

import numpy as np
import pytest

from fed_agent.config import load_config
from fed_agent.contracts import Market, complete_information, value_of_work
from fed_agent.privacy import PrivacyConfig, offer_sampling_rate
from fed_agent.protocol import PHASE, PUBLIC_FACTS
from strategies.privacy import ValidatedCentralDP
from tests.strategies.test_contract_strategy import NODES, make_strategy, train_round


def _expected_surplus(market) -> float:
    """The prior-weighted surplus of each type's efficient item, the exit where it loses."""
    contract = complete_information(market, exclusion=True).contract
    surplus = np.maximum(value_of_work(contract.f1, market) - contract.r1, 0.0)
    return float(surplus @ market.prior)


def _offered(strategy) -> set[int]:
    """The ESs the round made contracts for."""
    return set(strategy.engagements)


def _facts_asked(grid) -> list[int]:
    return [
        m.metadata.dst_node_id
        for m in grid.sent
        if m.content.config_records.get("config", {}).get(PHASE) == PUBLIC_FACTS
    ]


@pytest.mark.parametrize("selection", ["surplus", "deadline"])
def test_targeted_offers_go_to_the_es_worth_most_and_every_es_is_asked_once(
    tmp_path, smoke_module, selection
):
    deadline = "incentive.deadline_s=30" if selection == "deadline" else ""
    overrides = (
        f"incentive=optimal incentive.selection={selection} {deadline} "
        "incentive.max_offers_per_round=1 incentive.offer_targeting=surplus"
    )
    strategy, grid = make_strategy(tmp_path, smoke_module, overrides)
    train_round(strategy, grid, smoke_module)
    recruiter = strategy.recruiter
    assert sorted(_facts_asked(grid)) == sorted(NODES)  # every connected ES, once
    prior = Market.from_params(strategy.cfg.market).prior  # the belief before any choice
    worth = {n: _expected_surplus(recruiter.market_of(n, prior)) for n in NODES}
    assert len(set(np.round(list(worth.values()), 6))) == len(NODES)  # no tie to break
    assert _offered(strategy) == {max(worth, key=worth.get)}


def test_uniform_offers_ask_only_the_sampled_es(tmp_path, smoke_module):
    overrides = "incentive=optimal incentive.max_offers_per_round=1"
    strategy, grid = make_strategy(tmp_path, smoke_module, overrides)
    train_round(strategy, grid, smoke_module)
    assert _facts_asked(grid) == list(_offered(strategy))


def test_targeted_offers_are_accounted_without_amplification(tmp_path, smoke_module):
    overrides = "incentive=optimal incentive.max_offers_per_round=1"
    privacy = PrivacyConfig(enabled=True)
    uniform, _ = make_strategy(tmp_path / "u", smoke_module, overrides, weighting="uniform")
    targeted, _ = make_strategy(
        tmp_path / "t",
        smoke_module,
        f"{overrides} incentive.offer_targeting=surplus",
        weighting="uniform",
    )
    min_available = uniform.cfg.federation.min_available_es
    assert ValidatedCentralDP(uniform, privacy).sampling_rate == pytest.approx(1 / min_available)
    assert ValidatedCentralDP(targeted, privacy).sampling_rate == 1.0
    assert offer_sampling_rate(3, 12, targeted=True) == 1.0


def test_an_unknown_targeting_is_refused_at_load():
    with pytest.raises(ValueError, match="offer_targeting"):
        load_config("smoke", "incentive.offer_targeting=best")
