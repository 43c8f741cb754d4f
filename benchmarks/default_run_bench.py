"""The default federated run (`make run`) over several seeds: held-out decision accuracy after
every round, the replies the screen rejected (every ES is honest here, so each is a false
positive) and the wall time.

Each seed is a complete ``fed-agent run`` (a Flower simulation: 10 ESs, 5 rounds, EDMSAC
contracts), run one after another; a seed changes the tiny base (built and cached on first
use), the ESs' data and their private willingness paths.

Run (about 3.5 minutes a seed on a quiet 2-core box, more for a seed whose base is not cached)::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/default_run_bench.py --seeds 0 1 2 3 4
    # or summarise runs already in outputs/<prefix><seed>/:
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/default_run_bench.py --collect-only

Writes ``benchmarks/results/default_run.csv`` (seed, round, decision_accuracy with its Wilson
95 % interval on the held-out scenes, participants, rejected, round_wall_s, run_wall_s) and
prints the final accuracy's mean with a t-interval over seeds.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from fed_agent.config import load_config
from fed_agent.evaluation.intervals import accuracy_interval, mean_interval

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
WALL = re.compile(r"finished:completed in ([0-9.]+) s")


def run_seed(seed: int, prefix: str, overrides: list[str]) -> float:
    """One ``fed-agent run`` of the default experiment (plus ``overrides``, to try a recipe);
    its wall time (s) as it reports it."""
    command = [
        str(ROOT / ".venv" / "bin" / "fed-agent"),
        "run",
        "--experiment",
        "default",
        f"seed={seed}",
        f"run_name={prefix}{seed}",
        *overrides,
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    match = WALL.search(done.stdout)
    if done.returncode != 0 or match is None:
        tail = (done.stdout + done.stderr)[-2000:]
        raise RuntimeError(f"seed {seed}: fed-agent run failed ({done.returncode}):\n{tail}")
    (ROOT / "outputs" / f"{prefix}{seed}" / "run_wall_s.txt").write_text(match.group(1))
    return float(match.group(1))


def collect(seed: int, prefix: str, n_eval: int) -> pd.DataFrame:
    """Per-round rows of one finished run."""
    folder = ROOT / "outputs" / f"{prefix}{seed}"
    metrics = pd.read_csv(folder / "metrics.csv")
    ledger = pd.read_csv(folder / "ledger.csv")
    rejected = ledger[ledger.status == "rejected"].groupby("round").size()
    wall_file = folder / "run_wall_s.txt"
    run_wall = float(wall_file.read_text()) if wall_file.exists() else np.nan
    rows = []
    for _, m in metrics.iterrows():
        low, high = accuracy_interval(float(m.decision_accuracy), n_eval)
        rows.append(
            {
                "seed": seed,
                "round": int(m["round"]),
                "decision_accuracy": float(m.decision_accuracy),
                "ci_low": low,
                "ci_high": high,
                "participants": m.get("participants", np.nan),
                "rejected": int(rejected.get(int(m["round"]), 0)),
                "round_wall_s": m.get("round_wall_s", np.nan),
                "run_wall_s": run_wall,
            }
        )
    return pd.DataFrame(rows)


def summary(table: pd.DataFrame) -> str:
    """The final accuracy over seeds: mean, t-interval, min; rejected replies; wall times."""
    last = table.sort_values("round").groupby("seed").tail(1)
    acc = last.decision_accuracy.to_numpy()
    low, high = mean_interval(acc)
    walls = last.run_wall_s.dropna()
    return (
        f"{len(acc)} seeds: final accuracy mean {acc.mean():.3f} "
        f"[95 % t-interval {low:.3f}, {high:.3f}], "
        f"min {acc.min():.3f}, max {acc.max():.3f}; "
        f"rejected replies {int(table.rejected.sum())}; "
        f"run wall median {walls.median():.0f} s (min {walls.min():.0f}, max {walls.max():.0f})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--prefix", default="default_seed", help="run_name = <prefix><seed>")
    parser.add_argument("--collect-only", action="store_true")
    parser.add_argument(
        "--overrides", nargs="*", default=[], help="config overrides for every seed (a recipe)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "default_run.csv")
    args = parser.parse_args(argv)
    if len(args.seeds) < 2:
        parser.error("give at least 2 seeds (an interval over seeds needs them)")
    n_eval = load_config("default").data.eval_samples
    tables = []
    for seed in args.seeds:
        if not args.collect_only:
            wall = run_seed(seed, args.prefix, args.overrides)
            print(f"seed {seed}: {wall:.1f} s", file=sys.stderr, flush=True)
        tables.append(collect(seed, args.prefix, n_eval))
    table = pd.concat(tables, ignore_index=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    print(summary(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
