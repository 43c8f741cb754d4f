"""The ClientApp outside the contract protocol: plain TRAIN messages, EVALUATE, train offers,
and the proof of identity in the public facts.

Flower's own strategies (FedAvg) send a TRAIN message with the module and a config of their own
keys; the ES trains ``training.local_steps`` and notes the keys it does not use. EVALUATE
measures the received module on the ES's local split. The public facts carry the ES's
identity, signed over the query's challenge with the key its node config names; a key file
that cannot be used is one error line on the node and one error reply, without its path.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict

from benchmarks.message_cost import PROJECT_ROOT, message_cost
from clients.client_app import evaluate, query, train
from fed_agent.deploy.certs import generate_node_keys
from fed_agent.es_keys import verify
from fed_agent.protocol import (
    ARRAYS,
    CONFIG,
    DECLINE,
    ES_IDENTITY,
    ES_PROOF,
    ES_PUBLIC_KEY,
    IDENTITY_CHALLENGE,
    IDENTITY_KEY,
    METRICS,
    PHASE,
    PUBLIC_FACTS,
    REPLY_METRIC_KEYS,
    Offer,
    ProtocolError,
    TrainOffer,
    TrainReply,
)
from strategies.records import adapter_to_record, record_to_adapter
from tests.strategies.fake_grid import metadata, set_task_identity

NODE = 7


def _context(overrides: str = "") -> Context:
    return Context(
        run_id=1,
        node_id=NODE,
        state=RecordDict(),
        node_config={"partition-id": 0, "num-partitions": 3},
        run_config={"experiment": "smoke", "overrides": overrides},
    )


def _message(kind: str, content: RecordDict) -> Message:
    return Message(content=content, metadata=metadata(0, NODE, kind, "m1"))


def _call(handler, message: Message, context: Context) -> Message:
    set_task_identity(NODE)
    try:
        return handler(message, context)
    finally:
        set_task_identity(0)


def test_a_plain_train_message_trains_the_configured_steps_and_notes_unknown_keys(
    smoke_module, caplog
):
    config = ConfigRecord({"server-round": 2, "lr": 0.01})
    content = RecordDict({ARRAYS: adapter_to_record(smoke_module.initial_state), CONFIG: config})
    with caplog.at_level(logging.INFO, logger="clients"):
        reply = _call(train, _message("train", content), _context())
    metrics = TrainReply.from_dict(dict(reply.content[METRICS]))
    assert metrics.train_steps == 4  # smoke: training.local_steps
    assert metrics.server_round == 2 and metrics.item == DECLINE and metrics.num_examples == 32
    trained = record_to_adapter(reply.content[ARRAYS])
    assert trained.keys() == smoke_module.initial_state.keys()
    assert any(not np.array_equal(trained[k], smoke_module.initial_state[k]) for k in trained)
    assert "config keys not used: lr" in caplog.text


def test_flowers_fedavg_aggregates_the_plain_replies(smoke_module):
    """What FedAvg needs of a reply: one ArrayRecord and num-examples in one MetricRecord."""
    from flwr.serverapp.strategy import FedAvg

    content = RecordDict(
        {
            ARRAYS: adapter_to_record(smoke_module.initial_state),
            CONFIG: ConfigRecord({"server-round": 1}),
        }
    )
    replies = []
    for pid in (0, 1):
        context = _context()
        context.node_config["partition-id"] = pid
        reply = _call(train, _message("train", content), context)
        replies.append(Message(content=reply.content, metadata=metadata(10 + pid, 0, "train")))
    arrays, metrics = FedAvg().aggregate_train(1, replies)
    assert record_to_adapter(arrays).keys() == smoke_module.initial_state.keys()
    assert set(metrics) <= set(REPLY_METRIC_KEYS)
    assert metrics["train-steps"] == pytest.approx(4)


def test_a_train_message_with_part_of_a_contract_is_refused(smoke_module):
    config = ConfigRecord({"server-round": 1, "reward": 3.0, "nonce": 5})
    content = RecordDict({ARRAYS: adapter_to_record(smoke_module.initial_state), CONFIG: config})
    with pytest.raises(ProtocolError, match="missing keys"):
        _call(train, _message("train", content), _context())


def test_a_declined_train_offer_replies_without_arrays(smoke_module):
    # a menu whose only rewards are 0: no type takes an item that pays nothing for work
    offer = Offer(1, 1, DECLINE, False, (3.0,) * 3, (0.0,) * 3, (3.0,) * 9, (0.0,) * 9)
    train_offer = TrainOffer(offer, (2, 2, 2), smoke_module.base.fingerprint, 11)
    content = RecordDict(
        {
            ARRAYS: adapter_to_record(smoke_module.initial_state),
            CONFIG: ConfigRecord(train_offer.to_dict()),
        }
    )
    reply = _call(train, _message("train", content), _context())
    assert ARRAYS not in reply.content.array_records
    metrics = TrainReply.from_dict(dict(reply.content[METRICS]))
    assert (metrics.item, metrics.train_steps, metrics.nonce) == (DECLINE, 0, 11)


def test_evaluate_measures_the_received_module_on_the_local_split(smoke_module):
    content = RecordDict({ARRAYS: adapter_to_record(smoke_module.initial_state)})
    reply = _call(evaluate, _message("evaluate", content), _context())
    metrics = dict(reply.content[METRICS])
    assert metrics["num-examples"] == 32
    assert 0.0 <= metrics["decision-accuracy"] <= 1.0
    assert np.isfinite(metrics["answer-loss"]) and metrics["answer-loss"] > 0


def test_answering_a_query_imports_no_torch():
    """Each deployment message is a fresh process: the query path must not pay for torch."""
    cost = message_cost("public-facts", PROJECT_ROOT)
    assert cost["torch"] is False and cost["cpu_s"] > 0


def _ask_public_facts(context: Context, challenge: str) -> Message:
    content = RecordDict(
        {CONFIG: ConfigRecord({PHASE: PUBLIC_FACTS, IDENTITY_CHALLENGE: challenge})}
    )
    return _call(query, _message("query", content), context)


def test_the_public_facts_prove_the_identity_with_the_node_configs_key(tmp_path):
    (key,) = generate_node_keys(tmp_path, 1)
    context = _context()
    context.node_config[IDENTITY_KEY] = str(key.private_key)
    facts = dict(_ask_public_facts(context, "challenge-1").content[PUBLIC_FACTS])
    assert facts[ES_IDENTITY] == "partition-0-of-3"
    assert facts[ES_PUBLIC_KEY].split() == key.public_key.read_text().split()[:2]
    assert verify(facts[ES_PUBLIC_KEY], facts[ES_IDENTITY], "challenge-1", facts[ES_PROOF])
    assert not verify(facts[ES_PUBLIC_KEY], facts[ES_IDENTITY], "challenge-2", facts[ES_PROOF])


def test_a_missing_key_file_is_one_error_line_and_an_error_reply_without_its_path(tmp_path, caplog):
    context = _context()
    context.node_config[IDENTITY_KEY] = str(tmp_path / "supernode-0")
    with caplog.at_level(logging.ERROR, logger="clients.client_app"):
        reply = _ask_public_facts(context, "challenge-1")
    assert reply.has_error()
    assert reply.error.reason == "node config identity-key: no such file"
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [
        f"ES 0 cannot prove its identity: node config identity key {tmp_path / 'supernode-0'}: "
        "no such file"
    ]
