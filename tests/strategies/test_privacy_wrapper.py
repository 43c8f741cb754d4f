"""Central DP around the ContractStrategy: bad replies do not break it, updates are clipped."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord

from fed_agent.privacy import PrivacyConfig, epsilon_spent
from strategies.privacy import ValidatedCentralDP
from strategies.records import adapter_to_record, record_to_adapter
from tests.strategies.fake_grid import set_task_identity
from tests.strategies.test_contract_strategy import honest_updates, make_strategy, reply_for


@pytest.mark.parametrize("fold", [False, True], ids=["offer-query", "offer-in-train"])
def test_dp_round_clips_averages_equally_records_budget_and_rejects_bad_shapes(
    tmp_path, smoke_module, fold
):
    strategy, grid = make_strategy(
        tmp_path, smoke_module, "incentive=optimal", fold=fold, weighting="uniform"
    )
    clip = 1e-3
    privacy = PrivacyConfig(enabled=True, noise_multiplier=1e-9, clipping_norm=clip)
    dp = ValidatedCentralDP(strategy, privacy)
    set_task_identity(0)
    initial = smoke_module.initial_state
    messages = list(dp.configure_train(1, adapter_to_record(initial), ConfigRecord(), grid))
    updates = honest_updates(smoke_module, messages)
    bad = {k: np.zeros((2, 2), np.float32) for k in initial}
    replies = [
        reply_for(messages[0], bad),
        *(reply_for(m, u) for m, u in zip(messages[1:], updates[1:], strict=True)),
    ]
    arrays, _ = dp.aggregate_train(1, replies)

    def clipped(update):
        delta = {k: update[k].astype(np.float64) - initial[k] for k in initial}
        norm = np.sqrt(sum(float((d**2).sum()) for d in delta.values()))
        return {k: d * min(1.0, clip / norm) for k, d in delta.items()}

    expected = [clipped(u) for u in updates[1:]]
    merged = record_to_adapter(arrays)
    for key in initial:
        mean = initial[key] + (expected[0][key] + expected[1][key]) / 2
        np.testing.assert_allclose(merged[key], mean, atol=1e-6)
    statuses = {e.node_id: e.status for e in strategy.ledger.entries}
    assert statuses[messages[0].metadata.dst_node_id] == "rejected"
    assert sorted(statuses.values()) == ["paid", "paid", "rejected"]
    assert strategy.outputs.rows[-1]["dp_epsilon"] == epsilon_spent(
        1e-9, [1], dp.sampling_rate, 1e-5
    )
