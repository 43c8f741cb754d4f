"""Checkpoints are atomic, hash-checked, and a strategy's state survives a round trip."""

from __future__ import annotations

import hashlib
import json
import logging

import numpy as np
import pytest

from fed_agent import cli
from fed_agent.checkpoints import (
    CheckpointError,
    adapter_sha256,
    check_resume_config,
    checkpoint_root,
    load_latest,
    resume_fields,
    save_checkpoint,
)
from fed_agent.config import ConfigError, load_config
from fed_agent.deploy.launcher import check_resume_from, effective_overrides
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


# ------------------------------------------------- refused up front, before anything moves


def _run_folder_with_checkpoint(tmp_path, overrides: str = ""):
    """``<tmp>/smoke``: a run folder of the smoke experiment with one checkpoint (round 1)."""
    cfg = load_config("smoke", overrides)
    run_dir = tmp_path / "smoke"
    ledger = Ledger(run_dir / "ledger.csv")
    ledger.add(LedgerEntry(1, 1, 7, "paid", item=1, f_ghz=2.0, reward_offered=3.0, paid=3.0))
    run_dir.mkdir()
    ledger.write()
    adapter = {"a": np.zeros(3, np.float32)}
    save_checkpoint(
        checkpoint_root(run_dir), 1, adapter, {"x": 1}, ledger.csv_text(), resume_fields(cfg)
    )
    return run_dir


def _snapshot(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _refused_run(tmp_path, run_dir, caplog, overrides: str = "") -> str:
    """``fed-agent run`` resuming ``run_dir``: exit 2, one logged line, nothing moved."""
    before = _snapshot(run_dir)
    argv = ["run", "--experiment", "smoke", f"output_dir={tmp_path}"]
    argv += [f"federation.resume_from={run_dir}", *overrides.split()]
    with caplog.at_level(logging.ERROR):
        assert cli.main(argv) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["smoke"]  # not moved aside
    assert _snapshot(run_dir) == before  # every file unchanged
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0] and "Traceback" not in caplog.text
    return errors[0]


def test_resuming_under_another_config_is_refused_up_front_naming_the_fields(tmp_path, caplog):
    run_dir = _run_folder_with_checkpoint(tmp_path)
    message = _refused_run(tmp_path, run_dir, caplog, "model.lora_r=8 market.num_types=5")
    assert str(run_dir / "checkpoints" / "round-00001" / "checkpoint.json") in message
    assert "model.lora_r=4 (checkpoint) vs 8 (config)" in message
    assert "market.num_types=3 (checkpoint) vs 5 (config)" in message
    # the same config resumes: the check passes and names no field
    checkpoint = load_latest(run_dir)
    check_resume_config(checkpoint, load_config("smoke"))


def test_a_corrupt_checkpoint_is_refused_in_one_line_naming_the_file(tmp_path, caplog):
    run_dir = _run_folder_with_checkpoint(tmp_path)
    state = run_dir / "checkpoints" / "round-00001" / "state.json"
    _truncate(state)
    message = _refused_run(tmp_path, run_dir, caplog)
    assert str(state) in message and "does not match its hash" in message


def test_a_checkpoint_ledger_that_is_no_ledger_is_refused_naming_it(tmp_path):
    run_dir = _run_folder_with_checkpoint(tmp_path)
    folder = run_dir / "checkpoints" / "round-00001"
    ledger = folder / "ledger.csv"
    ledger.write_text("round,node_id,status,surprise\n1,7,paid,1\n")
    manifest = json.loads((folder / "checkpoint.json").read_text())
    manifest["files"]["ledger.csv"] = hashlib.sha256(ledger.read_bytes()).hexdigest()
    (folder / "checkpoint.json").write_text(json.dumps(manifest))  # hashes made to agree
    with pytest.raises(CheckpointError, match="is not a ledger") as err:
        load_latest(run_dir)
    assert str(ledger) in str(err.value)


def _edit_manifest(folder, edit) -> None:
    manifest_path = folder / "checkpoint.json"
    manifest = json.loads(manifest_path.read_text())
    edit(manifest)
    manifest_path.write_text(json.dumps(manifest))


MANIFEST_FAULTS = {
    "no round": (lambda m: m.pop("round"), "round '(not recorded)', not the folder's 1"),
    "a round in words": (lambda m: m.update(round="one"), "round 'one', not the folder's 1"),
    "another round": (lambda m: m.update(round=7), "round 7, not the folder's 1"),
    "files as a list": (
        lambda m: m.update(files=list(m["files"])),
        "no hash of adapter.safetensors in its files",
    ),
    "a file outside": (
        lambda m: m["files"].update({"../../../ledger.csv": "0" * 64}),
        "files other than a hash each of adapter.safetensors, state.json, ledger.csv",
    ),
    "config as a list": (lambda m: m.update(config=[1]), "a config that is not an object"),
}


@pytest.mark.parametrize("fault", list(MANIFEST_FAULTS))
def test_a_manifest_of_the_wrong_shape_is_refused_in_one_line_naming_it(tmp_path, caplog, fault):
    run_dir = _run_folder_with_checkpoint(tmp_path)
    folder = run_dir / "checkpoints" / "round-00001"
    edit, why = MANIFEST_FAULTS[fault]
    _edit_manifest(folder, edit)
    message = _refused_run(tmp_path, run_dir, caplog)
    assert f"{folder / 'checkpoint.json'} is not a checkpoint manifest ({why}" in message


def test_a_checkpoint_without_its_manifest_or_its_config_is_refused(tmp_path, caplog):
    run_dir = _run_folder_with_checkpoint(tmp_path)
    folder = run_dir / "checkpoints" / "round-00001"
    _edit_manifest(folder, lambda m: m.pop("config"))
    message = _refused_run(tmp_path, run_dir, caplog)
    assert f"{folder / 'checkpoint.json'} records no config" in message
    caplog.clear()
    (folder / "checkpoint.json").unlink()  # LATEST.json alone vouches for nothing
    message = _refused_run(tmp_path, run_dir, caplog)
    assert f"{folder / 'checkpoint.json'} is missing" in message


def test_a_relative_input_path_resumes_against_the_absolute_one_the_apps_recorded(
    tmp_path, monkeypatch
):
    """The apps read (and a checkpoint records) ``agent.extend`` and the data folders resolved
    against the launcher's working directory: the same relative value resumes from there, and
    one that names another folder is refused naming the field."""
    monkeypatch.chdir(tmp_path)
    given = ["agent.extend=earlier-agent"]
    apps_cfg = load_config(
        "smoke", effective_overrides(given, load_config("smoke", given), tmp_path / "cache")
    )
    assert apps_cfg.agent.extend == str(tmp_path / "earlier-agent")
    run_dir = tmp_path / "smoke"
    adapter = {"a": np.zeros(3, np.float32)}
    save_checkpoint(checkpoint_root(run_dir), 1, adapter, {}, "", resume_fields(apps_cfg))
    check_resume_from(load_config("smoke", [*given, f"federation.resume_from={run_dir}"]))
    monkeypatch.chdir(run_dir)  # the same text now names another folder
    with pytest.raises(ConfigError, match=r"agent\.extend='.*earlier-agent' \(checkpoint\) vs"):
        check_resume_from(load_config("smoke", [*given, f"federation.resume_from={run_dir}"]))
