"""The default federated run (`make run`) over several seeds: held-out decision accuracy after
every round, the replies the screen rejected (every ES is honest here, so each is a false
positive) and the wall time.

The seeds are one Hydra sweep, ``fed-agent run -m seed=0,1,...`` (a Flower simulation per
seed: 10 ESs, 5 rounds, EDMSAC contracts, one after another, each in its own folder of the
sweep); a seed changes the tiny base (built and cached on first use), the ESs' data and their
private willingness paths. The same seed gives the same run, bit for bit
(``benchmarks/reproducibility_bench.py``).

Run (about 3.5 minutes a seed on a quiet 2-core box, more for a seed whose base is not cached)::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/default_run_bench.py --seeds 0 1 2 3 4
    # or summarise a sweep that ran already (its folder holds multirun.json):
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/default_run_bench.py --collect-only

Writes ``benchmarks/results/default_run.csv`` (seed, round, decision_accuracy with its Wilson
95 % interval on the held-out scenes, participants, rejected, round_wall_s, run_wall_s) and
prints the final accuracy's mean with a t-interval over seeds (``fed-agent summarize``'s).
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

from fed_agent.config import load_config
from fed_agent.evaluation.intervals import accuracy_interval
from fed_agent.evaluation.report import write_table
from fed_agent.evaluation.sweep_summary import job_rows, summarize

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SWEEP_DIR = ROOT / "outputs" / "multirun" / "default_run_bench"


def run_sweep(seeds: list[int], sweep_dir: Path, overrides: list[str]) -> None:
    """One ``fed-agent run -m`` of the default experiment over ``seeds`` (plus ``overrides``,
    to try a recipe) into ``sweep_dir``."""
    command = [
        str(ROOT / ".venv" / "bin" / "fed-agent"),
        "run",
        "-m",
        "--experiment",
        "default",
        "--sweep-dir",
        str(sweep_dir),
        "seed=" + ",".join(str(s) for s in seeds),
        *overrides,
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-2000:]
        raise RuntimeError(f"fed-agent run -m failed ({done.returncode}):\n{tail}")


def collect(sweep_dir: Path, n_eval: int) -> pd.DataFrame:
    """Per-round rows of every completed job of the sweep."""
    jobs = job_rows(sweep_dir)
    return pd.concat(
        [
            collect_job(sweep_dir / str(job.job), job.seed, job.wall_s, n_eval)
            for job in jobs.itertuples()
        ],
        ignore_index=True,
    )


def collect_job(folder: Path, seed: int, run_wall: float, n_eval: int) -> pd.DataFrame:
    """Per-round rows of one finished run."""
    metrics = pd.read_csv(folder / "metrics.csv")
    ledger = pd.read_csv(folder / "ledger.csv")
    rejected = ledger[ledger.status == "rejected"].groupby("round").size()
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


def summary(table: pd.DataFrame, sweep_dir: Path) -> str:
    """The final accuracy over seeds (``fed-agent summarize``'s mean and t-interval), min,
    max; rejected replies; wall times."""
    final = summarize(sweep_dir).iloc[0]
    last = table.sort_values("round").groupby("seed").tail(1)
    acc = last.decision_accuracy.to_numpy()
    walls = last.run_wall_s.dropna()
    return (
        f"{len(acc)} seeds: final accuracy mean {final.decision_accuracy:.3f} "
        f"[95 % t-interval {final.decision_accuracy_low:.3f}, "
        f"{final.decision_accuracy_high:.3f}], min {acc.min():.3f}, max {acc.max():.3f}; "
        f"rejected replies {int(table.rejected.sum())}; "
        f"run wall median {walls.median():.0f} s (min {walls.min():.0f}, max {walls.max():.0f})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--sweep-dir", type=Path, default=SWEEP_DIR)
    parser.add_argument("--collect-only", action="store_true")
    parser.add_argument(
        "--overrides", nargs="*", default=[], help="config overrides for every seed (a recipe)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "default_run.csv")
    args = parser.parse_args(argv)
    if len(args.seeds) < 2:
        parser.error("give at least 2 seeds (an interval over seeds needs them)")
    n_eval = load_config("default").data.eval_samples
    if not args.collect_only:
        run_sweep(args.seeds, args.sweep_dir, args.overrides)
    table = collect(args.sweep_dir, n_eval)
    write_table(table.to_dict("records"), args.out)  # stamped with the code version
    print(summary(table, args.sweep_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
