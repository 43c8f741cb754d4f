"""Selection counts what choosing an ES costs, deferred pay included.

Under ex ante participation a period-1 item's reward is deferred (0 in period 1, ``R_i /
delta`` in each period-2 item after report i) and is owed only for period-1 work done, so
choosing an ES in period 1 costs its ``R_i`` (the model's period-1 terms) although its
period-1 reward reads 0; deferred pay already owed in period 2 is no cost of choosing.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from fed_agent.contracts import DynamicContract, Market, MarketParams
from strategies.contract_book import Engagement
from strategies.round_plan import Assignment, RoundPlan
from tests.strategies.test_contract_strategy import make_strategy, train_round

DEADLINE_ONE_PLACE = (
    "incentive=optimal incentive.exclusion=true incentive.selection=deadline "
    "federation.es_per_round=1"
)


def _plan(server_round: int, rounds_per_period: int) -> RoundPlan:
    return RoundPlan.begin(server_round, None, rounds_per_period, num_rounds=8)


def test_period_one_work_costs_its_share_of_the_deferred_pay_in_period_one_terms(
    tmp_path, smoke_module
):
    strategy, _ = make_strategy(tmp_path, smoke_module, "incentive.rounds_per_period=2")
    book = strategy.book
    market = Market.from_params(MarketParams())  # discount 0.5
    contract = DynamicContract(np.full(3, 2.0), np.zeros(3), np.full((3, 3), 2.0), np.ones((3, 3)))
    book.engagements[7] = Engagement(contract, market, "exact", deferred=np.array([0, 8.0, 20.0]))
    # item 2 owes 20 in period 2 for both period-1 rounds: 10 a round, worth 5 in period 1
    assert book.deferred_cost(_plan(1, 2), 7, 2) == pytest.approx(0.5 * 20.0 / 2)
    assert book.deferred_cost(_plan(3, 2), 7, 2) == 0.0  # period 2: nothing more is deferred
    assert book.deferred_cost(_plan(1, 2), 8, 2) == 0.0  # no engagement


def test_the_cost_of_choosing_adds_deferred_pay_and_leaves_out_what_is_owed_anyway():
    a = Assignment(1, 2.0, 30.0, 80.0, 4, 0.5, 6.0, 1.0, owed=12.0, deferred_cost=5.0)
    assert a.cost_of_choosing == pytest.approx(30.0 - 12.0 + 5.0)


def test_in_period_one_the_place_goes_to_the_largest_value_less_deferred_pay(
    tmp_path, smoke_module
):
    strategy, grid = make_strategy(tmp_path, smoke_module, DEADLINE_ONE_PLACE)
    train_round(strategy, grid, smoke_module)
    (chosen,) = strategy.plan.assignments
    a = strategy.plan.assignments[chosen]
    engagement = strategy.engagements[chosen]
    assert a.reward == 0.0  # deferred: the period-1 reward reads 0 ...
    owed = engagement.market.discount * engagement.deferred[a.item]
    assert a.cost_of_choosing == pytest.approx(owed) and owed > 0  # ... the cost does not
    surplus = {chosen: _surplus(a.chosen_because)}
    assert surplus[chosen] == pytest.approx(a.cloud_value - owed, abs=0.006)
    for entry in strategy.ledger.entries:
        if entry.status == "not_selected":
            e = strategy.engagements[entry.node_id]
            surplus[entry.node_id] = _surplus(entry.reason)
            expected = entry.cloud_value - e.market.discount * e.deferred[entry.item]
            assert surplus[entry.node_id] == pytest.approx(expected, abs=0.006)
    assert len(surplus) >= 2 and max(surplus, key=surplus.get) == chosen


def _surplus(reason: str) -> float:
    """The surplus a selection reason names."""
    return float(re.search(r"surplus (-?[\d.]+)", reason)[1])
