"""Message payload codecs round-trip and refuse malformed payloads."""

from __future__ import annotations

import math

import pytest

from fed_agent.protocol import (
    DECLINE,
    REPLY_METRIC_KEYS,
    Offer,
    PlainTraining,
    ProtocolError,
    TrainInstruction,
    TrainOffer,
    TrainReply,
    train_request,
)

OFFER = Offer(2, 2, 1, False, (1.0, 2.0), (3.0, 4.0), (1.0, 1.5, 2.0, 2.5), (3.0, 3.5, 4.0, 4.5))


def test_train_instruction_round_trip():
    instruction = TrainInstruction(3, 25, "ab" * 32, 2.5, 11.0, 12345, 1)
    assert instruction.to_dict() == {
        "server-round": 3,
        "local-steps": 25,
        "base-fingerprint": "ab" * 32,
        "f-ghz": 2.5,
        "reward": 11.0,
        "nonce": 12345,
        "item": 1,
    }
    assert TrainInstruction.from_dict(instruction.to_dict()) == instruction
    assert train_request(instruction.to_dict()) == instruction


def test_train_offer_round_trip_and_the_instruction_of_an_item():
    train_offer = TrainOffer(OFFER, (3, 5), "cd" * 32, 77)
    values = train_offer.to_dict()
    assert values["phase"] == "offer" and values["item-steps"] == [3, 5]
    assert TrainOffer.from_dict(values) == train_offer
    assert train_request(values) == train_offer
    # period 2, report 1: the second row of the period-2 menu
    assert train_offer.instruction(0) == TrainInstruction(2, 3, "cd" * 32, 2.0, 4.0, 77, 0)
    assert train_offer.instruction(1) == TrainInstruction(2, 5, "cd" * 32, 2.5, 4.5, 77, 1)
    with pytest.raises(ProtocolError, match="outside"):
        train_offer.instruction(2)
    with pytest.raises(ProtocolError, match="step budgets"):
        TrainOffer(OFFER, (3,), "cd" * 32, 77)
    with pytest.raises(ProtocolError, match="list of integers"):
        TrainOffer.from_dict({**values, "item-steps": [3.5, 5]})
    with pytest.raises(ProtocolError, match="missing keys"):
        train_request({k: v for k, v in values.items() if k != "nonce"})


def test_a_train_message_without_contract_keys_is_plain_training():
    request = train_request({"server-round": 4, "lr": 0.01, "proximal-mu": 0.1})
    assert request == PlainTraining(4, ("lr", "proximal-mu"))
    assert train_request({}) == PlainTraining(1, ())
    with pytest.raises(ProtocolError, match="server-round"):
        train_request({"server-round": "4"})


def test_a_partial_contract_message_is_refused_not_read_as_plain_training():
    values = TrainInstruction(3, 25, "ab" * 32, 2.5, 11.0, 12345, 1).to_dict()
    del values["nonce"]
    with pytest.raises(ProtocolError, match=r"missing keys \['nonce'\]"):
        train_request(values)
    with pytest.raises(ProtocolError, match="missing keys"):
        train_request({"server-round": 1, "reward": 3.0})


def test_offer_round_trip_and_checks():
    offer = OFFER
    values = offer.to_dict()
    assert values["f2"] == [1.0, 1.5, 2.0, 2.5] and values["phase"] == "offer"
    assert Offer.from_dict(values) == offer
    assert offer.terms(0) == (2.0, 4.0)
    with pytest.raises(ProtocolError, match="period-1 report"):
        Offer(2, 2, -1, False, (1.0,), (1.0,), (1.0,), (1.0,))
    with pytest.raises(ProtocolError, match="malformed offer"):
        Offer(1, 1, -1, False, (1.0, 2.0), (1.0, 2.0), (1.0,), (1.0,))


def test_train_reply_round_trip_and_key_set():
    reply = TrainReply(128, 0.75, 25, 3.5, 3, 12345, 2)
    assert set(reply.to_dict()) == set(REPLY_METRIC_KEYS)
    assert TrainReply.from_dict(reply.to_dict()) == reply


def test_a_declined_train_offer_replies_with_the_same_keys_and_no_work():
    values = TrainReply(0, math.nan, 0, 0.0, 2, 77, DECLINE).to_dict()
    assert set(values) == set(REPLY_METRIC_KEYS) and values["item"] == DECLINE
    assert TrainReply.from_dict(values).item == DECLINE
    with pytest.raises(ProtocolError, match="item -2"):
        TrainReply.from_dict({**values, "item": -2})


def test_idle_reply_keeps_the_same_keys_with_a_finite_loss():
    values = TrainReply(0, math.nan, 0, 0.0, 1, 0).to_dict()
    assert set(values) == set(REPLY_METRIC_KEYS)
    assert values["train-loss"] == -1.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"extra": 1.0}, "unexpected keys"),
        ({"train-loss": float("nan")}, "train-loss must be a finite number"),
        ({"num-examples": -5}, "negative"),
    ],
)
def test_malformed_reply_is_refused(change, message):
    values = {**TrainReply(10, 0.5, 2, 1.0, 1, 0).to_dict(), **change}
    with pytest.raises(ProtocolError, match=message):
        TrainReply.from_dict(values)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("num-examples", "32", "num-examples must be an integer"),
        ("num-examples", True, "num-examples must be an integer"),
        ("num-examples", 32.0, "num-examples must be an integer"),
        ("train-steps", False, "train-steps must be an integer"),
        ("server-round", "1", "server-round must be an integer"),
        ("nonce", 1.5, "nonce must be an integer"),
        ("nonce", 2**53, "invalid round 1, nonce"),
        ("server-round", 0, "invalid round 0"),
        ("train-wall-s", -0.5, "train-wall-s -0.5 outside"),
        ("train-wall-s", 1e300, "outside"),
        ("train-wall-s", True, "train-wall-s must be a finite number"),
        ("train-wall-s", "0.5", "train-wall-s must be a finite number"),
        ("train-loss", math.inf, "train-loss must be a finite number"),
        ("train-loss", -3.0, "train-loss -3 outside"),
    ],
)
def test_self_reported_figures_are_typed_and_bounded(key, value, message):
    values = {**TrainReply(10, 0.5, 2, 1.0, 1, 0).to_dict(), key: value}
    with pytest.raises(ProtocolError, match=message):
        TrainReply.from_dict(values)


def test_a_reply_carries_nothing_that_depends_on_the_private_type():
    """No self-reported utility (with the public cost it reveals the exact willingness) and
    no modelled latency (the cloud derives it from public facts and the contract)."""
    assert set(REPLY_METRIC_KEYS) == {
        "num-examples",
        "train-loss",
        "train-steps",
        "train-wall-s",
        "server-round",
        "nonce",
        "item",  # the ES's choice: what answering the offer reveals anyway, nothing more
    }


def test_missing_key_is_refused():
    values = TrainReply(10, 0.5, 2, 1.0, 1, 0).to_dict()
    del values["train-steps"]
    with pytest.raises(ProtocolError, match="missing keys"):
        TrainReply.from_dict(values)
