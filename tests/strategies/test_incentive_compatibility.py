"""On the ledger of a contract round, an ES that lies about its type gains nothing."""

from __future__ import annotations

import pytest

from fed_agent.contracts import Market, es_utility
from fed_agent.incentives.profiles import simulated_profiles
from tests.strategies.test_contract_strategy import (
    NODES,
    honest_updates,
    make_strategy,
    reply_for,
    train_round,
)


@pytest.mark.parametrize("policy", ["optimal", "edmsac"])
def test_reported_items_are_truthful_and_no_lie_pays_more(tmp_path, smoke_module, policy):
    strategy, grid = make_strategy(tmp_path, smoke_module, f"incentive={policy}")
    messages, _ = train_round(strategy, grid, smoke_module)
    cfg = strategy.cfg
    true_types = {}
    for partition, node in enumerate(NODES):
        engagement = strategy.engagements[node]
        market: Market = engagement.market
        _, private = simulated_profiles(cfg.seed, partition, cfg.market, cfg.incentive)
        true_type = private.type_at(market, 0)
        # the ES's choice (the item on its ledger row) is its true type ...
        assert engagement.report == true_type
        # ... because every lie would give it at most the same expected epoch utility
        truthful = es_utility(engagement.contract, market, true_type, true_type)
        for lie in range(market.num_types):
            assert es_utility(engagement.contract, market, true_type, lie) <= truthful + 1e-6
        true_types[node] = true_type
    strategy.aggregate_train(
        1,
        [
            reply_for(m, u)
            for m, u in zip(messages, honest_updates(smoke_module, messages), strict=True)
        ],
    )
    paid = {e.node_id: e.item for e in strategy.ledger.entries if e.status == "paid"}
    assert paid == true_types  # every ES was paid for the item of its true type
