"""Straggler-aware selection in the strategy: who misses the deadline is neither chosen nor
paid, and the ledger says why each accepting ES is in or out."""

from __future__ import annotations

from tests.strategies.test_contract_strategy import (
    honest_updates,
    make_strategy,
    reply_for,
    train_round,
)


def test_an_es_whose_item_misses_the_deadline_is_not_chosen_and_not_paid(tmp_path, smoke_module):
    # learn the three ESs' modelled latencies under plain surplus selection first
    probe, grid = make_strategy(tmp_path / "probe", smoke_module, "incentive=optimal")
    train_round(probe, grid, smoke_module)
    latency = {a_node: a.modelled_latency_s for a_node, a in probe._assignments.items()}
    slowest = max(latency, key=latency.get)
    deadline = (max(latency.values()) + sorted(latency.values())[-2]) / 2

    strategy, grid = make_strategy(
        tmp_path / "run",
        smoke_module,
        f"incentive=optimal incentive.selection=deadline incentive.deadline_s={deadline}",
    )
    messages, _ = train_round(strategy, grid, smoke_module)
    assert slowest not in {m.metadata.dst_node_id for m in messages}
    replies = [
        reply_for(m, u)
        for m, u in zip(messages, honest_updates(smoke_module, messages), strict=True)
    ]
    strategy.aggregate_train(1, replies)
    entries = {e.node_id: e for e in strategy.ledger.entries}
    straggler = entries[slowest]
    assert straggler.status == "not_selected" and straggler.paid == 0.0
    assert f"misses the deadline {deadline:.2f} s" in straggler.reason
    assert straggler.modelled_latency_s == latency[slowest]
    for node, entry in entries.items():
        if node != slowest:
            assert entry.status == "paid" and entry.reason.startswith("chosen:")
    row = strategy.outputs.rows[-1]
    assert row["round_deadline_s"] == deadline
    assert row["round_latency_model_s"] <= deadline
