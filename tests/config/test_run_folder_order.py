"""A bad config or market never moves an earlier run's folder aside: ``fed-agent run`` refuses
it at load time, before the ServerApp exists (the folder is renamed only after that)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_a_bad_market_or_nan_setting_leaves_the_previous_run_folder_in_place(tmp_path):
    out = tmp_path / "outputs"
    (out / "smoke").mkdir(parents=True)
    (out / "smoke" / "metrics.csv").write_text("round\n1\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}
    for override, message in (
        ("market.prior=[0.5,0.5]", "market.prior: must be a list of num_types = 3 numbers"),
        (
            "market.transition=[[0.5,0.6,0.0],[1.0,0.0,0.0],[0.0,0.0,1.0]]",
            "market.transition: must be row-stochastic",
        ),
        ("privacy.noise_multiplier=nan", "privacy.noise_multiplier must be a finite number > 0"),
        ("incentive.flat_fee=nan", "incentive.flat_fee must be a finite number >= 0"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "fed_agent.cli", "run", "--experiment", "smoke", override,
             f"output_dir={out}"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )  # fmt: skip
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr
        assert sorted(p.name for p in out.iterdir()) == ["smoke"]
        assert (out / "smoke" / "metrics.csv").read_text() == "round\n1\n"
