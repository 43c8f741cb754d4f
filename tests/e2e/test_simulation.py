"""End to end: `fed-agent run` launches a real Flower simulation and checks its final status."""

from __future__ import annotations

import json

import pandas as pd
import psutil
import pytest

from fed_agent.deploy import launcher
from fed_agent.deploy.launcher import FederationRunError, launch_simulation
from fed_agent.packaging.export import load_agent

pytestmark = pytest.mark.slow


def _no_leftover_processes(before: set[int]) -> list[str]:
    now = psutil.Process().children(recursive=True)
    return [p.name() for p in now if p.pid not in before and p.is_running()]


@pytest.mark.timeout(900)
def test_contract_run_completes_pays_ledger_and_exports_a_loadable_agent(tmp_path):
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    outcome = launch_simulation("smoke", f"incentive=optimal output_dir={tmp_path}")
    assert outcome.status == "finished:completed"
    metrics = pd.read_csv(outcome.output_dir / "metrics.csv")
    assert list(metrics["round"]) == [0, 1, 2]
    assert metrics["participants"].iloc[1:].tolist() == [3, 3]
    assert (metrics["cloud_utility"].iloc[1:] > 0).all()
    # the held-out answer loss falls as the modules are aggregated
    assert metrics["answer_loss"].iloc[-1] < metrics["answer_loss"].iloc[0]
    ledger = pd.read_csv(outcome.output_dir / "ledger.csv")
    paid = ledger[ledger["status"] == "paid"]
    assert len(paid) == 6 and not paid.duplicated(["round", "node_id"]).any()
    # ex ante (the default market): period-1 pay is held until the period-2 work, then paid
    first, second = paid[paid["round"] == 1], paid[paid["round"] == 2]
    assert (first["paid"] == 0).all() and (first["held"] == first["reward_offered"]).all()
    assert (second["paid"] == second["reward_offered"] + second["released"]).all()
    assert second["released"].sum() == pytest.approx(first["held"].sum())
    assert (paid["reward_offered"] >= 0).all() and paid["reward_offered"].sum() > 0
    manifest = json.loads((outcome.output_dir / "agent" / "manifest.json").read_text())
    assert manifest["round"] == 2
    module, _ = load_agent(outcome.output_dir / "agent", seed=0)
    assert module.base.fingerprint == manifest["base"]["fingerprint"]
    assert _no_leftover_processes(before) == []


@pytest.mark.timeout(600)
def test_a_failing_server_app_is_reported_as_failed(tmp_path, monkeypatch):
    # a designer checkpoint that exists but is not one makes the ServerApp raise after
    # start-up once the launcher's own check of it is skipped (`fed-agent run` refuses it
    # before any process: tests/config/test_config_validation.py)
    monkeypatch.setattr(launcher, "check_contracts", lambda cfg: None)
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(FederationRunError, match="finished:failed"):
        launch_simulation("smoke", f"incentive.designer_checkpoint={corrupt} output_dir={tmp_path}")


@pytest.mark.timeout(1500)
def test_a_resumed_run_continues_with_the_same_module_and_pays_no_round_twice(tmp_path):
    first = launch_simulation("smoke", f"incentive=optimal output_dir={tmp_path}")
    latest = json.loads((first.output_dir / "checkpoints" / "LATEST.json").read_text())
    assert latest["round"] == 2
    resumed = launch_simulation(
        "smoke",
        f"incentive=optimal output_dir={tmp_path} run_name=resumed "
        f"federation.num_rounds=3 federation.resume_from={first.output_dir}",
    )
    metrics = pd.read_csv(resumed.output_dir / "metrics.csv")
    assert list(metrics["round"]) == [0, 1, 2, 3]
    # the resumed run starts from the checkpointed module: its round-2 evaluation is of it
    assert metrics.loc[metrics["round"] == 2, "adapter_sha256"].item() == latest["adapter_sha256"]
    ledger = pd.read_csv(resumed.output_dir / "ledger.csv")
    paid = ledger[ledger["status"] == "paid"]
    assert sorted(paid["round"].unique()) == [1, 2, 3]
    assert not paid.duplicated(["round", "node_id"]).any()
    before = pd.read_csv(first.output_dir / "ledger.csv")
    assert len(ledger[ledger["round"] <= 2]) == len(before)
