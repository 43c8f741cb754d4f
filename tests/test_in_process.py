"""The in-process federation: the real strategy and ClientApp handlers, no Flower processes."""

from __future__ import annotations

import pandas as pd
import pytest

from benchmarks.in_process import run_in_process


@pytest.mark.slow
def test_an_in_process_run_trains_pays_and_stops_when_told(tmp_path):
    overrides = [f"output_dir={tmp_path}", "run_name=ip", "federation.num_rounds=3"]
    run = run_in_process(3, "smoke", overrides, stop=lambda accuracy: True)
    assert run.metrics["round"].tolist() == [0, 1]  # round 0, then stopped after round 1
    ledger = pd.read_csv(run.output_dir / "ledger.csv")
    paid = ledger[ledger["status"] == "paid"]
    assert len(paid) == run.metrics["participants"].iloc[-1] > 0
    assert (paid["wall_s"] > 0).all()  # the ESs really trained (the ClientApp's report)
    assert run.metrics["round_latency_model_s"].iloc[-1] == paid["modelled_latency_s"].max()
