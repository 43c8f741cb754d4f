"""The ServerApp checks ``agent.extend``, the module and the designer before its run folder
moves and before its first round."""

from __future__ import annotations

from pathlib import Path

import pytest
from flwr.app import Context, RecordDict

from fed_agent.modules.adapter import AdapterError
from fed_agent.packaging.extend import ExtendError
from fed_agent.rl.checkpoint import CheckpointFileError
from strategies import server_app


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
