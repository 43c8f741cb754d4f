"""Offers riding on TRAIN messages, and nodes that cannot answer the contract protocol.

When every ES that accepts will be chosen, a round is one TRAIN message per ES: the ES picks
its item and trains at once (or declines with a reply without arrays). The cloud's records and
payments must be those of the two-message round: paid for the item named and the work asked.
A node whose ClientApp cannot answer the protocol is recorded once and never asked again; so
is an ES that declines because its own data is unusable.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.app.error import Error
from flwr.common.constant import ErrorCode

from fed_agent.incentives.selection import Candidate, select_participants
from fed_agent.modules.training import local_steps_for
from fed_agent.protocol import (
    CONFIG,
    DATA_DECLINE,
    PHASE,
    PUBLIC_FACTS,
    TrainOffer,
    train_request,
)
from fed_agent.text import one_line
from strategies.records import adapter_to_record
from strategies.recruiter import FOLDING_SELECTIONS
from tests.strategies.fake_grid import FakeGrid, metadata, set_task_identity
from tests.strategies.test_contract_strategy import (
    NODES,
    honest_updates,
    instruction_of,
    make_strategy,
    reply_for,
    train_round,
)

STOCK_REASON = (
    "Traceback (most recent call last):\n  File ...\n"
    "ValueError: No query function registered with name 'default'"
)


def _facts_queries(grid: FakeGrid) -> list[int]:
    return [
        m.metadata.dst_node_id
        for m in grid.sent
        if m.metadata.message_type == MessageType.QUERY and m.content[CONFIG][PHASE] == PUBLIC_FACTS
    ]


def test_a_round_is_one_train_message_per_es_carrying_its_offer_and_step_budgets(
    tmp_path, smoke_module
):
    strategy, grid = make_strategy(tmp_path, smoke_module, "incentive=optimal", fold=True)
    messages, _ = train_round(strategy, grid, smoke_module)
    assert sorted(m.metadata.dst_node_id for m in messages) == NODES
    assert all(m.metadata.message_type == MessageType.TRAIN for m in messages)
    # the only QUERYs are the first-time public facts: no separate offer wave
    assert sorted(_facts_queries(grid)) == NODES and len(grid.sent) == 3
    cfg = strategy.cfg
    for message in messages:
        request = train_request(message.content[CONFIG])
        assert isinstance(request, TrainOffer)
        contract = strategy.engagements[message.metadata.dst_node_id].contract
        assert request.offer.f1 == pytest.approx(tuple(contract.f1))
        assert request.item_steps == tuple(
            local_steps_for(f, cfg.market.f_max_ghz, cfg.training.local_steps) for f in contract.f1
        )
    assert strategy.plan.assignments == {}  # nothing chosen before the replies name the items


def test_replies_to_train_offers_are_paid_for_the_item_they_name_and_its_work(
    tmp_path, smoke_module
):
    strategy, grid = make_strategy(tmp_path, smoke_module, "incentive=optimal", fold=True)
    messages, _ = train_round(strategy, grid, smoke_module)
    chosen = {m.metadata.dst_node_id: instruction_of(m) for m in messages}
    updates = honest_updates(smoke_module, messages)
    replies = [reply_for(m, u) for m, u in zip(messages, updates, strict=True)]
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert arrays is not None and metrics["participants"] == 3
    paid = {e.node_id: e for e in strategy.ledger.entries if e.status == "paid"}
    assert sorted(paid) == NODES
    for node, instruction in chosen.items():
        entry, engagement = paid[node], strategy.engagements[node]
        assert entry.item == instruction.item == engagement.report
        assert entry.f_ghz == pytest.approx(engagement.contract.f1[instruction.item])
        assert entry.reward_offered == pytest.approx(engagement.contract.r1[instruction.item])


def test_a_reply_that_does_another_items_work_is_rejected_unpaid(tmp_path, smoke_module):
    strategy, grid = make_strategy(tmp_path, smoke_module, "incentive=optimal", fold=True)
    messages, _ = train_round(strategy, grid, smoke_module)
    cheat = messages[0]
    instruction = instruction_of(cheat)
    steps = TrainOffer.from_dict(cheat.content[CONFIG]).item_steps
    other = next(s for s in steps if s != instruction.local_steps)
    updates = honest_updates(smoke_module, messages)
    replies = [reply_for(cheat, updates[0], steps=other)]
    replies += [reply_for(m, u) for m, u in zip(messages[1:], updates[1:], strict=True)]
    strategy.aggregate_train(1, replies)
    rows = {e.node_id: e for e in strategy.ledger.entries}
    assert rows[cheat.metadata.dst_node_id].status == "rejected"
    assert rows[cheat.metadata.dst_node_id].paid == 0 and rows[cheat.metadata.dst_node_id].held == 0
    assert "steps" in rows[cheat.metadata.dst_node_id].reason
    assert sum(e.status == "paid" for e in rows.values()) == 2


def test_declines_come_back_as_replies_without_arrays_and_are_recorded(tmp_path, smoke_module):
    strategy, grid = make_strategy(
        tmp_path,
        smoke_module,
        "incentive=fedavg_flat_fee incentive.flat_fee=0.5",
        fold=True,
    )
    messages, _ = train_round(strategy, grid, smoke_module)
    assert len(messages) == 3
    replies = [reply_for(m, smoke_module.initial_state) for m in messages]
    assert all("arrays" not in r.content.array_records for r in replies)
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert arrays is None and metrics["participants"] == 0
    assert [e.status for e in strategy.ledger.entries] == ["declined"] * 3
    assert strategy.outputs.rows[-1]["ignored_replies"] == 0


def test_an_error_reply_to_a_train_offer_is_an_unanswered_offer_never_paid(tmp_path, smoke_module):
    strategy, grid = make_strategy(tmp_path, smoke_module, "incentive=optimal", fold=True)
    messages, _ = train_round(strategy, grid, smoke_module)
    dead = messages[2].metadata.dst_node_id
    updates = honest_updates(smoke_module, messages[:2])
    replies = [reply_for(m, u) for m, u in zip(messages[:2], updates, strict=True)]
    replies.append(
        Message(
            error=Error(ErrorCode.NODE_UNAVAILABLE, "node went away"),
            metadata=metadata(dead, 0, "train"),
        )
    )
    _, metrics = strategy.aggregate_train(1, replies)
    assert metrics["participants"] == 2
    row = next(e for e in strategy.ledger.entries if e.node_id == dead)
    assert row.status == "no_reply" and row.paid == 0 and row.held == 0


def test_more_offers_than_places_keep_the_separate_offer_query(tmp_path, smoke_module):
    strategy, grid = make_strategy(
        tmp_path, smoke_module, "incentive=optimal federation.es_per_round=2", fold=True
    )
    messages, _ = train_round(strategy, grid, smoke_module)
    assert len(messages) == 2
    offers = [m for m in grid.sent if m.content[CONFIG][PHASE] == "offer"]
    assert sorted(m.metadata.dst_node_id for m in offers) == NODES
    assert all(instruction_of(m).item >= 0 for m in messages)


@pytest.mark.parametrize("rule", FOLDING_SELECTIONS)
def test_folding_rules_choose_every_accepter_under_the_limit(rule, smoke_cfg):
    """The assumption folding rests on: these rules never leave out an accepter while there
    are places left (else an ES would train and then not be chosen)."""
    cfg = dataclasses.replace(smoke_cfg.incentive, selection=rule)
    candidates = [Candidate(n, s, 5.0) for n, s in zip(NODES, [-3.0, 0.0, 2.0], strict=True)]
    chosen = select_participants(candidates, 3, cfg, np.random.default_rng(0)).chosen
    assert sorted(chosen) == NODES


def test_two_rounds_of_train_offers_release_the_held_period_one_pay(tmp_path, smoke_module):
    # complete information: its contracts pay (and so hold) in period 1, not deferred
    strategy, grid = make_strategy(
        tmp_path, smoke_module, "incentive=complete_information", fold=True
    )
    arrays = adapter_to_record(smoke_module.initial_state)
    for server_round in (1, 2):
        set_task_identity(0)
        messages = list(strategy.configure_train(server_round, arrays, ConfigRecord(), grid))
        if server_round == 2:
            request = train_request(messages[0].content[CONFIG])
            assert request.offer.period == 2 and request.offer.held > 0
        updates = honest_updates(smoke_module, messages, seed=server_round)
        replies = [reply_for(m, u) for m, u in zip(messages, updates, strict=True)]
        arrays, _ = strategy.aggregate_train(server_round, replies)
    held = {e.node_id: e.held for e in strategy.ledger.entries if e.round == 1}
    second = [e for e in strategy.ledger.entries if e.round == 2 and e.status == "paid"]
    assert len(second) == 3 and any(e.released > 0 for e in second)
    assert all(e.released == pytest.approx(held[e.node_id]) for e in second)


class StockNodeGrid(FakeGrid):
    """Node ``stock`` runs a stock Flower ClientApp: it has no query handler."""

    def __init__(
        self, node_ids, experiment, overrides, stock: int, code: int, reason: str = STOCK_REASON
    ) -> None:
        super().__init__(node_ids, experiment, overrides)
        self.stock, self.code, self.reason = stock, code, reason

    def send_and_receive(self, messages, timeout=None):
        messages = list(messages)
        own = [m for m in messages if m.metadata.dst_node_id != self.stock]
        replies = super().send_and_receive(own, timeout)
        for message in messages:
            if message.metadata.dst_node_id == self.stock:
                self.sent.append(message)
                reason = self.reason if self.code != ErrorCode.NODE_UNAVAILABLE else "gone"
                replies.append(
                    Message(
                        error=Error(self.code, reason),
                        metadata=metadata(self.stock, 0, message.metadata.message_type),
                    )
                )
        return replies


def _stock_strategy(tmp_path, module, code: int, reason: str = STOCK_REASON):
    strategy, grid = make_strategy(tmp_path, module, "incentive=optimal", fold=True)
    stock = StockNodeGrid(NODES, "smoke", "incentive=optimal", NODES[1], code, reason)
    return strategy, stock


def _run_round(strategy, grid, module, server_round):
    messages, _ = train_round(strategy, grid, module, server_round)
    updates = honest_updates(module, messages, seed=server_round)
    replies = [reply_for(m, u) for m, u in zip(messages, updates, strict=True)]
    strategy.aggregate_train(server_round, replies)
    return messages


def test_a_stock_clientapp_is_recorded_once_as_incompatible_and_never_asked_again(
    tmp_path, smoke_module
):
    strategy, grid = _stock_strategy(tmp_path, smoke_module, ErrorCode.CLIENT_APP_RAISED_EXCEPTION)
    for server_round in (1, 2, 3):  # smoke: period 1, 2, then period 1 again (new offers)
        messages = _run_round(strategy, grid, smoke_module, server_round)
        assert NODES[1] not in {m.metadata.dst_node_id for m in messages}
    assert _facts_queries(grid).count(NODES[1]) == 1
    rows = [e for e in strategy.ledger.entries if e.node_id == NODES[1]]
    assert [e.status for e in rows] == ["incompatible"]
    assert rows[0].reason == (
        "cannot answer the contract protocol: "
        "ValueError: No query function registered with name 'default'"
    )
    assert rows[0].paid == 0 and "\n" not in rows[0].reason
    assert [r["incompatible_es"] for r in strategy.outputs.rows] == [1, 1, 1]
    assert sum(e.status == "paid" for e in strategy.ledger.entries if e.round == 3) == 2
    # a resumed strategy remembers it
    assert strategy.state_dict()["incompatible"] == {str(NODES[1]): rows[0].reason}


def test_an_es_whose_data_is_unusable_is_recorded_once_as_declined_with_its_reason(
    tmp_path, smoke_module
):
    # what clients/client_app.py answers when the ES's own data folder is broken
    reason = f"{DATA_DECLINE}: data.jsonl:4: unreadable line (Expecting value)"
    strategy, grid = _stock_strategy(
        tmp_path, smoke_module, ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason
    )
    for server_round in (1, 2, 3):
        messages = _run_round(strategy, grid, smoke_module, server_round)
        assert NODES[1] not in {m.metadata.dst_node_id for m in messages}
    assert _facts_queries(grid).count(NODES[1]) == 1
    rows = [e for e in strategy.ledger.entries if e.node_id == NODES[1]]
    assert [(e.status, e.reason, e.paid) for e in rows] == [("declined", reason, 0.0)]
    assert strategy.incompatible == {}
    assert [r["incompatible_es"] for r in strategy.outputs.rows] == [0, 0, 0]
    assert sum(e.status == "paid" for e in strategy.ledger.entries if e.round == 3) == 2
    # a resumed strategy remembers it and does not ask again
    state = strategy.state_dict()
    assert state["declined"] == {str(NODES[1]): reason}
    resumed, _ = make_strategy(tmp_path / "resumed", smoke_module, "incentive=optimal", fold=True)
    resumed.load_state_dict(state)
    assert NODES[1] in resumed.recruiter.left_out


def test_a_node_that_is_only_unavailable_is_asked_again_later(tmp_path, smoke_module):
    strategy, grid = _stock_strategy(tmp_path, smoke_module, ErrorCode.NODE_UNAVAILABLE)
    _run_round(strategy, grid, smoke_module, 1)
    _run_round(strategy, grid, smoke_module, 2)
    _run_round(strategy, grid, smoke_module, 3)
    assert _facts_queries(grid).count(NODES[1]) == 2  # rounds 1 and 3 (period 1)
    assert strategy.incompatible == {}
    assert all(e.status != "incompatible" for e in strategy.ledger.entries)


def test_one_line_keeps_the_exception_line_of_a_traceback():
    assert one_line(STOCK_REASON) == "ValueError: No query function registered with name 'default'"
    assert one_line("") == "no reason given"
    assert len(one_line("x" * 500)) == 200


def test_the_stock_grid_answers_like_flower(tmp_path, smoke_module):
    """Sanity of the fake: the stock node's reply is an error with Flower's code."""
    grid = StockNodeGrid(NODES, "smoke", "", NODES[0], ErrorCode.CLIENT_APP_RAISED_EXCEPTION)
    query = Message(
        RecordDict({CONFIG: ConfigRecord({PHASE: PUBLIC_FACTS})}),
        message_type=MessageType.QUERY,
        dst_node_id=NODES[0],
    )
    set_task_identity(0)
    (reply,) = grid.send_and_receive([query])
    assert reply.has_error() and reply.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    assert reply.metadata.src_node_id == NODES[0]
