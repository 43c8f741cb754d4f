"""Exclusion in the federation: an ES that takes an exit item (f = 0) does no work.

It gets no TRAIN (or, on a train offer, replies without arrays), is paid nothing for work
and is recorded ``excluded``; beside it the ESs that take working items train and are paid as
always. Under ex ante participation the offered contract is deferred, so a period-2 exit
still carries the period-1 pay of the work the ES did in period 1, and it is paid.
"""

from __future__ import annotations

import pytest
from flwr.app import Message, MetricRecord, RecordDict

from clients.edge_server import EdgeServer
from fed_agent.config import config_from_run_config
from fed_agent.contracts import Market, optimal_contract
from fed_agent.incentives.profiles import WILLINGNESS_SEED, WILLINGNESS_TYPE, Willingness
from fed_agent.protocol import ARRAYS, CONFIG, METRICS, TrainOffer, TrainReply, train_request
from strategies.records import record_to_adapter
from tests.strategies.fake_grid import metadata
from tests.strategies.test_contract_strategy import (
    NODES,
    honest_updates,
    make_strategy,
    reply_for,
    train_round,
)

DEADLINE = "incentive=optimal incentive.exclusion=true incentive.selection=deadline"
"""The smoke market under its 6 s deadline: designed with exit items, the least willing
type is excluded in period 1 on every ES's market."""


def _willingness(market: Market, first: int, second: int) -> Willingness:
    """A private chain whose first two periods' types are ``first`` then ``second``."""
    for seed in range(1000):
        willingness = Willingness(first, seed)
        if willingness.type_at(market, 1) == second:
            return willingness
    raise AssertionError(f"no chain seed goes from type {first} to {second}")


def _set_types(grid, market: Market, paths: dict[int, tuple[int, int]]) -> None:
    for node, (first, second) in paths.items():
        willingness = _willingness(market, first, second)
        grid.contexts[node].node_config[WILLINGNESS_TYPE] = willingness.initial_type
        grid.contexts[node].node_config[WILLINGNESS_SEED] = willingness.chain_seed


def _round(strategy, grid, module, server_round):
    messages, _ = train_round(strategy, grid, module, server_round)
    updates = honest_updates(module, messages)
    replies = [reply_for(m, u) for m, u in zip(messages, updates, strict=True)]
    strategy.aggregate_train(server_round, replies)
    rows = {e.node_id: e for e in strategy.ledger.entries if e.round == server_round}
    return {m.metadata.dst_node_id for m in messages}, rows


def test_an_excluded_es_gets_no_train_and_no_pay_for_work_beside_honest_ones(
    tmp_path, smoke_module
):
    strategy, grid = make_strategy(tmp_path, smoke_module, DEADLINE)
    market = Market.from_params(strategy.cfg.market)
    # 101 is type 2, then type 0 (its period-2 exit); 102 is type 0, then type 2
    _set_types(grid, market, {NODES[0]: (2, 0), NODES[1]: (0, 2), NODES[2]: (2, 2)})

    trained, rows = _round(strategy, grid, smoke_module, 1)
    assert trained == {NODES[0], NODES[2]}
    excluded = rows[NODES[1]]
    assert (excluded.status, excluded.item, excluded.f_ghz) == ("excluded", 0, 0.0)
    assert excluded.paid == excluded.held == excluded.cloud_value == 0.0
    assert "1:0" in excluded.excluded_types and "exit item" in excluded.reason
    for node in (NODES[0], NODES[2]):  # the honest path beside it
        assert rows[node].status == "paid" and rows[node].f_ghz > 0
        assert rows[node].cloud_value > 0
    metrics = strategy.outputs.rows[-1]
    assert (metrics["participants"], metrics["excluded"]) == (2, 1)

    trained, rows = _round(strategy, grid, smoke_module, 2)
    assert NODES[0] not in trained and NODES[1] in trained  # excluded in period 1, works now
    gone, engagement = rows[NODES[0]], strategy.engagements[NODES[0]]
    report = engagement.report  # type 2 may report 1: the two share a period-1 item here
    assert (gone.status, gone.f_ghz) == ("excluded", 0.0)
    # its period-2 exit pays what the contract says: the deferred pay of its period-1 work,
    # R_i / delta of the designed (undeferred) optimum, as nothing was paid in period 1
    designed = optimal_contract(engagement.market, exclusion=True).contract
    owed = designed.r1[report] / engagement.market.discount
    assert owed > 1.0 and engagement.deferred[report] == pytest.approx(owed, rel=1e-9)
    assert gone.paid == pytest.approx(owed, rel=1e-6)
    assert gone.paid == engagement.contract.r2[report, gone.item]
    assert "deferred pay of its period-1 work" in gone.reason
    epoch = [e for e in strategy.ledger.entries if e.node_id == NODES[0]]
    assert sum(e.paid for e in epoch) == pytest.approx(owed, rel=1e-6)
    for node in NODES[1:]:  # chosen: paid its item; not chosen: paid its deferred pay only
        row, mine = rows[node], strategy.engagements[node]
        if row.status == "paid":
            assert node in trained and row.paid == pytest.approx(row.reward_offered)
        else:
            assert (row.status, node in trained) == ("not_selected", False)
            assert row.paid == pytest.approx(mine.deferred[mine.report]) and row.paid > 0
    # the round's payments count it; its work is worth nothing to the cloud this round
    metrics = strategy.outputs.rows[-1]
    assert metrics["payments"] == pytest.approx(sum(e.paid for e in rows.values()))
    worked = sum(e.cloud_value for e in rows.values() if e.status == "paid")
    assert metrics["cloud_utility"] == pytest.approx(worked - metrics["payments"])


def test_an_es_that_takes_the_exit_on_a_train_offer_replies_without_work_and_is_not_paid(
    tmp_path, smoke_module
):
    # a floor on f that the least willing type cannot meet profitably: it is excluded
    overrides = "incentive=optimal incentive.exclusion=true market.f_min_ghz=3.1"
    strategy, grid = make_strategy(tmp_path, smoke_module, overrides, fold=True)
    market = Market.from_params(strategy.cfg.market)
    _set_types(grid, market, {NODES[0]: (2, 2), NODES[1]: (0, 0), NODES[2]: (1, 1)})
    messages, _ = train_round(strategy, grid, smoke_module)
    assert {m.metadata.dst_node_id for m in messages} == set(NODES)  # offers ride on TRAIN
    replies = []
    for message, update in zip(messages, honest_updates(smoke_module, messages), strict=True):
        node = message.metadata.dst_node_id
        if node != NODES[1]:
            replies.append(reply_for(message, update))
            continue
        # the real ES answers its offer: the exit item, so no training and no arrays
        context = grid.contexts[node]
        es = EdgeServer.from_node_config(
            config_from_run_config(context.run_config), context.node_config
        )
        offer = train_request(message.content[CONFIG])
        assert isinstance(offer, TrainOffer) and offer.item_steps[0] == 0
        adapter, reply = es.respond(offer, record_to_adapter(message.content[ARRAYS]))
        assert adapter is None and reply.item == 0 and reply.train_steps == 0
        content = RecordDict({METRICS: MetricRecord(reply.to_dict())})
        replies.append(Message(content, metadata=metadata(node, 0, "train")))
    strategy.aggregate_train(1, replies)
    rows = {e.node_id: e for e in strategy.ledger.entries}
    assert rows[NODES[1]].status == "excluded" and rows[NODES[1]].paid == 0.0
    assert {rows[n].status for n in (NODES[0], NODES[2])} == {"paid"}
    metrics = strategy.outputs.rows[-1]
    assert (metrics["participants"], metrics["excluded"], metrics["ignored_replies"]) == (2, 1, 0)
    assert TrainReply.from_dict(dict(replies[1].content[METRICS])).train_steps == 0


def test_deferred_pay_is_owed_only_to_an_es_that_did_its_period_one_work(tmp_path, smoke_module):
    # one participant a round: in period 1 two of the three ESs that sign are not chosen
    overrides = "incentive=optimal federation.es_per_round=1"
    strategy, grid = make_strategy(tmp_path, smoke_module, overrides)
    _, first = _round(strategy, grid, smoke_module, 1)
    worked = {n for n, e in first.items() if e.status == "paid"}
    assert len(worked) == 1 and all(
        e.status == "not_selected" for n, e in first.items() if n not in worked
    )
    _, second = _round(strategy, grid, smoke_module, 2)
    withheld = []  # deferred pay not offered to ESs that did no period-1 work
    for node, row in second.items():
        engagement = strategy.engagements[node]
        deferred = engagement.deferred[engagement.report]
        assert engagement.worked == (node in worked)
        if node not in worked:
            withheld.append(deferred)
        if row.status == "paid":
            item_pay = engagement.contract.r2[engagement.report, row.item]
            expected = item_pay if node in worked else item_pay - deferred
            assert row.reward_offered == pytest.approx(expected) and row.paid > 0
        elif row.status == "not_selected":  # paid only what earlier work earned
            assert row.paid == pytest.approx(deferred if node in worked else 0.0)
        else:  # without the deferred pay its items lose money: it declines, unpaid
            assert (row.status, row.paid, node in worked) == ("declined", 0.0, False)
    assert max(withheld) > 1.0  # the check bites: some unearned deferred pay was withheld
