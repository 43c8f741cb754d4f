"""A checkpoint is loaded only from its own folder and resumed only under its own config.

LATEST.json or a ``round-*`` link that leads outside the checkpoints folder is refused; a
resume that changes the economics, the data or the training (anything but the settings in
``RESUMABLE_CHANGES``) is refused naming the field.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from fed_agent.checkpoints import (
    RESUMABLE_CHANGES,
    CheckpointError,
    check_resume_config,
    checkpoint_root,
    load_latest,
    resume_fields,
    save_checkpoint,
)
from fed_agent.config import load_config

ADAPTER = {"a": np.zeros(3, np.float32)}


def _checkpoint(run_dir, overrides: str = ""):
    cfg = load_config("smoke", overrides)
    save_checkpoint(checkpoint_root(run_dir), 1, ADAPTER, {"x": 1}, "", resume_fields(cfg))
    return checkpoint_root(run_dir)


def test_a_latest_pointer_leading_outside_the_checkpoints_folder_is_refused(tmp_path):
    root = _checkpoint(tmp_path / "run")
    outside = _checkpoint(tmp_path / "elsewhere") / "round-00001"  # intact, but not ours
    for target in (f"../../elsewhere/checkpoints/{outside.name}", str(outside)):
        (root / "LATEST.json").write_text(json.dumps({"round": 1, "dir": target}))
        with pytest.raises(CheckpointError, match="not a round-NNNNN checkpoint folder inside"):
            load_latest(root)


@pytest.mark.parametrize("target", ["round-0\x0000001", "round-00001\x00/../x", 5])
def test_a_latest_pointer_that_names_no_folder_is_refused_in_one_line(tmp_path, target):
    """A NUL byte or a number in LATEST.json's dir is a corrupt pointer, not a crash."""
    root = _checkpoint(tmp_path / "run")
    (root / "LATEST.json").write_text(json.dumps({"round": 1, "dir": target}))
    with pytest.raises(CheckpointError, match=r"LATEST.json names .* is not a round-NNNNN"):
        load_latest(root)


def test_a_round_folder_linked_elsewhere_is_refused(tmp_path):
    root = _checkpoint(tmp_path / "run")
    outside = _checkpoint(tmp_path / "elsewhere") / "round-00001"
    (root / "round-00002").symlink_to(outside, target_is_directory=True)
    with pytest.raises(CheckpointError, match="round-00002 is not a round-NNNNN"):
        load_latest(root)


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("seed=1", "seed"),
        ("market.f_max_ghz=2.5", "market.f_max_ghz"),
        ("market.kappa=0.3", "market.kappa"),
        ("market.participation=per_period", "market.participation"),
        ("market.discount=0.9", "market.discount"),
        ("incentive=optimal", "incentive.policy"),
        ("incentive.flat_fee=20", "incentive.flat_fee"),
        ("training.local_steps=8", "training.local_steps"),
        ("training.learning_rate=0.01", "training.learning_rate"),
        ("data.samples_per_es=64", "data.samples_per_es"),
        ("data.dirichlet_alpha=2.0", "data.dirichlet_alpha"),
        ("federation.es_per_round=2", "federation.es_per_round"),
    ],
)
def test_a_resume_that_changes_economics_data_or_training_is_refused_naming_it(
    tmp_path, override, field
):
    checkpoint = load_latest(_checkpoint(tmp_path / "run"))
    with pytest.raises(CheckpointError, match=rf"{field}=.* \(checkpoint\) vs .* \(config\)"):
        check_resume_config(checkpoint, load_config("smoke", override))


def test_run_length_timeouts_and_paths_may_change_on_resume(tmp_path):
    checkpoint = load_latest(_checkpoint(tmp_path / "run"))
    changed = load_config(
        "smoke",
        f"federation.num_rounds=9 federation.round_timeout_s=5 output_dir={tmp_path / 'out'} "
        "run_name=again federation.checkpoint_every=2 model.device=cpu",
    )
    check_resume_config(checkpoint, changed)  # no error
    assert set(RESUMABLE_CHANGES).isdisjoint(resume_fields(changed))


def test_a_checkpoint_recording_fewer_fields_is_refused_naming_the_missing_ones(tmp_path):
    root = _checkpoint(tmp_path / "run")
    checkpoint = load_latest(root)
    older = {k: v for k, v in checkpoint.config.items() if not k.startswith("market.")}
    with pytest.raises(CheckpointError, match=r"market\.kappa='\(not recorded\)'"):
        check_resume_config(
            type(checkpoint)(**{**checkpoint.__dict__, "config": older}), load_config("smoke")
        )


def test_a_resume_with_no_round_left_to_run_is_refused(tmp_path):
    checkpoint = load_latest(_checkpoint(tmp_path / "run"))  # of round 1
    check_resume_config(checkpoint, load_config("smoke", "federation.num_rounds=2"))
    with pytest.raises(CheckpointError, match=r"is of round 1, so federation.num_rounds=1 "):
        check_resume_config(checkpoint, load_config("smoke", "federation.num_rounds=1"))
