"""Reply validation and update screening on hand-built Flower reply Messages.

Every attack of ``benchmarks.attacks`` is rejected before aggregation with its reason; a reply
produced by the real ClientApp carries nothing but adapter tensors and allow-listed metrics.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MessageType,
    Metadata,
    MetricRecord,
    RecordDict,
)

from benchmarks.attacks import MALFORMED_ATTACKS, VALUE_ATTACKS, apply_attack
from fed_agent.protocol import (
    ARRAYS,
    CONFIG,
    METRICS,
    REPLY_METRIC_KEYS,
    TrainInstruction,
    TrainReply,
)
from strategies.records import adapter_to_record
from strategies.validation import (
    AcceptedReply,
    RejectedReply,
    screen_updates,
    split_replies,
    validate_reply,
)
from tests.strategies.fake_grid import metadata

MAX_EXAMPLES = 32
HONEST_METRICS = TrainReply(32, 1.5, 4, 0.3, 1, 7).to_dict()
NODE_UNAVAILABLE = 5
EXPECTED_REASON = {
    "nan": "NaN or Inf",
    "inf": "NaN or Inf",
    "wrong_shape": "has shape",
    "missing_key": "missing ['",
    "extra_key": "unexpected ['extra",
    "fraud_count": "num-examples 1e+09",
    "oversized": "size cap",
}


def _metadata(node_id: int) -> Metadata:
    return metadata(node_id, 0, MessageType.TRAIN)


def _reply(node_id: int, adapter: dict, metrics: dict) -> Message:
    content = RecordDict({ARRAYS: adapter_to_record(adapter), METRICS: MetricRecord(metrics)})
    return Message(content=content, metadata=_metadata(node_id))


def _honest_states(module, n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Updates with a shared direction and per-ES variation, around the initial adapter."""
    rng = np.random.default_rng(seed)
    base = module.initial_state
    direction = {k: rng.normal(size=v.shape) for k, v in base.items()}
    return [
        {
            k: (v + 1e-3 * (direction[k] + 0.5 * rng.normal(size=v.shape))).astype(np.float32)
            for k, v in base.items()
        }
        for _ in range(n)
    ]


def test_honest_reply_is_accepted(smoke_module) -> None:
    state = _honest_states(smoke_module, 1)[0]
    outcome = validate_reply(_reply(7, state, HONEST_METRICS), smoke_module, MAX_EXAMPLES)
    assert isinstance(outcome, AcceptedReply)
    assert outcome.node_id == 7 and outcome.metrics.num_examples == 32


@pytest.mark.parametrize("attack", MALFORMED_ATTACKS)
def test_each_malformed_attack_is_rejected_with_its_reason(smoke_module, attack: str) -> None:
    honest = _honest_states(smoke_module, 1)[0]
    adapter, metrics = apply_attack(
        attack, honest, smoke_module.initial_state, HONEST_METRICS, np.random.default_rng(0)
    )
    accepted, rejected = split_replies([_reply(3, adapter, metrics)], smoke_module, MAX_EXAMPLES)
    assert accepted == []
    assert rejected[0].node_id == 3
    assert EXPECTED_REASON[attack] in rejected[0].reason


@pytest.mark.parametrize("claimed", [0, -5, 1.5, 33, 10**9])
def test_fraudulent_example_counts_are_rejected(smoke_module, claimed: float) -> None:
    state = _honest_states(smoke_module, 1)[0]
    metrics = {**HONEST_METRICS, "num-examples": claimed}
    outcome = validate_reply(_reply(1, state, metrics), smoke_module, MAX_EXAMPLES)
    assert isinstance(outcome, RejectedReply)
    assert "num-examples" in outcome.reason or "negative counts" in outcome.reason


@pytest.mark.parametrize(
    ("metrics", "reason"),
    [
        ({k: v for k, v in HONEST_METRICS.items() if k != "train-loss"}, "missing keys"),
        ({**HONEST_METRICS, "label-histogram": 3.0}, "unexpected keys ['label-histogram']"),
        ({**HONEST_METRICS, "train-loss": float("nan")}, "train-loss must be a finite number"),
    ],
)
def test_metric_keys_and_values_are_checked(smoke_module, metrics: dict, reason: str) -> None:
    state = _honest_states(smoke_module, 1)[0]
    outcome = validate_reply(_reply(1, state, metrics), smoke_module, MAX_EXAMPLES)
    assert isinstance(outcome, RejectedReply) and reason in outcome.reason


def test_an_extra_record_is_rejected(smoke_module) -> None:
    state = _honest_states(smoke_module, 1)[0]
    content = RecordDict(
        {
            ARRAYS: adapter_to_record(state),
            METRICS: MetricRecord(HONEST_METRICS),
            "leak": ConfigRecord({"sample": "a scene description"}),
        }
    )
    outcome = validate_reply(Message(content=content, metadata=_metadata(1)), smoke_module, 32)
    assert isinstance(outcome, RejectedReply) and "unexpected records" in outcome.reason


def test_a_non_float32_adapter_is_rejected(smoke_module) -> None:
    state = {k: v.astype(np.float16) for k, v in _honest_states(smoke_module, 1)[0].items()}
    outcome = validate_reply(_reply(1, state, HONEST_METRICS), smoke_module, MAX_EXAMPLES)
    assert isinstance(outcome, RejectedReply) and "dtype float16" in outcome.reason


def test_an_error_reply_from_a_dead_node_is_rejected_not_raised(smoke_module) -> None:
    dead = Message(error=Error(NODE_UNAVAILABLE, "node unavailable"), metadata=_metadata(9))
    accepted, rejected = split_replies([dead], smoke_module, MAX_EXAMPLES)
    assert accepted == [] and rejected[0].node_id == 9
    assert rejected[0].reason.startswith(f"client error {NODE_UNAVAILABLE}")


@pytest.mark.parametrize("attack", VALUE_ATTACKS)
def test_screening_removes_value_attacks_at_20_percent(smoke_module, attack: str) -> None:
    global_state = smoke_module.initial_state
    states = _honest_states(smoke_module, 10)
    rng = np.random.default_rng(1)
    messages = [
        _reply(i, *apply_attack(attack, s, global_state, HONEST_METRICS, rng))
        if i < 2
        else _reply(i, s, HONEST_METRICS)
        for i, s in enumerate(states)
    ]
    accepted, rejected = split_replies(messages, smoke_module, MAX_EXAMPLES)
    assert len(accepted) == 10 and rejected == []  # well-formed: validation cannot tell
    kept, screened = screen_updates(global_state, accepted)
    assert sorted(r.node_id for r in screened) == [0, 1]
    assert [r.node_id for r in kept] == list(range(2, 10))
    verdict = {"stale": "stale", "sign_flip": "sign-flip", "scale": "scaled", "noise": "noise"}
    assert all(r.reason.startswith(verdict[attack]) for r in screened)


def test_screening_nothing_returns_nothing() -> None:
    assert screen_updates({}, []) == ([], [])


@pytest.mark.timeout(300)
def test_a_client_reply_carries_only_adapter_tensors_and_allow_listed_metrics(
    smoke_cfg, smoke_module
) -> None:
    """Privacy: no raw data, text or extra records leave an ES."""
    from clients.client_app import train

    instruction = TrainInstruction(1, 1, smoke_module.base.fingerprint, 2.0, 10.0, 99)
    message = Message(
        content=RecordDict(
            {
                ARRAYS: adapter_to_record(smoke_module.initial_state),
                CONFIG: ConfigRecord(instruction.to_dict()),
            }
        ),
        metadata=_metadata(0),
    )
    context = Context(
        run_id=1,
        node_id=5,
        node_config={"partition-id": 0, "num-partitions": 3},
        state=RecordDict(),
        run_config={"experiment": "smoke", "overrides": ""},
    )
    reply = train(message, context)
    content = reply.content
    assert set(content.keys()) == {ARRAYS, METRICS}
    assert isinstance(content[ARRAYS], ArrayRecord)
    assert isinstance(content[METRICS], MetricRecord)
    arrays = {k: v.numpy() for k, v in content[ARRAYS].items()}
    assert list(arrays) == smoke_module.adapter_keys
    assert all(a.dtype == np.float32 for a in arrays.values())
    assert {k: a.shape for k, a in arrays.items()} == {
        k: v.shape for k, v in smoke_module.initial_state.items()
    }
    assert set(content[METRICS]) == set(REPLY_METRIC_KEYS)
    assert all(isinstance(v, int | float) for v in content[METRICS].values())
    assert isinstance(
        validate_reply(reply, smoke_module, smoke_cfg.data.samples_per_es), AcceptedReply
    )


def test_screening_uses_the_contracted_effort_when_given(smoke_module) -> None:
    global_state = smoke_module.initial_state
    states = _honest_states(smoke_module, 6)
    states[5] = {k: global_state[k] + (v - global_state[k]) / 20 for k, v in states[5].items()}
    messages = [_reply(i, s, HONEST_METRICS) for i, s in enumerate(states)]
    accepted, _ = split_replies(messages, smoke_module, MAX_EXAMPLES)
    _, flagged = screen_updates(global_state, accepted)
    assert [r.node_id for r in flagged] == [5]
    effort = {i: 20.0 for i in range(5)} | {5: 1.0}
    kept, flagged = screen_updates(global_state, accepted, effort=effort)
    assert flagged == [] and len(kept) == 6
