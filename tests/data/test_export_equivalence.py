"""A run on exported synthetic files ends where the generated run with the same seed does."""

from __future__ import annotations

import pytest

from benchmarks.in_process import run_in_process
from fed_agent.config import load_config
from fed_agent.data.synthetic_export import export_synthetic


@pytest.mark.slow
def test_a_run_on_exported_files_matches_the_generated_run(tmp_path):
    cfg = load_config("smoke")
    root = tmp_path / "data"
    export_synthetic(cfg.data, cfg.seed, 3, cfg.screening.reference_samples, False, root)
    common = [f"output_dir={tmp_path}", "federation.num_rounds=2"]
    files = [
        "data.source=files",
        f"data.path={root / 'es'}",
        f"data.eval_path={root / 'eval'}",
        f"data.cloud_path={root / 'cloud'}",
    ]

    generated = run_in_process(3, "smoke", [*common, "run_name=generated"])
    from_files = run_in_process(3, "smoke", [*common, "run_name=files", *files])

    columns = ["round", "decision_accuracy", "answer_loss", "adapter_sha256", "participants"]
    assert generated.metrics["participants"].iloc[-1] > 0
    assert from_files.metrics[columns].equals(generated.metrics[columns])
