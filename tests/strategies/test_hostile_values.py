"""No value a node sends can end a run: every decoder and every per-node path of the strategy
either accepts a value or refuses it with a ProtocolError / a ledger row for that node alone."""

from __future__ import annotations

import math

import pytest
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fed_agent.incentives.profiles import CHANNEL_GAIN, WORKLOAD, PublicFacts
from fed_agent.protocol import (
    ITEM,
    METRICS,
    PUBLIC_FACTS,
    Offer,
    ProtocolError,
    TrainInstruction,
    TrainOffer,
    TrainReply,
    read_choice,
    train_request,
)
from strategies.round_plan import RoundPlan
from tests.strategies.fake_grid import FakeGrid, metadata, set_task_identity
from tests.strategies.test_contract_strategy import NODES, make_strategy, train_round

INT64 = 2**63 - 1
SCALARS = st.one_of(
    st.integers(-INT64, INT64),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.inf, -math.inf, 1e300, -1e300, 0, -1, "inf", "1e300", "nan", ""]),
    st.text(max_size=12),
    st.booleans(),
)
VALUES = st.one_of(
    SCALARS, st.lists(st.floats(), max_size=4), st.lists(st.integers(-INT64, INT64), max_size=4)
)
"""What a Flower ConfigRecord can carry (numbers, strings, bools, lists of numbers)."""

OFFER = Offer(2, 1, -1, False, (1.0, 2.0), (3.0, 4.0), (1.0, 2.0, 1.5, 2.5), (1.0, 1.0, 2.0, 2.0))
VALID = {
    "train instruction": (TrainInstruction.from_dict, TrainInstruction(2, 3, "ab", 2.0, 4.0, 7, 1).to_dict()),
    "offer": (Offer.from_dict, OFFER.to_dict()),
    "train offer": (TrainOffer.from_dict, TrainOffer(OFFER, (3, 5), "cd", 77).to_dict()),
    "train request": (train_request, TrainOffer(OFFER, (3, 5), "cd", 77).to_dict()),
    "train reply": (TrainReply.from_dict, TrainReply(32, 0.5, 3, 1.2, 2, 7, 1).to_dict()),
    "public facts": (PublicFacts.from_dict, PublicFacts(20.0, 1e-8).to_dict()),
    "answer to an offer": (lambda values: read_choice(values, 3), {ITEM: 1}),
}  # fmt: skip


@pytest.mark.parametrize("name", list(VALID))
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_every_decoder_accepts_or_refuses_with_a_protocol_error(name, data):
    decode, valid = VALID[name]
    assert decode(dict(valid)) is not None  # the honest path beside the attack
    values = dict(valid)
    for key in data.draw(st.lists(st.sampled_from(sorted(valid)), max_size=3, unique=True)):
        values[key] = data.draw(VALUES)
    if data.draw(st.booleans()):
        values[data.draw(st.text(max_size=8))] = data.draw(VALUES)
    try:
        decoded = decode(values)
    except ProtocolError as err:
        assert "\n" not in str(err) and len(str(err)) < 400
        return
    # what is accepted is sane: every number in it finite
    numbers = [v for v in _flat(decoded) if isinstance(v, float)]
    assert all(math.isfinite(v) for v in numbers)


def _flat(decoded) -> list:
    if isinstance(decoded, int):
        return [decoded]
    out = []
    for value in vars(decoded).values() if hasattr(decoded, "__dict__") else []:
        out += list(value) if isinstance(value, tuple) else [value]
    return out


class HostileGrid(FakeGrid):
    """The real ClientApp handlers, except that ``hostile`` nodes answer a public-facts query
    with ``facts`` and an offer with ``answer`` (as MetricRecord content)."""

    def __init__(self, hostile: int, facts: dict | None, answer: dict | None) -> None:
        super().__init__(NODES, "smoke", "federation.fold_offers=false")
        self.hostile, self.facts, self.answer = hostile, facts, answer

    def send_and_receive(self, messages, timeout=None) -> list[Message]:
        honest = [m for m in messages if m.metadata.dst_node_id != self.hostile]
        replies = super().send_and_receive(honest, timeout)
        for message in messages:
            if message.metadata.dst_node_id == self.hostile:
                replies.append(self._hostile_reply(message))
        return replies

    def _hostile_reply(self, message: Message) -> Message:
        asks_facts = message.content["config"]["phase"] == PUBLIC_FACTS
        if asks_facts:
            content = RecordDict({PUBLIC_FACTS: ConfigRecord(self.facts or {})})
        else:
            content = RecordDict({METRICS: MetricRecord(self.answer or {})})
        return Message(content, metadata=metadata(self.hostile, 0, "query"))


FACTS = st.fixed_dictionaries({WORKLOAD: VALUES, CHANNEL_GAIN: VALUES})
NUMBERS = st.one_of(
    st.integers(-INT64, INT64),
    st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.floats(), max_size=3),
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(facts=FACTS, item=NUMBERS)
def test_a_node_sending_any_values_loses_only_its_own_place(tmp_path, smoke_module, facts, item):
    strategy, _ = make_strategy(tmp_path, smoke_module, "incentive=optimal")
    hostile = NODES[0]
    grid = HostileGrid(hostile, facts, {ITEM: item})
    plan = RoundPlan(1, 1, smoke_module.initial_state)
    set_task_identity(0)
    recruiter = strategy.recruiter
    offered, _ = recruiter.design_offers(grid, plan, NODES)
    choices = recruiter.collect_choices(grid, plan, offered)
    chosen, _ = recruiter.select(plan, offered, choices)
    # the honest ESs are offered and take part whatever the hostile one sent
    assert set(NODES[1:]) <= set(chosen)
    rows = [e for e in strategy.ledger.entries if e.node_id == hostile]
    if hostile in chosen:  # its values were sane: it took part like any ES
        assert hostile in strategy.facts and not rows
    else:
        assert len(rows) == 1 and rows[0].status in ("incompatible", "rejected", "declined")
        assert "\n" not in rows[0].reason and len(rows[0].reason) <= 200


@pytest.mark.parametrize(
    "facts, answer, status",
    [
        ({WORKLOAD: math.inf, CHANNEL_GAIN: 1e-8}, None, "incompatible"),
        ({WORKLOAD: 1e300, CHANNEL_GAIN: 1e-8}, None, "incompatible"),
        ({WORKLOAD: "inf", CHANNEL_GAIN: 1e-8}, None, "incompatible"),
        ({WORKLOAD: 20.0, CHANNEL_GAIN: math.inf}, None, "incompatible"),
        ({WORKLOAD: 20.0, CHANNEL_GAIN: 1e-8}, {ITEM: math.inf}, "rejected"),
        ({WORKLOAD: 20.0, CHANNEL_GAIN: 1e-8}, {ITEM: -math.inf}, "rejected"),
    ],
)
def test_the_reported_attacks_cost_the_node_its_place_and_the_round_goes_on(
    tmp_path, smoke_module, facts, answer, status
):
    strategy, _ = make_strategy(tmp_path, smoke_module, "incentive=optimal")
    hostile = NODES[0]
    grid = HostileGrid(hostile, facts, answer)
    messages, _ = train_round(strategy, grid, smoke_module)
    assert sorted(m.metadata.dst_node_id for m in messages) == NODES[1:]
    [row] = [e for e in strategy.ledger.entries if e.node_id == hostile]
    assert row.status == status and row.paid == 0
    assert ("no valid market" in row.reason or "finite" in row.reason) == (status != "rejected")
    assert ("must be an integer" in row.reason) == (status == "rejected")


def test_a_huge_multi_line_reason_reaches_the_ledger_and_csv_as_one_short_line(
    tmp_path, smoke_module
):
    import csv
    import io

    from flwr.app.error import Error
    from flwr.common.constant import ErrorCode

    from tests.strategies.test_contract_strategy import honest_updates, reply_for

    strategy, grid = make_strategy(tmp_path, smoke_module, "incentive=optimal")
    messages, _ = train_round(strategy, grid, smoke_module)
    bad = messages[0].metadata.dst_node_id
    updates = honest_updates(smoke_module, messages[1:])
    replies = [reply_for(m, u) for m, u in zip(messages[1:], updates, strict=True)]
    huge = ("x" * 1_000_000 + "\n") * 5 + "the last line, with, commas"
    error = Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, huge)
    replies.append(Message(error=error, metadata=metadata(bad, 0, "train")))
    _, metrics = strategy.aggregate_train(1, replies)
    assert metrics["participants"] == 2  # the honest path beside the attack
    [row] = [e for e in strategy.ledger.entries if e.node_id == bad]
    assert row.status == "rejected" and row.paid == 0
    assert row.reason == "the last line, with, commas"
    text = (strategy.outputs.root / "ledger.csv").read_text()
    assert len(text) < 5_000
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 3 and [r["reason"] for r in rows if r["node_id"] == str(bad)] == [
        row.reason
    ]
