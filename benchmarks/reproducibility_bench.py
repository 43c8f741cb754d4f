"""Same config and seed, same run: one experiment under several variants of the machine.

Each variant is a complete ``fed-agent run`` of ``--experiment`` at ``--seed``:

* ``cpus1``, ``cpus2``: ``federation.client_cpus`` 1 and 2 (two ESs train at once, or one
  with two threads);
* ``loaded``: as ``cpus1`` while one busy process per core competes for the CPU;
* ``clone``: as ``cpus1`` in a fresh ``git clone`` of this checkout (committed code only) with
  an empty model cache, so the clone builds its own base.

The table (``benchmarks/results/reproducibility.csv``, rows replaced per experiment, seed and
variant) has, per variant, the final module's ``adapter_sha256``, the final held-out accuracy
and the SHA-256 of metrics.csv without its wall-clock columns
(``fed_agent.outputs.reproducible_digest``); the script exits 1 unless every variant of this
call has the same digest. Run::

    .venv/bin/python benchmarks/reproducibility_bench.py --experiment default --seed 0
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
# this checkout's fed_agent (not an installed one): the rows' code_version names this checkout
sys.path.insert(0, str(ROOT))

from fed_agent.cache import CACHE_ENV  # noqa: E402
from fed_agent.evaluation.report import upsert_table  # noqa: E402
from fed_agent.outputs import reproducible_digest  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
VARIANTS = ("cpus1", "cpus2", "loaded", "clone")


@contextmanager
def busy_cores() -> Iterator[None]:
    """One spinning process per core for the duration (stopped by their PIDs)."""
    spinners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(os.cpu_count() or 1)
    ]
    try:
        yield
    finally:
        for process in spinners:
            process.kill()
            process.wait()


def run_variant(experiment: str, seed: int, variant: str, scratch: Path) -> Path:
    """Run one variant; the run's output folder."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; valid choices: {list(VARIANTS)}")
    run_name = f"repro_{experiment}_{seed}_{variant}"
    cpus = 2 if variant == "cpus2" else 1
    checkout, env = ROOT, dict(os.environ)
    if variant == "clone":
        checkout = scratch / "clone"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(checkout)], check=True)
        env[CACHE_ENV] = str(scratch / "cache")
    output_dir = ROOT / "outputs"
    command = [
        sys.executable,
        "-c",
        "from fed_agent.cli import main; raise SystemExit(main())",
        "run",
        "--experiment",
        experiment,
        f"seed={seed}",
        f"run_name={run_name}",
        f"output_dir={output_dir}",
        f"federation.client_cpus={cpus}",
    ]
    if variant == "loaded":
        with busy_cores():
            done = subprocess.run(command, cwd=checkout, env=env, capture_output=True, text=True)
    else:
        done = subprocess.run(command, cwd=checkout, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-2000:]
        raise RuntimeError(f"variant {variant}: fed-agent run failed ({done.returncode}):\n{tail}")
    return output_dir / run_name


def table_row(experiment: str, seed: int, variant: str, folder: Path) -> dict:
    """The variant's row: final adapter hash, final accuracy, reproducible metrics digest."""
    metrics = pd.read_csv(folder / "metrics.csv", dtype={"adapter_sha256": str})
    last = metrics.sort_values("round").iloc[-1]
    return {
        "experiment": experiment,
        "seed": seed,
        "variant": variant,
        "adapter_sha256": last.adapter_sha256,
        "final_accuracy": float(last.decision_accuracy),
        "metrics_sha256": reproducible_digest(folder / "metrics.csv"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default="default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--out", type=Path, default=RESULTS / "reproducibility.csv")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="fed-agent-repro-") as scratch:
        for variant in args.variants:
            folder = run_variant(args.experiment, args.seed, variant, Path(scratch))
            rows.append(table_row(args.experiment, args.seed, variant, folder))
            # after each variant (a long sweep keeps them); other experiments' rows stay
            upsert_table(rows[-1:], args.out, ("experiment", "seed", "variant"))
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    same = table.metrics_sha256.nunique() == 1 and table.adapter_sha256.nunique() == 1
    print("identical across variants" if same else "VARIANTS DIFFER")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
