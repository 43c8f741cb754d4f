"""The ServerApp checks ``agent.extend``, the module, the designer and a checkpoint it resumes
before its run folder moves and before its first round."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, RecordDict

from fed_agent.checkpoints import (
    Checkpoint,
    CheckpointError,
    checkpoint_root,
    resume_fields,
    save_checkpoint,
)
from fed_agent.config import load_config
from fed_agent.incentives.ledger import Ledger
from fed_agent.incentives.policies import make_policy
from fed_agent.modules.adapter import AdapterError
from fed_agent.outputs import RunOutputs
from fed_agent.packaging.extend import ExtendError
from fed_agent.rl.checkpoint import CheckpointFileError
from strategies import server_app
from strategies.contract_strategy import ContractStrategy


class NoGrid:
    """A grid the ServerApp must not reach: it fails before its first round."""

    def __getattr__(self, name):
        raise AssertionError(f"the grid was used ({name}) before the bad setting was refused")


def _fails_before_the_run_folder_moves(tmp_path: Path, overrides: str, error, match: str):
    """Run the smoke ServerApp with ``overrides`` beside an earlier run's folder: it raises
    ``error`` and leaves that folder where and as it was."""
    earlier = tmp_path / "smoke"
    earlier.mkdir()
    (earlier / "metrics.csv").write_text("round\n1\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    context = Context(
        run_id=1,
        node_id=0,
        state=RecordDict(),
        node_config={},
        run_config={"experiment": "smoke", "overrides": f"output_dir={tmp_path} {overrides}"},
    )
    with pytest.raises(error, match=match) as err:
        server_app.main(NoGrid(), context)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (earlier / "metrics.csv").read_text() == "round\n1\n"
    return err.value


def test_a_bad_extend_fails_before_the_first_round_and_loses_nothing(tmp_path):
    missing = tmp_path / "perception" / "agent"
    overrides = f"agent.module_name=decision agent.extend={missing}"
    err = _fails_before_the_run_folder_moves(tmp_path, overrides, ExtendError, "is not a directory")
    assert str(missing) in str(err)


def test_a_lora_target_the_base_lacks_fails_before_the_run_folder_moves(tmp_path):
    _fails_before_the_run_folder_moves(
        tmp_path,
        "model.lora_targets=[q_proj,no_such_layer]",
        AdapterError,
        r"model.lora_targets \['no_such_layer'\] name no layer",
    )


def test_a_corrupt_designer_checkpoint_fails_before_the_run_folder_moves(tmp_path):
    corrupt = tmp_path / "designer.npz"
    corrupt.write_bytes(b"PK\x03\x04 truncated zip")
    _fails_before_the_run_folder_moves(
        tmp_path,
        f"incentive.designer_checkpoint={corrupt}",
        CheckpointFileError,
        "is not a designer checkpoint",
    )


def test_a_market_no_contract_can_be_designed_on_fails_before_the_run_folder_moves(tmp_path):
    _fails_before_the_run_folder_moves(
        tmp_path, "market.kappa=1e30", ValueError, "the edmsac policy cannot design a contract"
    )


def _earlier_run_with_checkpoint(tmp_path: Path, adapter, state: dict) -> Path:
    """``<tmp>/smoke``: an earlier smoke run's folder with one checkpoint (round 1) of
    ``adapter`` and ``state``, its hashes agreeing."""
    run_dir = tmp_path / "smoke"
    run_dir.mkdir()
    ledger = Ledger(run_dir / "ledger.csv")
    ledger.write()
    cfg = load_config("smoke")
    save_checkpoint(checkpoint_root(run_dir), 1, adapter, state, "", resume_fields(cfg))
    return run_dir


@pytest.mark.parametrize("fault", ["state of another shape", "adapter of another module"])
def test_a_checkpoint_that_cannot_be_restored_fails_before_the_run_folder_moves(
    tmp_path, smoke_module, fault
):
    if fault == "state of another shape":
        adapter, state = smoke_module.initial_state, {"x": 1}
        match = r"state.json cannot be restored \(KeyError: 'beliefs'\)"
    else:
        adapter = {k: np.zeros(3, np.float32) for k in smoke_module.initial_state}
        state, match = {}, r"adapter.safetensors does not fit the module: adapter tensor"
    run_dir = _earlier_run_with_checkpoint(tmp_path, adapter, state)
    before = {p: p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}
    context = Context(
        run_id=1,
        node_id=0,
        state=RecordDict(),
        node_config={},
        run_config={
            "experiment": "smoke",
            "overrides": f"output_dir={tmp_path} federation.resume_from={run_dir} "
            "federation.num_rounds=2",
        },
    )
    with pytest.raises(CheckpointError, match=match) as err:
        server_app.main(NoGrid(), context)
    assert str(run_dir / "checkpoints" / "round-00001") in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["smoke"]  # nothing moved aside
    assert {p: p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()} == before


def test_the_state_a_strategy_saves_passes_the_restore_check(tmp_path, smoke_module):
    cfg = load_config("smoke")
    policy = make_policy(cfg.incentive, cfg.market.num_types, cfg.market.commitment)
    outputs = RunOutputs.create(str(tmp_path), "run")
    strategy = ContractStrategy(
        cfg, smoke_module, outputs, policy, Ledger(outputs.root / "ledger.csv")
    )
    saved = Checkpoint(1, smoke_module.initial_state, strategy.state_dict(), "", [])
    ContractStrategy.check_saved_state(cfg, smoke_module, policy, saved)
    broken = Checkpoint(1, smoke_module.initial_state, {**saved.state, "facts": [1]}, "", [])
    with pytest.raises(CheckpointError, match="state.json cannot be restored"):
        ContractStrategy.check_saved_state(cfg, smoke_module, policy, broken)
