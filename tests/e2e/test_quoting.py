"""End to end: a run from a checkout, into a folder and under a name with spaces and quotes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fed_agent.config import hydra_quoted

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _copy_checkout(target: Path) -> None:
    """This checkout's source (tracked and new files, not ignored ones) copied to ``target``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


@pytest.mark.timeout(900)
def test_spaces_and_quotes_in_the_checkout_output_and_run_name_reach_the_apps(tmp_path):
    checkout = tmp_path / 'check out\'s "copy"'
    _copy_checkout(checkout)
    output = tmp_path / "out dir" / 'it\'s "here"'
    run_name = 'my "quoted" run\'s'
    env = {
        **os.environ,
        "PYTHONPATH": str(checkout),
        "HF_HUB_OFFLINE": "1",
        # the built tiny bases of this checkout: the copy need not build them again
        "FED_AGENT_CACHE": os.environ.get("FED_AGENT_CACHE", str(ROOT / ".cache" / "fed_agent")),
    }
    command = [sys.executable, "-m", "fed_agent.cli", "run", "--experiment", "smoke"]
    command += [
        f"output_dir={hydra_quoted(str(output))}",
        f"run_name={hydra_quoted(run_name)}",
        "federation.num_rounds=1",
        "incentive=optimal",
    ]
    done = subprocess.run(
        command, cwd=checkout, env=env, capture_output=True, text=True, timeout=840
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    run_dir = output / run_name
    assert "finished:completed" in done.stdout
    # the ServerApp (run from the copy's app bundle) composed exactly these values
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["run_name"] == run_name and resolved["output_dir"] == str(output)
    assert (run_dir / "agent" / "manifest.json").is_file()
    assert (run_dir / "ledger.csv").is_file()
    assert sorted(p.name for p in output.iterdir()) == [run_name]
