"""Straggler-aware recruitment in the strategy.

Under the ``deadline`` rule a designed contract's every item meets the round's deadline (the
contract is designed on the market with f >= W / (D - S/r)); an ES that cannot meet it even at
f_max gets no offer; the flat fee's fixed effort is not designed, so its stragglers are simply
not chosen and not paid. The ledger says why each ES is in or out.
"""

from __future__ import annotations

import numpy as np

from fed_agent.config import load_config
from fed_agent.incentives.profiles import (
    DEADLINE_MARGIN,
    PublicFacts,
    deadline_market,
    es_market,
)
from tests.strategies.test_contract_strategy import (
    honest_updates,
    make_strategy,
    reply_for,
    train_round,
)


def _latencies(tmp_path, module, overrides: str) -> dict[int, float]:
    """Each ES's modelled latency of the item it takes under plain surplus selection."""
    probe, grid = make_strategy(tmp_path, module, overrides)
    train_round(probe, grid, module)
    return {node: a.modelled_latency_s for node, a in probe.plan.assignments.items()}


def _run_round(strategy, grid, module):
    messages, _ = train_round(strategy, grid, module)
    replies = [
        reply_for(m, u) for m, u in zip(messages, honest_updates(module, messages), strict=True)
    ]
    strategy.aggregate_train(1, replies)
    return messages, {e.node_id: e for e in strategy.ledger.entries}


def _straggler(latency: dict[int, float]) -> tuple[int, float]:
    """The slowest ES and a deadline halfway between it and the next slowest."""
    slowest = max(latency, key=latency.get)
    return slowest, (max(latency.values()) + sorted(latency.values())[-2]) / 2


def _deadline_round(tmp_path, module, policy: str, deadline: float):
    """One round of ``policy`` under the deadline rule: the strategy, its TRAIN messages and
    its ledger rows by node."""
    strategy, grid = make_strategy(
        tmp_path,
        module,
        f"incentive={policy} incentive.selection=deadline incentive.deadline_s={deadline}",
    )
    messages, entries = _run_round(strategy, grid, module)
    return strategy, messages, entries


def test_designed_contracts_meet_the_deadline_so_the_straggler_speeds_up_and_is_paid(
    tmp_path, smoke_module
):
    latency = _latencies(tmp_path / "probe", smoke_module, "incentive=optimal")
    slowest, deadline = _straggler(latency)
    strategy, messages, entries = _deadline_round(
        tmp_path / "run", smoke_module, "optimal", deadline
    )
    assert slowest in {m.metadata.dst_node_id for m in messages}
    for engagement in strategy.engagements.values():
        market = engagement.market
        # every item of both periods meets the deadline, not only the one chosen
        items = np.concatenate([engagement.contract.f1, engagement.contract.f2.ravel()])
        assert np.all(market.workload_gcycles / items + market.upload_s <= deadline)
    straggler = entries[slowest]
    assert straggler.status == "paid"  # its work is accepted (ex ante: pay may be held back)
    assert straggler.modelled_latency_s <= deadline < latency[slowest]
    assert all(e.status == "paid" for e in entries.values())
    assert strategy.outputs.rows[-1]["round_latency_model_s"] <= deadline


def test_an_es_that_cannot_meet_the_deadline_at_f_max_gets_no_offer(tmp_path, smoke_module):
    probe, grid = make_strategy(tmp_path / "probe", smoke_module, "incentive=optimal")
    train_round(probe, grid, smoke_module)  # learns the ESs' public facts
    fastest = {}  # the least latency each ES can reach: f = f_max
    for node, facts in probe.facts.items():
        market = es_market(probe.cfg.market, facts, smoke_module.adapter_bytes, None)
        fastest[node] = market.workload_gcycles / market.f_max_ghz + market.upload_s
    slowest = max(fastest, key=fastest.get)
    deadline = 0.999 * fastest[slowest]
    assert sorted(fastest.values())[-2] < deadline
    _, messages, entries = _deadline_round(tmp_path / "run", smoke_module, "optimal", deadline)
    assert slowest not in {m.metadata.dst_node_id for m in messages}
    assert entries[slowest].status == "no_offer" and entries[slowest].paid == 0.0
    assert entries[slowest].offer_source == "no_offer"
    assert f"cannot meet the round's deadline of {deadline:g} s" in entries[slowest].reason
    # the others can meet it: offered (the guard may still withdraw a loss-making contract)
    others = [e for node, e in entries.items() if node != slowest]
    assert not any("deadline" in e.reason for e in others if e.status == "no_offer")
    assert any(e.status == "paid" for e in others)


def test_a_flat_fee_straggler_misses_the_deadline_and_is_not_chosen_nor_paid(
    tmp_path, smoke_module
):
    latency = _latencies(tmp_path / "probe", smoke_module, "incentive=fedavg_flat_fee")
    slowest, deadline = _straggler(latency)
    strategy, messages, entries = _deadline_round(
        tmp_path / "run", smoke_module, "fedavg_flat_fee", deadline
    )
    assert slowest not in {m.metadata.dst_node_id for m in messages}
    straggler = entries[slowest]
    assert straggler.status == "not_selected" and straggler.paid == 0.0
    assert f"misses the deadline {deadline:.2f} s" in straggler.reason
    assert straggler.modelled_latency_s == latency[slowest]
    for node in latency:  # the other accepting ESs meet it
        if node != slowest:
            assert entries[node].status == "paid" and entries[node].reason.startswith("chosen:")
    row = strategy.outputs.rows[-1]
    assert row["round_deadline_s"] == deadline
    assert row["round_latency_model_s"] <= deadline


def test_the_deadline_market_raises_f_just_enough_and_refuses_the_impossible():
    cfg = load_config("smoke")
    market = es_market(cfg.market, PublicFacts(20.0, cfg.market.channel_gain), 2e6, None)
    upload = market.upload_s
    # loose deadline: the market is unchanged
    assert deadline_market(market, market.workload_gcycles / market.f_lower_ghz + upload + 1) is (
        market
    )
    # binding deadline: f_min becomes W / (D - S/r), the rest of the market is kept
    deadline = market.workload_gcycles / 4.0 + upload
    tight = deadline_market(market, deadline)
    assert np.isclose(tight.f_min_ghz, 4.0 * (1 + DEADLINE_MARGIN), rtol=1e-12)
    assert market.workload_gcycles / tight.f_lower_ghz + upload <= deadline
    assert np.array_equal(tight.transition, market.transition) and tight.omega == market.omega
    # impossible: even f_max misses it, or the upload alone does
    assert deadline_market(market, market.workload_gcycles / market.f_max_ghz + upload) is None
    assert deadline_market(market, upload) is None
