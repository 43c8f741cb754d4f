"""Hostile replies in every phase of a round, through the real strategy: the run goes on, the
honest ESs are paid as before, the offending node gets one bounded ledger row, ``ledger.csv``
parses with the csv module and pandas, and the round's checkpoint loads back.

Covers what the decoder-level tests (test_hostile_values.py) and the per-reply hardening
tests (test_reply_hardening.py) do not: Flower error replies whose reason is None, no string,
or text with NULs, lone surrogates, quotes and line breaks; subnormal public facts; replies of
another message type than their instruction's.
"""

from __future__ import annotations

import csv
import io
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
from flwr.app.error import Error
from flwr.common.constant import ErrorCode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fed_agent.checkpoints import load_latest, save_checkpoint
from fed_agent.incentives.ledger import Ledger, LedgerEntry
from fed_agent.incentives.profiles import CHANNEL_GAIN, WORKLOAD
from fed_agent.protocol import DATA_DECLINE, ITEM, METRICS, PUBLIC_FACTS
from fed_agent.text import MAX_TEXT, one_line
from strategies.round_plan import RoundPlan
from tests.strategies.fake_grid import FakeGrid, metadata, set_task_identity
from tests.strategies.test_contract_strategy import (
    NODES,
    honest_updates,
    make_strategy,
    reply_for,
    train_round,
)

HOSTILE = NODES[0]
NASTY = "first line\x1b[31m\r" + '\x07x\x00 "quoted", a,b \ud800\udfff é ' + "y" * 400 + "\r\n"
"""Text no ledger cell may hold as it is: NUL, escape and bell, a lone surrogate, quotes,
commas, bare carriage returns, longer than a ledger cell keeps."""
ANY_TEXT = st.text(st.characters(codec=None, categories=None), max_size=300)
"""Any Python string, lone surrogates and control characters included."""


class ScriptedGrid(FakeGrid):
    """The real ClientApp handlers, except that node HOSTILE's answer to a QUERY of a given
    phase is ``script[phase]`` (a Message made for it, or None: no answer)."""

    def __init__(self, script: dict, overrides: str = "incentive=optimal") -> None:
        super().__init__(NODES, "smoke", f"{overrides} federation.fold_offers=false")
        self.script = script

    def send_and_receive(self, messages, timeout=None) -> list[Message]:
        scripted = [
            m
            for m in messages
            if m.metadata.dst_node_id == HOSTILE and m.content["config"]["phase"] in self.script
        ]
        replies = super().send_and_receive([m for m in messages if m not in scripted], timeout)
        for message in scripted:
            reply = self.script[message.content["config"]["phase"]]
            if reply is not None:
                replies.append(reply)
        return replies


def _error(code: int, reason: object, kind: str = "query") -> Message:
    return Message(error=Error(code, reason), metadata=metadata(HOSTILE, 0, kind))


def _check_ledger_file(strategy) -> list[dict]:
    """ledger.csv as the csv module reads it, checked against pandas and the ledger."""
    text = (strategy.outputs.root / "ledger.csv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    frame = pd.read_csv(io.StringIO(text), keep_default_na=False)
    assert len(rows) == len(frame) == len(strategy.ledger.entries)
    assert list(frame["reason"]) == [r["reason"] for r in rows]
    return rows


def _full_round(tmp_path, module, script: dict, train_error: Message | None = None):
    """Round 1 with HOSTILE scripted: configure, honest replies, aggregate, checkpoint."""
    strategy, _ = make_strategy(tmp_path, module, "incentive=optimal")
    grid = ScriptedGrid(script)
    messages, _ = train_round(strategy, grid, module)
    replies = [
        reply_for(m, u) for m, u in zip(messages, honest_updates(module, messages), strict=True)
    ]
    if train_error is not None:
        replies = [r for r in replies if r.metadata.src_node_id != HOSTILE] + [train_error]
    _, metrics = strategy.aggregate_train(1, replies)
    strategy.commit_round(1, tmp_path / "checkpoints", None)
    return strategy, metrics


# ------------------------------------------------------------------------- bounded text


def test_one_line_escapes_what_a_csv_reader_or_utf_8_cannot_take():
    assert one_line('a\x00b,"c"\tx\ud800y\x7f') == 'a\\x00b,"c" x\\ud800y\\x7f'
    assert one_line("first\nsecond\x1b[0m\r") == "second\\x1b[0m"
    assert one_line(None) == "None" and one_line("\r\n\x00\n") == "\\x00"


@settings(max_examples=300, deadline=None)
@given(text=ANY_TEXT)
def test_one_line_is_one_printable_utf_8_line_within_the_limit(text):
    line = one_line(text)
    assert line.isprintable() and len(line) <= MAX_TEXT
    assert line.encode("utf-8").decode("utf-8") == line
    assert line.splitlines() == [line]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(reason=ANY_TEXT)
def test_any_reason_in_the_ledger_parses_back_and_its_checkpoint_loads(tmp_path, reason):
    tmp_path = Path(tempfile.mkdtemp(dir=tmp_path))  # one folder per example
    ledger = Ledger(tmp_path / "ledger.csv")
    ledger.add(LedgerEntry(1, 1, 2**64 - 1, "rejected", reason=reason))
    ledger.add(LedgerEntry(1, 1, 7, "paid", paid=2.5))
    ledger.write()
    kept = one_line(reason) if reason else ""
    rows = list(csv.DictReader(io.StringIO(ledger.path.read_text(encoding="utf-8"))))
    assert [r["reason"] for r in rows] == [kept, ""]
    frame = pd.read_csv(ledger.path, keep_default_na=False)
    assert list(frame["node_id"]) == [2**64 - 1, 7] and list(frame["paid"]) == [0.0, 2.5]
    assert [e.reason for e in Ledger(ledger.path).entries] == [kept, ""]
    state = {"incompatible": {str(2**64 - 1): kept}}
    adapter = {"w": np.zeros(2, np.float32)}
    save_checkpoint(tmp_path / "checkpoints", 1, adapter, state, ledger.csv_text())
    checkpoint = load_latest(tmp_path / "checkpoints")
    assert checkpoint.state == state and checkpoint.ledger_csv == ledger.csv_text()


def test_numeric_looking_reasons_are_read_back_as_text(tmp_path):
    ledger = Ledger(tmp_path / "ledger.csv")
    for reason in ("0", "1e5", ""):
        ledger.add(LedgerEntry(1, 1, 7, "rejected", reason=reason))
    ledger.write()
    entries = Ledger(ledger.path).entries
    assert [(e.reason, e.offer_source, e.excluded_types) for e in entries] == [
        ("0", "", ""),
        ("1e5", "", ""),
        ("", "", ""),
    ]
    assert Ledger(ledger.path).csv_text() == ledger.csv_text()


# --------------------------------------------------------- hostile text, every phase


@pytest.mark.parametrize(
    ("phase", "status", "prefix"),
    [
        (PUBLIC_FACTS, "incompatible", "cannot answer the contract protocol: "),
        ("decline", "declined", ""),
        ("train", "rejected", ""),
    ],
)
def test_hostile_error_text_costs_only_its_node_one_bounded_row(
    tmp_path, smoke_module, phase, status, prefix
):
    code = ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    script, train_error = {}, None
    if phase == PUBLIC_FACTS:
        script = {PUBLIC_FACTS: _error(code, NASTY)}
    elif phase == "decline":
        script = {PUBLIC_FACTS: _error(code, f"{DATA_DECLINE}: data.jsonl line 3\n{NASTY}")}
    else:
        train_error = _error(code, NASTY, "train")
    strategy, metrics = _full_round(tmp_path, smoke_module, script, train_error)
    assert metrics["participants"] == 2  # the honest path beside the attack
    paid = sorted(e.node_id for e in strategy.ledger.entries if e.status == "paid")
    assert paid == NODES[1:]
    [row] = [e for e in strategy.ledger.entries if e.node_id == HOSTILE]
    assert row.status == status and row.paid == 0 and row.held == 0
    assert row.reason == one_line(prefix + one_line(NASTY))
    assert row.reason.startswith(prefix + '\\x07x\\x00 "quoted", a,b \\ud800\\udfff é yyy')
    assert len(row.reason) == MAX_TEXT and row.reason.isprintable()
    rows = _check_ledger_file(strategy)
    assert [r["reason"] for r in rows if r["node_id"] == str(HOSTILE)] == [row.reason]
    checkpoint = load_latest(tmp_path / "checkpoints")
    assert checkpoint.ledger_csv == strategy.ledger.csv_text()
    if status != "rejected":
        assert checkpoint.state[status][str(HOSTILE)] == row.reason


# --------------------------------------------- error replies without a reason string


def _offer_round(tmp_path, module, script: dict, overrides: str = "incentive=optimal"):
    """Round 1's admission, offers, choices and selection (no training)."""
    strategy, _ = make_strategy(tmp_path, module, overrides)
    grid = ScriptedGrid(script, overrides)
    plan = RoundPlan(1, 1, module.initial_state)
    set_task_identity(0)
    recruiter = strategy.recruiter
    offered, _ = recruiter.design_offers(grid, plan, NODES)
    chosen, _ = recruiter.select(plan, offered, recruiter.collect_choices(grid, plan, offered))
    return strategy, chosen


@pytest.mark.parametrize(
    ("code", "reason", "status"),
    [
        (ErrorCode.CLIENT_APP_RAISED_EXCEPTION, None, "incompatible"),
        (ErrorCode.CLIENT_APP_RAISED_EXCEPTION, 42, "incompatible"),
        (ErrorCode.LOAD_CLIENT_APP_EXCEPTION, b"\xff", "incompatible"),
        (ErrorCode.NODE_UNAVAILABLE, None, None),
        (ErrorCode.REPLY_MESSAGE_UNAVAILABLE, None, None),
    ],
)
def test_a_public_facts_error_without_a_reason_string_costs_only_its_node(
    tmp_path, smoke_module, code, reason, status
):
    strategy, chosen = _offer_round(tmp_path, smoke_module, {PUBLIC_FACTS: _error(code, reason)})
    assert sorted(chosen) == NODES[1:]
    rows = [e for e in strategy.ledger.entries if e.node_id == HOSTILE]
    assert HOSTILE not in strategy.facts
    if status is None:  # a transient fault: no row, asked again in a later round
        assert rows == [] and HOSTILE not in strategy.incompatible
        return
    [row] = rows
    assert row.status == status
    assert row.reason == "cannot answer the contract protocol: no reason given"


def test_an_offer_answer_error_without_a_reason_is_no_answer(tmp_path, smoke_module):
    error = _error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, None)
    strategy, chosen = _offer_round(tmp_path, smoke_module, {"offer": error})
    assert sorted(chosen) == NODES[1:]
    [row] = [e for e in strategy.ledger.entries if e.node_id == HOSTILE]
    assert (row.status, row.reason, row.paid) == ("no_reply", "no answer to the offer", 0)


# ----------------------------------------------------------- public facts at the edges


def _facts(workload: float, gain: float) -> Message:
    record = ConfigRecord({WORKLOAD: workload, CHANNEL_GAIN: gain})
    return Message(RecordDict({PUBLIC_FACTS: record}), metadata=metadata(HOSTILE, 0, "query"))


@pytest.mark.parametrize("policy", ["optimal", "uniform", "static"])
def test_a_subnormal_workload_is_no_valid_market_not_a_failed_design(
    tmp_path, smoke_module, policy
):
    script = {PUBLIC_FACTS: _facts(5e-324, 1e-8)}
    strategy, chosen = _offer_round(tmp_path, smoke_module, script, f"incentive={policy}")
    assert sorted(chosen) == NODES[1:]
    [row] = [e for e in strategy.ledger.entries if e.node_id == HOSTILE]
    assert row.status == "incompatible" and "give no valid market" in row.reason
    assert "the energy cost kappa W f_min^2" in row.reason


POSITIVE = st.one_of(
    st.floats(min_value=5e-324, max_value=1.7976931348623157e308, allow_subnormal=True),
    st.sampled_from([5e-324, 1e-320, 2.2250738585072014e-308, 1e-300, 1.7976931348623157e308]),
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(workload=POSITIVE, gain=POSITIVE)
def test_any_positive_public_facts_are_offered_or_cost_one_incompatible_row(
    tmp_path, smoke_module, workload, gain
):
    script = {PUBLIC_FACTS: _facts(workload, gain)}
    strategy, chosen = _offer_round(tmp_path, smoke_module, script)
    assert set(NODES[1:]) <= set(chosen)
    rows = [e for e in strategy.ledger.entries if e.node_id == HOSTILE]
    if HOSTILE in strategy.facts:
        assert all(r.status != "incompatible" for r in rows)
    else:
        [row] = rows
        assert row.status == "incompatible" and "give no valid market" in row.reason


# ------------------------------------------------------------- replies of another type


@pytest.mark.parametrize("fold", [False, True])
@pytest.mark.parametrize("kind", ["query", "evaluate", "train.custom"])
def test_a_train_reply_of_another_message_type_is_rejected_unpaid(
    tmp_path, smoke_module, fold, kind
):
    strategy, grid = make_strategy(tmp_path, smoke_module, "incentive=optimal", fold=fold)
    messages, _ = train_round(strategy, grid, smoke_module)
    updates = honest_updates(smoke_module, messages)
    replies = [reply_for(m, u) for m, u in zip(messages, updates, strict=True)]
    bad = replies[0]
    replies[0] = Message(bad.content, metadata=metadata(bad.metadata.src_node_id, 0, kind))
    _, metrics = strategy.aggregate_train(1, replies)
    assert metrics["participants"] == 2
    node = bad.metadata.src_node_id
    [row] = [e for e in strategy.ledger.entries if e.node_id == node]
    assert row.status == "rejected" and row.paid == 0 and row.held == 0
    assert row.reason.endswith(f"a reply of message type '{kind}', not train")
    paid = sorted(e.node_id for e in strategy.ledger.entries if e.status == "paid")
    assert paid == sorted(m.metadata.dst_node_id for m in messages[1:])


def test_public_facts_or_an_answer_of_another_message_type_cost_the_node_its_place(
    tmp_path, smoke_module
):
    record = ConfigRecord({WORKLOAD: 20.0, CHANNEL_GAIN: 1e-8})
    facts = Message(RecordDict({PUBLIC_FACTS: record}), metadata=metadata(HOSTILE, 0, "train"))
    strategy, chosen = _offer_round(tmp_path, smoke_module, {PUBLIC_FACTS: facts})
    assert sorted(chosen) == NODES[1:]
    [row] = [e for e in strategy.ledger.entries if e.node_id == HOSTILE]
    assert row.status == "incompatible"
    assert row.reason.endswith("a reply of message type 'train', not query")

    answer = RecordDict({METRICS: MetricRecord({ITEM: 0})})
    script = {"offer": Message(answer, metadata=metadata(HOSTILE, 0, "evaluate"))}
    strategy, chosen = _offer_round(tmp_path / "answer", smoke_module, script)
    assert sorted(chosen) == NODES[1:]
    [row] = [e for e in strategy.ledger.entries if e.node_id == HOSTILE]
    assert row.status == "rejected" and row.paid == 0
    assert row.reason.endswith("a reply of message type 'evaluate', not query")


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    phase=st.sampled_from([PUBLIC_FACTS, "offer"]),
    code=st.one_of(st.sampled_from(list(range(10))), st.integers(-(2**70), 2**70)),
    reason=st.one_of(st.none(), ANY_TEXT, st.just(DATA_DECLINE + NASTY)),
)
def test_any_error_reply_before_training_costs_its_node_at_most_one_bounded_row(
    tmp_path, smoke_module, phase, code, reason
):
    script = {PUBLIC_FACTS: _error(code, reason)} if phase == PUBLIC_FACTS else {}
    if phase == "offer":
        script = {"offer": _error(code, reason)}
    strategy, chosen = _offer_round(Path(tempfile.mkdtemp(dir=tmp_path)), smoke_module, script)
    assert sorted(chosen) == NODES[1:]
    rows = [e for e in strategy.ledger.entries if e.node_id == HOSTILE]
    assert len(rows) <= 1 and all(r.paid == 0 for r in rows)
    for row in rows:
        assert row.reason.isprintable() and len(row.reason) <= MAX_TEXT
    for reasons in (strategy.incompatible, strategy.recruiter.declined):
        assert all(r.isprintable() and len(r) <= MAX_TEXT for r in reasons.values())
    strategy.ledger.write()
    assert len(_check_ledger_file(strategy)) == len(strategy.ledger.entries)
