"""The ServerApp checks ``agent.extend`` before its run folder and its first round."""

from __future__ import annotations

import pytest
from flwr.app import Context, RecordDict

from fed_agent.modules.adapter import AdapterError
from fed_agent.packaging.extend import ExtendError
from strategies import server_app


def test_a_bad_extend_fails_before_the_first_round_and_loses_nothing(tmp_path):
    earlier = tmp_path / "smoke"
    earlier.mkdir()
    (earlier / "metrics.csv").write_text("round\n1\n")
    missing = tmp_path / "perception" / "agent"
    context = Context(
        run_id=1,
        node_id=0,
        state=RecordDict(),
        node_config={},
        run_config={
            "experiment": "smoke",
            "overrides": f"output_dir={tmp_path} agent.module_name=decision agent.extend={missing}",
        },
    )

    class NoGrid:
        def __getattr__(self, name):
            raise AssertionError(f"the grid was used ({name}) before agent.extend was checked")

    with pytest.raises(ExtendError, match="is not a directory") as err:
        server_app.main(NoGrid(), context)
    assert str(missing) in str(err.value)
    # the earlier run's folder was neither renamed aside nor touched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["smoke"]
    assert (earlier / "metrics.csv").read_text() == "round\n1\n"


def test_a_lora_target_the_base_lacks_fails_before_the_run_folder_moves(tmp_path):
    earlier = tmp_path / "smoke"
    earlier.mkdir()
    (earlier / "metrics.csv").write_text("round\n1\n")
    context = Context(
        run_id=1,
        node_id=0,
        state=RecordDict(),
        node_config={},
        run_config={
            "experiment": "smoke",
            "overrides": f"output_dir={tmp_path} model.lora_targets=[q_proj,no_such_layer]",
        },
    )

    class NoGrid:
        def __getattr__(self, name):
            raise AssertionError(f"the grid was used ({name}) before the module was built")

    with pytest.raises(AdapterError, match=r"model.lora_targets \['no_such_layer'\] name no layer"):
        server_app.main(NoGrid(), context)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["smoke"]
    assert (earlier / "metrics.csv").read_text() == "round\n1\n"


def test_a_corrupt_designer_checkpoint_fails_before_the_run_folder_moves(tmp_path):
    from fed_agent.rl.checkpoint import CheckpointFileError

    earlier = tmp_path / "smoke"
    earlier.mkdir()
    (earlier / "metrics.csv").write_text("round\n1\n")
    corrupt = tmp_path / "designer.npz"
    corrupt.write_bytes(b"PK\x03\x04 truncated zip")
    context = Context(
        run_id=1,
        node_id=0,
        state=RecordDict(),
        node_config={},
        run_config={
            "experiment": "smoke",
            "overrides": f"output_dir={tmp_path} incentive.designer_checkpoint={corrupt}",
        },
    )

    class NoGrid:
        def __getattr__(self, name):
            raise AssertionError(f"the grid was used ({name}) before the policy was loaded")

    with pytest.raises(CheckpointFileError, match="is not a designer checkpoint"):
        server_app.main(NoGrid(), context)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["designer.npz", "smoke"]
    assert (earlier / "metrics.csv").read_text() == "round\n1\n"
