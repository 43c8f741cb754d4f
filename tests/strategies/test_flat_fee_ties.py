"""A tie between items reveals nothing: under a flat fee every type names the same item."""

from __future__ import annotations

from tests.strategies.test_contract_strategy import honest_updates, make_strategy, reply_for
from tests.strategies.test_contract_strategy import train_round as configure

FIELDS = ("node_id", "status", "item", "f_ghz", "reward_offered", "paid", "es_utility")


def _ledger_with_types(tmp_path, module, willingness: int) -> list[tuple]:
    """The ledger of one flat-fee round in which every ES has type ``willingness`` (a fee
    every type takes: at 3 GHz the least willing type's cost is below 300)."""
    strategy, grid = make_strategy(
        tmp_path / str(willingness), module, "incentive=fedavg_flat_fee incentive.flat_fee=300"
    )
    for context in grid.contexts.values():
        context.node_config["willingness-type"] = willingness
    messages, _ = configure(strategy, grid, module)
    updates = honest_updates(module, messages)
    strategy.aggregate_train(1, [reply_for(m, u) for m, u in zip(messages, updates, strict=True)])
    return [tuple(getattr(e, f) for f in FIELDS) for e in strategy.ledger.entries]


def test_the_ledger_is_the_same_for_every_type_under_a_flat_fee(tmp_path, smoke_module):
    ledgers = [_ledger_with_types(tmp_path, smoke_module, t) for t in (0, 1, 2)]
    assert ledgers[0] == ledgers[1] == ledgers[2]
    assert [row[1:3] for row in ledgers[0]] == [("paid", 0)] * 3
