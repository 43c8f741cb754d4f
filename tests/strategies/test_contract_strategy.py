"""ContractStrategy on a fake grid whose QUERYs reach the real ClientApp handlers."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

from fed_agent.config import load_config
from fed_agent.contracts import DynamicContract, cloud_utility, value_of_work
from fed_agent.data.partition import es_examples
from fed_agent.incentives.guard import FALLBACK, NO_OFFER
from fed_agent.incentives.ledger import Ledger
from fed_agent.incentives.policies import ContractPolicy, make_policy
from fed_agent.modules.training import train_locally
from fed_agent.outputs import RunOutputs
from fed_agent.protocol import (
    ARRAYS,
    CONFIG,
    DECLINE,
    METRICS,
    TrainInstruction,
    TrainOffer,
    TrainReply,
    train_request,
)
from fed_agent.seeding import derive_seed
from strategies.contract_strategy import ContractStrategy
from strategies.records import adapter_to_record, record_to_adapter
from tests.strategies.fake_grid import FakeGrid, choose_item, metadata, set_task_identity

NODES = [101, 102, 103]


def make_strategy(tmp_path, module, overrides: str, fold: bool = False, **settings):
    """A strategy on the smoke config; ``fold`` False keeps offers and TRAIN apart (the
    two-message round most tests here inspect), True is the config's own default."""
    if not fold:
        overrides = f"{overrides} federation.fold_offers=false"
    cfg = load_config("smoke", overrides)
    outputs = RunOutputs.create(str(tmp_path), "run")
    ledger = Ledger(outputs.root / "ledger.csv")
    policy = make_policy(cfg.incentive, cfg.market.num_types, cfg.market.commitment)
    strategy = ContractStrategy(cfg, module, outputs, policy, ledger, **settings)
    return strategy, FakeGrid(NODES, "smoke", overrides)


def train_round(strategy, grid, module, server_round=1):
    set_task_identity(0)
    arrays = adapter_to_record(module.initial_state)
    messages = list(strategy.configure_train(server_round, arrays, ConfigRecord(), grid))
    return messages, arrays


def instruction_of(message: Message) -> TrainInstruction | None:
    """What the destination ES does for a TRAIN message: the instruction, or for a train offer
    the instruction of the item it picks (None when it declines or takes the exit item)."""
    request = train_request(message.content[CONFIG])
    if isinstance(request, TrainOffer):
        item = choose_item(message)
        idle = item == DECLINE or request.offer.is_exit(item)
        return None if idle else request.instruction(item)
    return request


def reply_for(message: Message, adapter: dict, steps: int | None = None) -> Message:
    """A TRAIN reply from the message's destination, doing exactly the instructed work (a
    decline, without arrays, when it declines a train offer)."""
    node = message.metadata.dst_node_id
    instruction = instruction_of(message)
    if instruction is None:
        request = TrainOffer.from_dict(message.content[CONFIG])
        declined = TrainReply(0, float("nan"), 0, 0.0, request.offer.server_round, request.nonce)
        content = RecordDict({METRICS: MetricRecord(declined.to_dict())})
        return Message(content, metadata=metadata(node, 0, "train"))
    steps = steps or instruction.local_steps
    metrics = TrainReply(
        32, 1.0, steps, 0.5, instruction.server_round, instruction.nonce, instruction.item
    ).to_dict()
    return Message(
        RecordDict({ARRAYS: adapter_to_record(adapter), METRICS: MetricRecord(metrics)}),
        metadata=metadata(node, 0, "train"),
    )


def honest_updates(module, messages, seed=0):
    """What honest ESs send back: each TRAIN message's module trained for the instructed steps
    on an ES's own data (the i-th message's ES holds partition i), as the ClientApp does; the
    module unchanged for an ES that declines a train offer."""
    cfg = load_config("smoke")
    updates = []
    for i, message in enumerate(messages):
        module.load_adapter(record_to_adapter(message.content[ARRAYS]))
        instruction = instruction_of(message)
        if instruction is not None:
            examples = es_examples(cfg.data, cfg.seed, i)
            seed_i = derive_seed(seed, "honest-es", i)
            train_locally(module, examples, cfg.training, instruction.local_steps, seed_i)
        updates.append(module.adapter_state())
    return updates


def test_each_chosen_es_trains_on_the_item_it_picked_from_its_own_menu(tmp_path, smoke_module):
    strategy, grid = make_strategy(tmp_path, smoke_module, "incentive=optimal")
    messages, _ = train_round(strategy, grid, smoke_module)
    assert sorted(m.metadata.dst_node_id for m in messages) == NODES
    menus = {n: tuple(strategy.engagements[n].contract.f1) for n in NODES}
    assert len(set(menus.values())) == 3  # different public workloads -> different menus
    for message in messages:
        node = message.metadata.dst_node_id
        instruction = TrainInstruction.from_dict(message.content[CONFIG])
        engagement = strategy.engagements[node]
        item = engagement.report
        assert instruction.f_ghz == pytest.approx(engagement.contract.f1[item])
        assert instruction.reward == pytest.approx(engagement.contract.r1[item])
        expected_steps = max(1, round(4 * instruction.f_ghz / 5.0))  # smoke: 4 steps at f_max
        assert instruction.local_steps == expected_steps
        assert (
            record_to_adapter(message.content[ARRAYS]).keys() == smoke_module.initial_state.keys()
        )


def test_a_fee_below_every_cost_recruits_nobody(tmp_path, smoke_module):
    strategy, grid = make_strategy(
        tmp_path, smoke_module, "incentive=fedavg_flat_fee incentive.flat_fee=0.5"
    )
    messages, _ = train_round(strategy, grid, smoke_module)
    assert messages == []
    assert [e.status for e in strategy.ledger.entries] == ["declined"] * 3
    # an all-declined round keeps the module and pays nothing
    arrays, metrics = strategy.aggregate_train(1, [])
    assert arrays is None and metrics["participants"] == 0
    assert strategy.outputs.rows[-1]["payments"] == 0.0


def test_participant_limit_keeps_the_largest_cloud_surplus(tmp_path, smoke_module):
    strategy, grid = make_strategy(
        tmp_path, smoke_module, "incentive=optimal federation.es_per_round=1"
    )
    messages, _ = train_round(strategy, grid, smoke_module)
    assert len(messages) == 1
    surplus = {}
    for node, engagement in strategy.engagements.items():
        item = engagement.report
        f, r = engagement.contract.f1[item], engagement.contract.r1[item]
        surplus[node] = float(value_of_work(f, engagement.market)) - r
    assert messages[0].metadata.dst_node_id == max(surplus, key=surplus.get)
    statuses = sorted(e.status for e in strategy.ledger.entries)
    assert statuses == ["not_selected", "not_selected"]


def test_aggregate_is_the_work_weighted_mean_and_accepted_work_is_paid(tmp_path, smoke_module):
    # complete information: its contracts pay (and so hold) in period 1, not deferred
    strategy, grid = make_strategy(tmp_path, smoke_module, "incentive=complete_information")
    messages, _ = train_round(strategy, grid, smoke_module)
    updates = honest_updates(smoke_module, messages)
    replies = [reply_for(m, u) for m, u in zip(messages, updates, strict=True)]
    arrays, metrics = strategy.aggregate_train(1, replies)
    steps = [TrainInstruction.from_dict(m.content[CONFIG]).local_steps for m in messages]
    w = np.array(steps, dtype=float) / sum(steps)
    merged = record_to_adapter(arrays)
    for key in merged:
        expected = sum(wi * u[key].astype(np.float64) for wi, u in zip(w, updates, strict=True))
        np.testing.assert_allclose(merged[key], expected, rtol=1e-5, atol=1e-7)
    paid = [e for e in strategy.ledger.entries if e.status == "paid"]
    assert len(paid) == 3 and metrics["participants"] == 3
    row = strategy.outputs.rows[-1]
    assert row["payments"] == pytest.approx(sum(e.reward_offered for e in paid))
    assert row["cloud_utility"] == pytest.approx(
        sum(e.cloud_value - e.reward_offered for e in paid)
    )
    # ex ante (the default market): period-1 pay waits for the period-2 work
    assert all(e.paid == 0 and e.held == e.reward_offered for e in paid)
    assert any(e.held > 0 for e in paid)
    assert row["cash_paid"] == 0.0 and row["held"] == pytest.approx(row["payments"])
    # the modelled latency is the cloud's own W / f + S / r, not a figure the ES reports
    latencies = []
    for e in paid:
        market = strategy.engagements[e.node_id].market
        latencies.append(market.workload_gcycles / e.f_ghz + market.upload_s)
        assert e.modelled_latency_s == pytest.approx(latencies[-1])
    assert row["round_latency_model_s"] == pytest.approx(max(latencies))
    assert (tmp_path / "run" / "ledger.csv").is_file()


def test_bad_or_lying_replies_are_neither_aggregated_nor_paid(tmp_path, smoke_module):
    strategy, grid = make_strategy(tmp_path, smoke_module, "incentive=optimal")
    messages, _ = train_round(strategy, grid, smoke_module)
    updates = honest_updates(smoke_module, messages)
    poisoned = {k: np.full_like(v, np.nan) for k, v in updates[0].items()}
    replies = [
        reply_for(messages[0], poisoned),
        reply_for(messages[1], updates[1], steps=1000),  # claims more work than asked
        reply_for(messages[2], updates[2]),
    ]
    arrays, _ = strategy.aggregate_train(1, replies)
    by_node = {e.node_id: e for e in strategy.ledger.entries}
    first, second, third = (m.metadata.dst_node_id for m in messages)
    assert by_node[first].status == "rejected" and "NaN" in by_node[first].reason
    assert by_node[second].status == "rejected" and "steps" in by_node[second].reason
    assert by_node[third].status == "paid"
    merged = record_to_adapter(arrays)
    assert all(np.allclose(merged[k], updates[2][k]) for k in merged)


def test_period_two_offers_go_to_period_one_participants_with_their_report(tmp_path, smoke_module):
    strategy, grid = make_strategy(tmp_path, smoke_module, "incentive=optimal")
    messages, _ = train_round(strategy, grid, smoke_module)
    strategy.aggregate_train(
        1,
        [
            reply_for(m, u)
            for m, u in zip(messages, honest_updates(smoke_module, messages), strict=True)
        ],
    )
    reports = {n: e.report for n, e in strategy.engagements.items()}
    messages2, _ = train_round(strategy, grid, smoke_module, server_round=2)
    assert {m.metadata.dst_node_id for m in messages2} <= set(reports)
    for message in messages2:
        node = message.metadata.dst_node_id
        instruction = TrainInstruction.from_dict(message.content[CONFIG])
        row = strategy.engagements[node].contract.f2[reports[node]]
        assert instruction.f_ghz in row
    # every type has an individually rational period-2 item, so all three stay
    assert len(messages2) == 3 and strategy.plan.period == 2
    # the model's objective counts period 1 in full and period 2 at the discount (0.5)
    row1 = strategy.outputs.rows[-1]
    assert row1["cloud_utility_discounted"] == row1["cloud_utility"] != 0
    replies2 = [
        reply_for(m, u)
        for m, u in zip(messages2, honest_updates(smoke_module, messages2), strict=True)
    ]
    strategy.aggregate_train(2, replies2)
    row2 = strategy.outputs.rows[-1]
    assert strategy.cfg.market.discount == 0.5 and row2["cloud_utility"] != 0
    assert row2["cloud_utility_discounted"] == pytest.approx(0.5 * row2["cloud_utility"])


def bad_policy(markets):
    """Top effort for everyone at five times the least willing type's cost."""
    contracts = []
    for market in markets:
        k, f = market.num_types, market.f_max_ghz
        reward = 5 * market.kappa * market.workload_gcycles * f * f / market.types[0]
        flat = np.full(k * (k + 1), f)
        contracts.append(DynamicContract.from_flat(flat, np.full(k * (k + 1), reward), k))
    return contracts


@pytest.mark.parametrize("name", ["edmsac", "my_policy"])
def test_a_loss_making_policy_never_makes_the_cloud_lose_money(tmp_path, smoke_module, name):
    # "edmsac" is trusted to price exactly (verified); "my_policy" is repriced from its f
    strategy, grid = make_strategy(tmp_path, smoke_module, "incentive=optimal")
    strategy.policy = ContractPolicy(name, bad_policy)
    messages, _ = train_round(strategy, grid, smoke_module)
    sources = {e.node_id: e.offer_source for e in strategy.ledger.entries}
    sources |= {n: e.source for n, e in strategy.engagements.items()}
    assert set(sources.values()) <= {FALLBACK, NO_OFFER} and sources
    for engagement in strategy.engagements.values():
        assert cloud_utility(engagement.contract, engagement.market) >= 0
    replies = [
        reply_for(m, u)
        for m, u in zip(messages, honest_updates(smoke_module, messages), strict=True)
    ]
    strategy.aggregate_train(1, replies)
    assert strategy.outputs.rows[-1]["cloud_utility"] >= 0
    assert strategy.outputs.rows[-1]["guard_s"] > 0


def test_a_committed_es_that_walks_away_in_period_two_forfeits_its_held_pay(tmp_path, smoke_module):
    strategy, grid = make_strategy(tmp_path, smoke_module, "incentive=complete_information")
    messages, _ = train_round(strategy, grid, smoke_module)
    strategy.aggregate_train(
        1,
        [
            reply_for(m, u)
            for m, u in zip(messages, honest_updates(smoke_module, messages), strict=True)
        ],
    )
    held = {e.node_id: e.held for e in strategy.ledger.entries if e.status == "paid"}
    assert len(held) == 3 and sum(held.values()) > 0
    messages2, _ = train_round(strategy, grid, smoke_module, server_round=2)
    assert len(messages2) == 3
    # the first ES dies before replying: it forfeits; the others are paid both periods
    strategy.aggregate_train(
        2,
        [
            reply_for(m, u)
            for m, u in zip(messages2[1:], honest_updates(smoke_module, messages2[1:]), strict=True)
        ],
    )
    period2 = {e.node_id: e for e in strategy.ledger.entries if e.round == 2}
    dead = messages2[0].metadata.dst_node_id
    assert period2[dead].status == "no_reply" and period2[dead].paid == 0.0
    assert period2[dead].forfeited == pytest.approx(held[dead])
    for message in messages2[1:]:
        entry = period2[message.metadata.dst_node_id]
        assert entry.status == "paid" and entry.released == pytest.approx(held[entry.node_id])
        assert entry.paid == pytest.approx(entry.reward_offered + held[entry.node_id])
    row = strategy.outputs.rows[-1]
    assert row["forfeited"] == pytest.approx(held[dead])


def test_a_flat_fee_commits_no_one_whatever_the_markets_rule(tmp_path, smoke_module):
    # the default market is ex ante, under which a flat fee would bind an ES to a period 2
    # in which it is likely loaded: offered round by round, the most willing take it
    strategy, grid = make_strategy(tmp_path, smoke_module, "incentive=fedavg_flat_fee")
    messages, _ = train_round(strategy, grid, smoke_module)
    assert all(e.market.participation == "per_period" for e in strategy.engagements.values())
    strategy.aggregate_train(
        1,
        [
            reply_for(m, u)
            for m, u in zip(messages, honest_updates(smoke_module, messages), strict=True)
        ],
    )
    assert all(e.held == 0.0 for e in strategy.ledger.entries)


def test_the_aggregate_does_not_depend_on_the_order_replies_arrive_in(tmp_path, smoke_module):
    """Parallel simulation workers finish in any order: the same replies give the same module
    to the last bit (the weighted mean accumulates in float64 before it is cast)."""
    merged = []
    for order in (slice(None), slice(None, None, -1)):
        strategy, grid = make_strategy(
            tmp_path / str(order.step), smoke_module, "incentive=optimal"
        )
        messages, _ = train_round(strategy, grid, smoke_module)
        updates = honest_updates(smoke_module, messages)
        replies = [reply_for(m, u) for m, u in zip(messages, updates, strict=True)]
        arrays, _ = strategy.aggregate_train(1, replies[order])
        merged.append(record_to_adapter(arrays))
    assert all(np.array_equal(merged[0][k], merged[1][k]) for k in merged[0])


def test_selection_counts_earlier_rounds_from_the_ledger(tmp_path, smoke_module):
    """With repeat_value, a round-2 candidate that was paid in round 1 is ranked with its
    value discounted once, and its reason says so (the count follows the ES to a new node id
    and a checkpoint restores it: tests/strategies/test_resume_boundaries.py)."""
    strategy, grid = make_strategy(
        tmp_path, smoke_module, "incentive=optimal incentive.repeat_value=0.5"
    )
    messages, _ = train_round(strategy, grid, smoke_module)
    updates = honest_updates(smoke_module, messages)
    strategy.aggregate_train(1, [reply_for(m, u) for m, u in zip(messages, updates, strict=True)])
    paid_in_1 = {e.node_id for e in strategy.ledger.entries if e.status == "paid"}
    assert paid_in_1
    train_round(strategy, grid, smoke_module, server_round=2)
    round2 = [e for e in strategy.ledger.entries if e.round == 2 and e.node_id in paid_in_1]
    chosen = [a for n, a in strategy.plan.assignments.items() if n in paid_in_1]
    reasons = [e.reason for e in round2] + [a.chosen_because for a in chosen]
    assert reasons and all("trained in 1 earlier rounds" in r for r in reasons)
