"""Checkpoints are atomic, hash-checked, and a strategy's state survives a round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fed_agent.checkpoints import CheckpointError, adapter_sha256, load_latest, save_checkpoint
from fed_agent.incentives.ledger import Ledger, LedgerEntry
from tests.strategies.test_contract_strategy import make_strategy, train_round


def test_latest_checkpoint_round_trips_and_keeps_two(tmp_path):
    ledger = Ledger(tmp_path / "ledger.csv")
    ledger.add(LedgerEntry(1, 1, 7, "paid", item=1, f_ghz=2.0, reward_offered=3.0, paid=3.0))
    ledger.write()
    (tmp_path / "metrics.csv").write_text("round,decision_accuracy\n0,0.1\n1,0.2\n2,0.3\n")
    root = tmp_path / "checkpoints"
    for r in (1, 2, 3):
        state = {"a": np.full((2, 2), r, np.float32)}
        save_checkpoint(root, r, state, {"round": r}, ledger.csv_text())
    assert sorted(p.name for p in root.glob("round-*")) == ["round-00002", "round-00003"]
    checkpoint = load_latest(tmp_path)
    assert checkpoint.server_round == 3 and checkpoint.state == {"round": 3}
    assert np.array_equal(checkpoint.adapter["a"], np.full((2, 2), 3, np.float32))
    assert "paid" in checkpoint.ledger_csv
    assert [row["round"] for row in checkpoint.metrics] == [0, 1, 2]


def test_a_checkpoint_that_does_not_match_its_hash_is_refused(tmp_path):
    root = tmp_path / "checkpoints"
    save_checkpoint(root, 1, {"a": np.zeros(3, np.float32)}, {}, "")
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


def _three_checkpoints(tmp_path):
    ledger = Ledger(tmp_path / "ledger.csv")
    root = tmp_path / "checkpoints"
    for r in (1, 2, 3):
        ledger.add(LedgerEntry(r, 1, 7, "paid", item=1, f_ghz=2.0, reward_offered=3.0, paid=3.0))
        ledger.write()
        save_checkpoint(
            root, r, {"a": np.full((2, 2), r, np.float32)}, {"round": r}, ledger.csv_text()
        )
    return root


def _truncate(path):
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


@pytest.mark.parametrize("name", ["adapter.safetensors", "state.json", "ledger.csv"])
def test_a_truncated_newest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path, name, caplog):
    root = _three_checkpoints(tmp_path)
    _truncate(root / "round-00003" / name)
    checkpoint = load_latest(tmp_path)
    assert checkpoint.server_round == 2 and checkpoint.state == {"round": 2}
    assert np.array_equal(checkpoint.adapter["a"], np.full((2, 2), 2, np.float32))
    assert str(root / "round-00003" / name) in caplog.text


def test_a_paid_row_added_to_the_checkpoint_ledger_is_caught_by_the_hash(tmp_path):
    root = _three_checkpoints(tmp_path)
    ledger = root / "round-00003" / "ledger.csv"
    lines = ledger.read_text().splitlines()
    ledger.write_text("\n".join([*lines, lines[-1].replace("7,", "8,", 1)]) + "\n")
    checkpoint = load_latest(tmp_path)
    assert checkpoint.server_round == 2
    assert len(checkpoint.ledger_csv.splitlines()) == 3  # header, rounds 1 and 2: no added row


def test_a_truncated_state_json_is_an_error_naming_the_file(tmp_path):
    root = tmp_path / "checkpoints"
    save_checkpoint(root, 1, {"a": np.zeros(3, np.float32)}, {"x": 1}, "")
    state = root / "round-00001" / "state.json"
    _truncate(state)
    with pytest.raises(CheckpointError, match="no intact checkpoint") as err:
        load_latest(tmp_path)
    assert str(state) in str(err.value)
    # the manifest itself truncated: still an error naming a file, never a bare JSONDecodeError
    manifest = root / "round-00001" / "checkpoint.json"
    _truncate(manifest)
    with pytest.raises(CheckpointError, match="checkpoint.json is corrupt or truncated"):
        load_latest(tmp_path)
