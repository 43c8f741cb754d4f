"""No reply can crash a round or be paid twice; self-reported figures are typed and bounded.

Each test drives the real ContractStrategy (offers answered by the real ClientApp handlers on
the fake grid) and asserts the concrete outcome: who is paid, what is aggregated, the reason.
"""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
from flwr.app import Array, ConfigRecord, Message, MetricRecord, RecordDict

import strategies.reply_judge as reply_judge
from fed_agent.protocol import ARRAYS, CONFIG, METRICS, TrainInstruction
from strategies.records import adapter_to_record, record_to_adapter
from tests.strategies.fake_grid import metadata
from tests.strategies.test_contract_strategy import (
    honest_updates,
    make_strategy,
    reply_for,
    train_round,
)


def _round(tmp_path, module, overrides: str = "incentive=optimal"):
    strategy, grid = make_strategy(tmp_path, module, overrides)
    messages, _ = train_round(strategy, grid, module)
    assert len(messages) == 3
    return strategy, grid, messages, honest_updates(module, messages)


def _mean(strategy, messages, updates) -> dict[str, np.ndarray]:
    steps = [TrainInstruction.from_dict(m.content[CONFIG]).local_steps for m in messages]
    w = np.array(steps, dtype=float) / sum(steps)
    return {
        k: sum(wi * u[k].astype(np.float64) for wi, u in zip(w, updates, strict=True))
        for k in updates[0]
    }


def _with_arrays(reply: Message, arrays: object) -> Message:
    content = RecordDict({ARRAYS: arrays, METRICS: reply.content[METRICS]})
    return Message(content, metadata=reply.metadata)


def _statuses(strategy, server_round: int = 1) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for e in strategy.ledger.entries:
        if e.round == server_round:
            out.setdefault(e.node_id, []).append(e.status)
    return out


def _npy_bytes(shape: tuple[int, ...], payload: bytes) -> bytes:
    """A .npy stream whose header claims ``shape`` (float32), followed by ``payload``."""
    stream = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        stream, {"descr": "<f4", "fortran_order": False, "shape": shape}
    )
    return stream.getvalue() + payload


# ------------------------------------------------------------- one reply per node per round


def test_the_same_valid_reply_sent_twice_is_paid_and_aggregated_once(
    tmp_path, smoke_module, caplog
):
    strategy, _, messages, updates = _round(tmp_path, smoke_module)
    replies = [reply_for(m, u) for m, u in zip(messages, updates, strict=True)]
    duplicate = replies[0]
    with caplog.at_level(logging.WARNING):
        arrays, metrics = strategy.aggregate_train(1, [*replies, duplicate])
    assert metrics["participants"] == 3
    assert all(statuses == ["paid"] for statuses in _statuses(strategy).values())
    row = strategy.outputs.rows[-1]
    assert row["participants"] == 3 and row["offers"] == 3 and row["ignored_replies"] == 1
    merged = record_to_adapter(arrays)
    for key, expected in _mean(strategy, messages, updates).items():
        np.testing.assert_allclose(merged[key], expected, rtol=1e-5, atol=1e-7)
    assert "duplicate reply" in caplog.text


def test_an_unsolicited_reply_is_ignored_unpaid_and_not_counted(tmp_path, smoke_module):
    strategy, _, messages, updates = _round(tmp_path, smoke_module)
    replies = [reply_for(m, u) for m, u in zip(messages, updates, strict=True)]
    stranger = Message(replies[0].content, metadata=metadata(999, 0, "train"))
    strategy.aggregate_train(1, [*replies, stranger])
    assert 999 not in _statuses(strategy)
    assert strategy.outputs.rows[-1]["ignored_replies"] == 1
    assert strategy.outputs.rows[-1]["participants"] == 3


def test_a_reply_to_another_rounds_or_offers_instruction_is_a_replay(tmp_path, smoke_module):
    strategy, grid, messages, updates = _round(tmp_path, smoke_module)
    old = [reply_for(m, u) for m, u in zip(messages, updates, strict=True)]
    strategy.aggregate_train(1, old)
    messages2, _ = train_round(strategy, grid, smoke_module, server_round=2)
    by_node = {m.metadata.dst_node_id: m for m in messages2}
    replayed = old[0]
    node = replayed.metadata.src_node_id
    # the round-1 reply, its step count made to match round 2: only the round gives it away
    steps2 = TrainInstruction.from_dict(by_node[node].content[CONFIG]).local_steps
    values = dict(replayed.content[METRICS]) | {"train-steps": steps2}
    replay = Message(
        RecordDict({ARRAYS: replayed.content[ARRAYS], METRICS: MetricRecord(values)}),
        metadata=replayed.metadata,
    )
    # a reply with this round but another nonce
    other = messages2[1]
    forged = reply_for(other, updates[1])
    values = dict(forged.content[METRICS])
    values["nonce"] = (values["nonce"] + 1) % 2**53
    forged = Message(
        RecordDict({ARRAYS: forged.content[ARRAYS], METRICS: MetricRecord(values)}),
        metadata=forged.metadata,
    )
    # the honest ES trains round 2's module for round 2's instruction
    honest = reply_for(messages2[2], honest_updates(smoke_module, messages2)[2])
    strategy.aggregate_train(2, [replay, forged, honest])
    round2 = {e.node_id: e for e in strategy.ledger.entries if e.round == 2}
    assert round2[node].status == "rejected" and "replay" in round2[node].reason
    assert "round 1" in round2[node].reason and round2[node].paid == 0
    forger = other.metadata.dst_node_id
    assert round2[forger].status == "rejected" and "nonce" in round2[forger].reason
    assert round2[messages2[2].metadata.dst_node_id].status == "paid"


# ------------------------------------------------------- nothing in a reply can crash a round


def test_adapter_tensors_in_another_key_order_are_accepted(tmp_path, smoke_module):
    strategy, _, messages, updates = _round(tmp_path, smoke_module)
    reordered = dict(reversed(list(updates[0].items())))
    assert list(reordered) != list(updates[0])
    replies = [reply_for(messages[0], reordered)]
    replies += [reply_for(m, u) for m, u in zip(messages[1:], updates[1:], strict=True)]
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert metrics["participants"] == 3
    merged = record_to_adapter(arrays)
    assert list(merged) == smoke_module.adapter_keys
    for key, expected in _mean(strategy, messages, updates).items():
        np.testing.assert_allclose(merged[key], expected, rtol=1e-5, atol=1e-7)


def _with_metrics(reply: Message, metrics) -> Message:
    """The reply with its metrics record replaced."""
    content = RecordDict({ARRAYS: reply.content[ARRAYS], METRICS: metrics})
    return Message(content, metadata=reply.metadata)


def _aggregate(strategy, messages, replies):
    """Aggregate the round: the first instructed ES's ledger entry, the arrays, the metrics."""
    arrays, metrics = strategy.aggregate_train(1, replies)
    bad = messages[0].metadata.dst_node_id
    return next(e for e in strategy.ledger.entries if e.node_id == bad), arrays, metrics


@pytest.mark.parametrize("kind", ["metric_record", "config_record"])
def test_an_arrays_record_of_another_kind_is_rejected_for_that_reply_only(
    tmp_path, smoke_module, kind
):
    strategy, _, messages, updates = _round(tmp_path, smoke_module)
    replies = [reply_for(m, u) for m, u in zip(messages, updates, strict=True)]
    wrong = MetricRecord({"x": 1.0}) if kind == "metric_record" else ConfigRecord({"x": "y"})
    replies[0] = _with_arrays(replies[0], wrong)
    entry, arrays, metrics = _aggregate(strategy, messages, replies)
    assert entry.status == "rejected" and "not an ArrayRecord" in entry.reason and entry.paid == 0
    assert arrays is not None and metrics["participants"] == 2


@pytest.mark.parametrize("where", ["npy_header", "array_field"])
def test_a_tensor_claiming_a_huge_shape_is_rejected_before_allocating(
    tmp_path, smoke_module, where
):
    strategy, _, messages, updates = _round(tmp_path, smoke_module)
    replies = [reply_for(m, u) for m, u in zip(messages, updates, strict=True)]
    record = adapter_to_record(updates[0])
    key = smoke_module.adapter_keys[0]
    real = record[key]
    huge = (2_000_000, 5_000_000)  # 36 TiB of float32 if anything allocated it
    if where == "npy_header":
        data = _npy_bytes(huge, b"\0" * 64)
        record[key] = Array(dtype="float32", shape=tuple(real.shape), stype=real.stype, data=data)
    else:
        record[key] = Array(dtype="float32", shape=huge, stype=real.stype, data=real.data)
    replies[0] = _with_arrays(replies[0], record)
    entry, arrays, metrics = _aggregate(strategy, messages, replies)
    assert entry.status == "rejected" and "2000000" in entry.reason and entry.paid == 0
    assert arrays is not None and metrics["participants"] == 2


def test_a_reply_whose_module_cannot_be_aggregated_is_rejected_alone_and_unpaid(
    tmp_path, smoke_module, monkeypatch
):
    strategy, _, messages, updates = _round(tmp_path, smoke_module)
    key = smoke_module.adapter_keys[0]
    # one ulp off its trained value: unremarkable to screening, recognisable to the aggregator
    marker = np.nextafter(updates[0][key].flat[0], np.float32(1))
    updates[0][key].flat[0] = marker
    real_aggregate = reply_judge.aggregate

    def fragile(name, states, weights):
        if any(s[key].flat[0] == marker for s in states):
            raise ValueError("cannot combine this one")
        return real_aggregate(name, states, weights)

    monkeypatch.setattr(reply_judge, "aggregate", fragile)
    replies = [reply_for(m, u) for m, u in zip(messages, updates, strict=True)]
    entry, arrays, metrics = _aggregate(strategy, messages, replies)
    assert entry.status == "rejected" and "cannot be aggregated" in entry.reason
    assert entry.paid == 0 and entry.held == 0
    assert metrics["participants"] == 2 and strategy.outputs.rows[-1]["participants"] == 2
    merged = record_to_adapter(arrays)
    expected = _mean(strategy, messages[1:], updates[1:])
    for k in merged:
        np.testing.assert_allclose(merged[k], expected[k], rtol=1e-5, atol=1e-7)


def test_nothing_is_paid_when_no_module_can_be_aggregated(tmp_path, smoke_module, monkeypatch):
    strategy, _, messages, updates = _round(tmp_path, smoke_module)

    def broken(name, states, weights):
        raise MemoryError("no memory")

    monkeypatch.setattr(reply_judge, "aggregate", broken)
    arrays, metrics = strategy.aggregate_train(
        1, [reply_for(m, u) for m, u in zip(messages, updates, strict=True)]
    )
    assert arrays is None and metrics["participants"] == 0
    assert {e.status for e in strategy.ledger.entries} == {"rejected"}
    row = strategy.outputs.rows[-1]
    assert row["payments"] == 0 and row["held"] == 0 and row["participants"] == 0


# ------------------------------------------------------------- self-reported figures


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("train-wall-s", -1.0, "train-wall-s -1 outside"),
        ("train-wall-s", 1e300, "train-wall-s 1e+300 outside"),
        ("train-loss", 1e300, "train-loss 1e+300 outside"),
        ("num-examples", 32.0, "num-examples must be an integer"),
        ("train-steps", 2.0, "train-steps must be an integer"),
    ],
)
def test_out_of_bounds_or_mistyped_figures_are_rejected_unpaid_and_unrecorded(
    tmp_path, smoke_module, key, value, reason
):
    strategy, _, messages, updates = _round(tmp_path, smoke_module)
    replies = [reply_for(m, u) for m, u in zip(messages, updates, strict=True)]
    values = dict(replies[0].content[METRICS]) | {key: value}
    replies[0] = _with_metrics(replies[0], MetricRecord(values))
    entry, _, _ = _aggregate(strategy, messages, replies)
    assert entry.status == "rejected" and reason in entry.reason
    assert entry.paid == 0 and entry.held == 0 and entry.wall_s == 0 and entry.es_utility == 0
    assert strategy.outputs.rows[-1]["participants"] == 2


def test_metrics_sent_as_a_config_record_are_rejected(tmp_path, smoke_module):
    strategy, _, messages, updates = _round(tmp_path, smoke_module)
    replies = [reply_for(m, u) for m, u in zip(messages, updates, strict=True)]
    values = {k: str(v) for k, v in replies[0].content[METRICS].items()}  # "32", not 32
    replies[0] = _with_metrics(replies[0], ConfigRecord(values))
    entry, _, _ = _aggregate(strategy, messages, replies)
    assert entry.status == "rejected" and "not a MetricRecord" in entry.reason
