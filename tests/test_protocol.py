"""Message payload codecs round-trip and refuse malformed payloads."""

from __future__ import annotations

import math

import pytest

from fed_agent.protocol import (
    REPLY_METRIC_KEYS,
    Offer,
    ProtocolError,
    TrainInstruction,
    TrainReply,
)


def test_train_instruction_round_trip():
    instruction = TrainInstruction(3, 25, "ab" * 32, 2.5, 11.0, 12345)
    assert instruction.to_dict() == {
        "server-round": 3,
        "local-steps": 25,
        "base-fingerprint": "ab" * 32,
        "f-ghz": 2.5,
        "reward": 11.0,
        "nonce": 12345,
    }
    assert TrainInstruction.from_dict(instruction.to_dict()) == instruction


def test_offer_round_trip_and_checks():
    offer = Offer(
        2, 2, 1, False, (1.0, 2.0), (3.0, 4.0), (1.0, 1.5, 2.0, 2.5), (3.0, 3.5, 4.0, 4.5)
    )
    values = {**offer.to_dict(), "phase": "offer"}
    assert values["f2"] == [1.0, 1.5, 2.0, 2.5]
    assert Offer.from_dict(values) == offer
    with pytest.raises(ProtocolError, match="period-1 report"):
        Offer(2, 2, -1, False, (1.0,), (1.0,), (1.0,), (1.0,))
    with pytest.raises(ProtocolError, match="malformed offer"):
        Offer(1, 1, -1, False, (1.0, 2.0), (1.0, 2.0), (1.0,), (1.0,))


def test_train_reply_round_trip_and_key_set():
    reply = TrainReply(128, 0.75, 25, 3.5, 3, 12345)
    assert set(reply.to_dict()) == set(REPLY_METRIC_KEYS)
    assert TrainReply.from_dict(reply.to_dict()) == reply


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
        ("nonce", 2**53, "invalid round 1 or nonce"),
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
    }


def test_missing_key_is_refused():
    values = TrainReply(10, 0.5, 2, 1.0, 1, 0).to_dict()
    del values["train-steps"]
    with pytest.raises(ProtocolError, match="missing keys"):
        TrainReply.from_dict(values)
