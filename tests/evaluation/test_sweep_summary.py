"""`fed-agent run -m` places each job in its own folder; `fed-agent summarize` tables the sweep."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from fed_agent.cli import main
from fed_agent.config import ConfigError, load_config, to_yaml
from fed_agent.deploy import multirun
from fed_agent.deploy.launcher import FederationRunError, RunOutcome
from fed_agent.evaluation.sweep_summary import SweepError, summarize

ACCURACY = {0: 0.5, 1: 0.7, 2: 0.9}


def fake_launch(experiment, overrides, timeout_s):
    """A run that writes what a real one does (config, metrics); num_es=3 with seed 1 fails."""
    cfg = load_config(experiment, overrides)
    if cfg.federation.num_es == 3 and cfg.seed == 1:
        raise FederationRunError("run 7 ended finished:failed: boom")
    folder = Path(cfg.output_dir) / cfg.run_name
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(to_yaml(cfg))
    accuracy = ACCURACY[cfg.seed] - (0.1 if cfg.federation.num_es == 3 else 0.0)
    pd.DataFrame(
        {
            "round": [0, 1, 2],
            "decision_accuracy": [0.1, 0.3, accuracy],
            "answer_loss": [3.0, 2.0, 1.0 + cfg.seed],
            "cloud_utility": [float("nan"), 10.0, 20.0 + cfg.seed],
        }
    ).to_csv(folder / "metrics.csv", index=False)
    return RunOutcome(7, "finished:completed", "", 1.0, folder)


def test_a_sweep_runs_every_job_in_its_folder_and_the_summary_has_t_intervals(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(multirun, "launch_simulation", fake_launch)
    sweep_dir, jobs = multirun.launch_multirun(
        "smoke", ["federation.num_es=4,3", "seed=0,1,2"], sweep_dir=tmp_path / "sweep a,b"
    )
    assert [j.overrides for j in jobs][:2] == [
        ["federation.num_es=4", "seed=0"],
        ["federation.num_es=4", "seed=1"],
    ]
    assert [j.status for j in jobs] == ["finished:completed"] * 4 + ["failed", "finished:completed"]
    assert all((sweep_dir / str(j.job) / "metrics.csv").exists() for j in jobs if j.job != 4)
    table = summarize(sweep_dir).set_index("setting")
    four = table.loc["federation.num_es=4"]
    assert four.seeds == 3 and four.seed_list == "0 1 2"
    # mean 0.7, sd 0.2 over 3 seeds: t(0.975, 2) = 4.3027 -> half width 0.4968
    assert four.decision_accuracy == pytest.approx(0.7)
    assert four.decision_accuracy_low == pytest.approx(0.7 - 0.49683, abs=1e-4)
    assert four.decision_accuracy_high == pytest.approx(0.7 + 0.49683, abs=1e-4)
    assert four.cloud_utility == pytest.approx(31.0)  # 10 + 20 + seed, mean over seeds 0-2
    three = table.loc["federation.num_es=3"]
    assert three.seeds == 2 and three.seed_list == "0 2"
    assert three.decision_accuracy == pytest.approx(0.6)
    assert (table.failed_jobs == 1).all()


def test_a_bad_job_config_is_refused_before_any_job_runs(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(multirun, "launch_simulation", lambda *a: ran.append(a))
    with pytest.raises(ConfigError):
        multirun.launch_multirun("smoke", ["federation.num_es=4,0"], sweep_dir=tmp_path)
    assert ran == [] and not (tmp_path / "multirun.json").exists()


@pytest.mark.parametrize("bad", ["model_dir", "sweep_under_a_file"])
def test_a_job_the_run_checks_refuse_stops_the_sweep_before_its_first_job(
    tmp_path, monkeypatch, bad
):
    ran = []
    monkeypatch.setattr(multirun, "launch_simulation", lambda *a: ran.append(a))
    good = tmp_path / "hf"
    good.mkdir()
    (good / "config.json").write_text("{}")
    (tmp_path / "a-file").write_text("")
    if bad == "model_dir":  # the second job's base is missing: check_model refuses it
        sweep, message = tmp_path / "sweep", f"model.path '{tmp_path}/missing' must be"
        overrides = ["model=hf", f"model.path={good},{tmp_path / 'missing'}"]
    else:  # every job's run folder would be under a file
        sweep, message = tmp_path / "a-file" / "sweep", f"{tmp_path}/a-file is not a folder"
        overrides = ["seed=0,1"]
    with pytest.raises(ConfigError, match=re.escape(message)):
        multirun.launch_multirun("smoke", overrides, sweep_dir=sweep)
    assert ran == [] and not (tmp_path / "sweep").exists()


def test_the_commands_run_a_sweep_and_write_its_summary(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(multirun, "launch_simulation", fake_launch)
    sweep = tmp_path / "sweep"
    assert main(["run", "-m", "--experiment", "smoke", "--sweep-dir", str(sweep), "seed=0,2"]) == 0
    assert "2 of 2 jobs completed" in capsys.readouterr().out
    assert main(["summarize", str(sweep)]) == 0
    written = pd.read_csv(sweep / "summary.csv")
    assert written.decision_accuracy.tolist() == [pytest.approx(0.6)]  # smoke: 3 ESs
    assert main(["summarize", str(tmp_path)]) == 2  # not a sweep folder
    with pytest.raises(SweepError, match="no multirun.json"):
        summarize(tmp_path)


JOB = {"job": 0, "status": "finished:completed", "overrides": ["seed=0"], "wall_s": 1.0}


@pytest.mark.parametrize(
    ("manifest", "files", "message"),
    [
        ("{bad", {}, "multirun.json is not a multirun manifest: Expecting property name"),
        ("[]", {}, 'multirun.json is not a multirun manifest: expected {"jobs": [{...}, ...]}'),
        ('{"jobs": "x"}', {}, "multirun.json is not a multirun manifest: expected"),
        ('{"jobs": [{"job": 0}]}', {}, "job 0: no 'status'"),
        (json.dumps({"jobs": [JOB]}), {"metrics.csv": "x\n1\n"}, "job 0: no 'round'"),
        (
            json.dumps({"jobs": [JOB]}),
            {"metrics.csv": "round\n1\n", "config.yaml": "seed: [\n"},
            "job 0: while parsing a flow node",
        ),
        (json.dumps({"jobs": [JOB]}), {}, "job 0: [Errno 2] No such file or directory"),
    ],
)
def test_a_broken_sweep_folder_is_one_line_naming_the_file_or_job(
    tmp_path, caplog, manifest, files, message
):
    (tmp_path / "multirun.json").write_text(manifest)
    (tmp_path / "0").mkdir()
    for name, text in files.items():
        (tmp_path / "0" / name).write_text(text)
    assert main(["summarize", str(tmp_path)]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0]
    assert errors[0].startswith(str(tmp_path)) and message in errors[0]
