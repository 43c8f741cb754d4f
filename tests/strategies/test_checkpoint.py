"""Checkpoints are atomic, hash-checked, and a strategy's state survives a round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fed_agent.incentives.ledger import Ledger, LedgerEntry
from strategies.checkpoint import adapter_sha256, load_latest, save_checkpoint
from tests.strategies.test_contract_strategy import make_strategy, train_round


def test_latest_checkpoint_round_trips_and_keeps_two(tmp_path):
    ledger = Ledger(tmp_path / "ledger.csv")
    ledger.add(LedgerEntry(1, 1, 7, "paid", item=1, f_ghz=2.0, reward_offered=3.0, paid=3.0))
    ledger.write()
    (tmp_path / "metrics.csv").write_text("round,decision_accuracy\n0,0.1\n1,0.2\n2,0.3\n")
    root = tmp_path / "checkpoints"
    for r in (1, 2, 3):
        state = {"a": np.full((2, 2), r, np.float32)}
        save_checkpoint(root, r, state, {"round": r}, ledger.path)
    assert sorted(p.name for p in root.glob("round-*")) == ["round-00002", "round-00003"]
    checkpoint = load_latest(tmp_path)
    assert checkpoint.server_round == 3 and checkpoint.state == {"round": 3}
    assert np.array_equal(checkpoint.adapter["a"], np.full((2, 2), 3, np.float32))
    assert "paid" in checkpoint.ledger_csv
    assert [row["round"] for row in checkpoint.metrics] == [0, 1, 2]


def test_a_checkpoint_that_does_not_match_its_hash_is_refused(tmp_path):
    root = tmp_path / "checkpoints"
    save_checkpoint(root, 1, {"a": np.zeros(3, np.float32)}, {}, tmp_path / "none.csv")
    pointer = json.loads((root / "LATEST.json").read_text())
    pointer["adapter_sha256"] = adapter_sha256({"a": np.ones(3, np.float32)})
    (root / "LATEST.json").write_text(json.dumps(pointer))
    with pytest.raises(ValueError, match="does not match"):
        load_latest(root)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_latest(tmp_path / "elsewhere")


def test_strategy_state_survives_a_round_trip(tmp_path, smoke_module):
    strategy, grid = make_strategy(tmp_path, smoke_module, "incentive=optimal")
    train_round(strategy, grid, smoke_module)
    state = json.loads(json.dumps(strategy.state_dict()))
    restored, _ = make_strategy(tmp_path / "b", smoke_module, "incentive=optimal")
    restored.load_state_dict(state)
    assert restored.facts == strategy.facts
    for node, engagement in strategy.engagements.items():
        other = restored.engagements[node]
        assert other.report == engagement.report
        assert np.allclose(other.contract.r2, engagement.contract.r2)
        assert np.allclose(other.market.prior, engagement.market.prior)
    for node in strategy.engagements:
        assert np.allclose(restored.beliefs.belief(node), strategy.beliefs.belief(node))
