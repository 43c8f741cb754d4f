"""Time to quality per incentive policy: how long, and at what price, the federation takes to
build an agent that first reaches a target held-out decision accuracy.

For each size (20 and 100 virtual ESs) every policy (edmsac, optimal, static, uniform,
fedavg_flat_fee, complete_information) runs with surplus selection, and EDMSAC also with the
deadline-aware rules (``latency_priced``, ``deadline``), on the same ESs (profiles and private
willingness paths come from the seed), the same offer and participant limits and the same
local-training budget. A run stops at the round its module first reaches the highest target (or
at ``--max-rounds``); one row per target. Per run: the rounds, the modelled module-construction time (the sum over
rounds of the slowest participant's W/f + S/r) and the payments (what the rounds' work
earned, paid now or held) until the target is first reached, and the last round's quality
with its Wilson 95 % interval on the held-out scenes.

The federations run in one process (``benchmarks/in_process.py``: the real strategy and
ClientApp handlers, without Flower's processes), one after another.

Run:  .venv/bin/python benchmarks/time_to_quality_bench.py [--sizes 20 100] [--targets 0.7 0.8]
          [--max-rounds 12] [--policies ...] [--selections ...] [--from-runs DIR]
Out:  benchmarks/results/time_to_quality.csv (a run replaces the rows it ran and keeps the
      others), benchmarks/results/time_to_quality_curves.csv (quality after every round) and
      benchmarks/results/time_to_quality.png (quality vs modelled time, one panel per size)
"""

from __future__ import annotations

import argparse
import fcntl
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np
import pandas as pd

from benchmarks.in_process import run_in_process
from fed_agent.config import load_config
from fed_agent.evaluation.intervals import accuracy_interval
from fed_agent.evaluation.report import upsert_table

RESULTS = Path(__file__).resolve().parent / "results"
TABLE_KEYS = ("num_es", "strategy", "selection", "target")
RUN_KEYS = TABLE_KEYS[:3]
POLICIES = ("edmsac", "optimal", "static", "uniform", "fedavg_flat_fee", "complete_information")
DEADLINE_AWARE = ("latency_priced", "deadline")
DEADLINE_AWARE_POLICIES = ("edmsac",)
BUDGET = ("federation.es_per_round=3",)
"""The per-run budget besides --max-rounds (the training recipe is the configs' default)."""


def time_to_target(metrics: pd.DataFrame, target: float) -> dict[str, float]:
    """Rounds, modelled seconds and payments until ``decision_accuracy`` first reaches
    ``target`` (NaN if it never does), from a run's metrics (round 0 = the starting module).

    Modelled time and payments are summed over the rounds up to and including that round.
    """
    rounds = metrics.sort_values("round")
    modelled = rounds["round_latency_model_s"].fillna(0.0).cumsum()
    payments = rounds["payments"].fillna(0.0).cumsum()
    reached = np.flatnonzero(rounds["decision_accuracy"].to_numpy() >= target)
    if reached.size == 0:
        return {"rounds_to_target": np.nan, "modelled_s_to_target": np.nan,
                "payments_to_target": np.nan}  # fmt: skip
    first = reached[0]
    return {
        "rounds_to_target": int(rounds["round"].iloc[first]),
        "modelled_s_to_target": float(modelled.iloc[first]),
        "payments_to_target": float(payments.iloc[first]),
    }


def run_case(
    policy: str, selection: str, num_es: int, args: argparse.Namespace, out: Path
) -> tuple[list[dict], pd.DataFrame]:
    """One federation until the highest target; a row per target and its per-round curve."""
    overrides = [
        f"incentive={policy}",
        f"incentive.selection={selection}",
        f"incentive.max_offers_per_round={min(num_es, 40)}",
        f"federation.num_rounds={args.max_rounds}",
        f"output_dir={out}",
        f"run_name={run_name(policy, selection, num_es)}",
        *BUDGET,
        *args.extra,
    ]
    start = time.perf_counter()
    run = run_in_process(
        num_es, args.experiment, overrides, stop=lambda acc: acc >= max(args.targets)
    )
    n_eval = load_config(args.experiment, " ".join(overrides)).data.eval_samples
    rows = summarise(run.metrics, (num_es, policy, selection), args.targets, n_eval)
    for row in rows:
        row["run_wall_s"] = time.perf_counter() - start
    return rows, curve_of(run.metrics, (num_es, policy, selection))


def run_name(policy: str, selection: str, num_es: int) -> str:
    """The run folder's name (what ``--from-runs`` looks for)."""
    return f"{policy}-{selection}-{num_es}"


def summarise(
    metrics: pd.DataFrame, run: tuple[int, str, str], targets: list[float], n_eval: int
) -> list[dict]:
    """One row per target from a run's metrics; ``run`` is (num_es, strategy, selection).

    ``final_quality`` and its Wilson 95 % interval are the last round run's (the round that
    reached the highest target, or the last one the budget or an interruption allowed).
    """
    final = metrics.sort_values("round").iloc[-1]
    ci_low, ci_high = accuracy_interval(float(final["decision_accuracy"]), n_eval)
    return [
        {
            **dict(zip(RUN_KEYS, run, strict=True)),
            "target": target,
            **time_to_target(metrics, target),
            "final_quality": float(final["decision_accuracy"]),
            "ci_low": ci_low,
            "ci_high": ci_high,
            "rounds_run": int(final["round"]),
            "n_eval": n_eval,
        }
        for target in targets
    ]


def curve_of(metrics: pd.DataFrame, run: tuple[int, str, str]) -> pd.DataFrame:
    """Quality after every round against the cumulative modelled time and payments."""
    curve = metrics.sort_values("round").assign(
        **dict(zip(RUN_KEYS, run, strict=True)),
        modelled_s=lambda m: m["round_latency_model_s"].fillna(0.0).cumsum(),
        payments_cum=lambda m: m["payments"].fillna(0.0).cumsum(),
    )
    return curve[[*RUN_KEYS, "round", "modelled_s", "payments_cum", "decision_accuracy"]]


def record(rows: list[dict], curve: pd.DataFrame, targets: list[float]) -> None:
    """Merge one run's rows and curve into the result tables and redraw the plot."""
    table, curves_csv = RESULTS / "time_to_quality.csv", RESULTS / "time_to_quality_curves.csv"
    with open(Path(tempfile.gettempdir()) / "fed-agent-ttq.lock", "w") as lock:
        # several invocations may share the tables (one per group of cases)
        fcntl.flock(lock, fcntl.LOCK_EX)
        upsert_table(rows, table, TABLE_KEYS)
        old = pd.read_csv(curves_csv) if curves_csv.is_file() else curve.iloc[:0]
        same = (old[list(RUN_KEYS)] == pd.Series(rows[0])[list(RUN_KEYS)]).all(axis=1)
        merged = pd.concat([old[~same], curve], ignore_index=True)
        merged.to_csv(curves_csv, index=False)
        plot(merged, targets, RESULTS / "time_to_quality.png")


def plot(curves: pd.DataFrame, targets: list[float], path: Path) -> None:
    """Held-out accuracy vs cumulative modelled construction time, one panel per size."""
    sizes = sorted(curves["num_es"].unique())
    fig, axes = plt.subplots(1, len(sizes), figsize=(6 * len(sizes), 4.5), squeeze=False)
    for ax, num_es in zip(axes[0], sizes, strict=True):
        for (strategy, selection), curve in curves[curves["num_es"] == num_es].groupby(
            ["strategy", "selection"]
        ):
            style = "-" if selection == "surplus" else "--"
            ax.plot(curve["modelled_s"], curve["decision_accuracy"], style, marker="o",
                    markersize=3, label=f"{strategy} / {selection}")  # fmt: skip
        for target in targets:
            ax.axhline(target, color="grey", linewidth=0.8, linestyle=":")
        ax.set_title(f"{num_es} ESs")
        ax.set_xlabel("modelled construction time (s, sum of round latencies)")
        ax.set_ylabel("held-out decision accuracy")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def cases(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(policy, selection) pairs: every policy by surplus, the deadline-aware ones too."""
    pairs = [(p, "surplus") for p in args.policies]
    pairs += [(p, s) for p in DEADLINE_AWARE_POLICIES for s in args.selections]
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 100])
    parser.add_argument("--targets", type=float, nargs="+", default=[0.7, 0.8])
    parser.add_argument("--max-rounds", type=int, default=12)
    parser.add_argument("--policies", nargs="*", default=list(POLICIES))
    parser.add_argument("--selections", nargs="*", default=list(DEADLINE_AWARE))
    parser.add_argument("--experiment", default="default")
    parser.add_argument("--extra", nargs="*", default=[], help="more Hydra overrides")
    parser.add_argument(
        "--from-runs", type=Path, help="rows from the run folders of an interrupted invocation"
    )
    args = parser.parse_args()
    out = args.from_runs or Path(tempfile.mkdtemp(prefix="fed-agent-ttq-"))
    for num_es in args.sizes:
        for policy, selection in cases(args):
            if args.from_runs is None:
                rows, curve = run_case(policy, selection, num_es, args, out)
            else:
                folder = out / run_name(policy, selection, num_es)
                if not (folder / "metrics.csv").is_file():
                    continue
                # a round cut short by the interruption has its row but no quality yet
                metrics = pd.read_csv(folder / "metrics.csv").dropna(subset=["decision_accuracy"])
                n_eval = load_config(args.experiment, "").data.eval_samples
                run = (num_es, policy, selection)
                rows, curve = summarise(metrics, run, args.targets, n_eval), curve_of(metrics, run)
            print(rows, flush=True)
            record(rows, curve, args.targets)
    print(pd.read_csv(RESULTS / "time_to_quality.csv").to_string(index=False))


if __name__ == "__main__":
    main()
