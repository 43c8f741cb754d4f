"""Learning curves and final quality of the contract designers (EDMSAC, DMSAC, SAC, PPO).

Every learned designer gets the same budget (``--env-steps`` environment steps, the same
updates per step) and the same seeds (5), on three tasks: the fixed "default" market
(K = 3), the fixed "paper" market (K = 5), and the "federation" markets a federated run
builds (K = 3, drawn from ``TRAINING_RANGES["federation"]``), evaluated on 16 held-out ones.
The reference solutions of fed_agent.contracts and the guard's closed-form pooling
reference get a row each.

Writes to ``--out-dir`` (default benchmarks/results):

- designer_summary.csv: per market and learner over seeds, mean, min, max and a 95 %
  t-interval of the utility ratio;
- designer.csv: one row per (market, designer, seed) with utility_ratio (U / U*, mean over
  the evaluation markets), violations (constraints violated by the returned contracts,
  summed over the evaluation markets), steps_to_95pct and steps_to_99pct (first evaluation
  at or above that ratio; empty if never), infer_ms_1000 (wall time to design contracts for
  1,000 markets, one torch thread; for the solvers, their solve time x 1,000) and
  active_neuron_frac;
- designer_curves.png: utility ratio against environment steps, mean and min-max over seeds;
- designer_pruning.csv: EDMSAC (prune rate 0.5) against DMSAC (0) with active neurons.

Tables are merged by (market, designer, seed), so a re-run of some tasks keeps the others.
Command (about an hour on 2 cores; ``--checkpoint-dir`` keeps the trained designers)::

    .venv/bin/python benchmarks/designer_bench.py --workers 2

``--quick`` runs a small smoke version (one seed, few steps).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from fed_agent.contracts import (
    DynamicContract,
    MarketBatch,
    audit,
    cloud_utility_batch,
    named_market,
    reference_violations,
    sample_market,
)
from fed_agent.contracts.pricing import reference_menus
from fed_agent.contracts.solvers import REFERENCE_SOLVERS, solve_reference  # noqa: E402
from fed_agent.designer import (
    DESIGNERS,
    TRAINING_RANGES,
    ContractDesigner,
    DesignerConfig,
    EvaluationSet,
    heldout_markets,
    train_designer,
)
from fed_agent.designer.demonstrations import (  # noqa: E402
    Demonstrations,
    demonstration_markets,
    solve_demonstrations,
)
from fed_agent.evaluation.intervals import mean_interval  # noqa: E402
from fed_agent.evaluation.report import upsert_table  # noqa: E402

TASKS = ("default", "paper", "federation")
HELDOUT_SEED = 2024
HELDOUT_COUNT = 16


@dataclass(frozen=True)
class Run:
    """One training run of the benchmark."""

    task: str
    designer: str
    seed: int
    env_steps: int
    prune_rate: float | None = None
    demonstrations: int = 0

    @property
    def label(self) -> str:
        """The designer column: the learner, ``+bc`` when it imitated exact optima."""
        return f"{self.designer}+bc" if self.demonstrations else self.designer


def evaluation_for(task: str) -> EvaluationSet:
    """The evaluation markets of a task with their exact optima (federation: held-out
    markets of the federation ranges, from a seed no designer trains or validates on)."""
    if task == "federation":
        ranges = TRAINING_RANGES["federation"]
        return EvaluationSet.solve(heldout_markets(ranges, 3, HELDOUT_COUNT, HELDOUT_SEED))
    return EvaluationSet.solve([named_market(task)])


def first_reaching(history: list[dict[str, float]], level: float) -> float | None:
    """Environment steps of the first evaluation with utility_ratio >= level."""
    for row in history:
        if row["utility_ratio"] >= level:
            return row["env_steps"]
    return None


def count_violations(designer: ContractDesigner, evaluation: EvaluationSet) -> int:
    """Constraints violated by the contracts ``propose`` returns, summed over markets."""
    contracts = designer.propose(evaluation.markets)
    return sum(len(audit(c, m)) for c, m in zip(contracts, evaluation.markets, strict=True))


def checkpoint_path(run: Run, checkpoint_dir: str) -> Path:
    """Where a run's trained designer is saved."""
    return Path(checkpoint_dir) / f"{run.label}_{run.task}_seed{run.seed}.npz"


def result_of(
    run: Run, designer: ContractDesigner, path: Path, history: list, final: dict, **extra: Any
) -> dict[str, Any]:
    """A run's curve, checkpoint and row (final metrics of the designer kept)."""
    evaluation = evaluation_for(run.task)
    prune_rate = designer.config.edmsac.prune_rate if run.designer == "edmsac" else 0.0
    return {
        "run": run,
        "history": history,
        "checkpoint": str(path),
        "row": {
            "market": run.task,
            "designer": run.label,
            "seed": run.seed,
            "demonstrations": run.demonstrations,
            "utility_ratio": final["utility_ratio"],
            "violations": count_violations(designer, evaluation),
            "active_neuron_frac": final["active_neuron_frac"],
            "replaced_frac": final["replaced_frac"],
            "lp_frac": final["lp_frac"],
            "prune_rate": prune_rate,
            **extra,
        },
    }


def train_one(
    run: Run, checkpoint_dir: str, demonstrations: Demonstrations | None = None
) -> dict[str, Any]:
    """Train one designer; return its curve and final metrics (runs in a worker process).

    ``demonstrations`` (shared by every run of a task, solved once by :func:`demonstrations_for`)
    are imitated when ``run.demonstrations`` > 0.
    """
    torch.set_num_threads(1)
    config = DesignerConfig(
        algorithm=run.designer,
        market=run.task,
        env_steps=run.env_steps,
        seed=run.seed,
        eval_interval=max(run.env_steps // 16, 64),
        demonstrations=run.demonstrations,
    )
    designer = ContractDesigner(config)
    start = time.perf_counter()
    history = train_designer(designer, evaluation_for(run.task), demonstrations=demonstrations)
    train_s = time.perf_counter() - start
    path = designer.save(checkpoint_path(run, checkpoint_dir))
    final = history[-1]
    return result_of(
        run,
        designer,
        path,
        history,
        final,
        steps_to_95pct=first_reaching(history, 0.95),
        steps_to_99pct=first_reaching(history, 0.99),
        kept_env_steps=final["kept_env_steps"],
        train_s=round(train_s, 1),
    )


def demonstrations_for(task: str, count: int, cache_dir: Path) -> Demonstrations:
    """``count`` exactly solved training markets of ``task`` (seed 0), solved once and kept
    in ``cache_dir`` for later invocations; a task's runs all imitate the same set."""
    path = cache_dir / f"demonstrations_{task}_n{count}.npz"
    if path.is_file():
        return Demonstrations.load(path)
    config = DesignerConfig(market=task, demonstrations=count)
    ranges = ContractDesigner(config).ranges
    markets = demonstration_markets(task, config.num_types, count, seed=0, ranges=ranges)
    demonstrations = solve_demonstrations(
        markets, config.reward_scale_frac, config.violation_penalty
    )
    print(f"{task}: {len(demonstrations)} demonstrations solved in {demonstrations.solve_s:.0f} s")
    demonstrations.save(path)
    return demonstrations


def score_saved(run: Run, checkpoint_dir: str) -> dict[str, Any] | None:
    """The final metrics of a designer an earlier invocation trained into ``checkpoint_dir``
    (``--reuse-checkpoints``: no learning curve, no training time); None if there is none."""
    path = checkpoint_path(run, checkpoint_dir)
    if not path.is_file():
        return None
    torch.set_num_threads(1)
    designer = ContractDesigner.load(path)
    return result_of(run, designer, path, [], designer.evaluate(evaluation_for(run.task)))


def inference_markets(task: str, count: int = 1000) -> list:
    """1,000 markets for timing: copies of the named market, or fresh federation markets."""
    if task == "federation":
        rng = np.random.default_rng(HELDOUT_SEED + 1)
        return [sample_market(rng, TRAINING_RANGES["federation"], 3) for _ in range(count)]
    return [named_market(task)] * count


def reference_rows(task: str, evaluation: EvaluationSet) -> list[dict[str, Any]]:
    """One row per reference solver of fed_agent.contracts, and the guard's closed-form
    pooling reference."""
    rows = []
    rng = np.random.default_rng(0)
    for name in sorted(REFERENCE_SOLVERS):
        ratios, violations, seconds = [], 0, []
        for market, optimum in zip(evaluation.markets, evaluation.optimum, strict=True):
            solution = solve_reference(name, market, rng=rng)
            ratios.append(solution.cloud_utility / optimum)
            violations += len(reference_violations(name, solution.contract, market))
            seconds.append(solution.solve_time_s)
        rows.append(reference_row(task, f"ref:{name}", ratios, violations, np.mean(seconds)))
    batch = MarketBatch.from_markets(evaluation.markets)
    start = time.perf_counter()
    menus = reference_menus(batch)
    seconds = (time.perf_counter() - start) / batch.size
    contracts = [DynamicContract(*(m[b] for m in menus)) for b in range(batch.size)]
    violations = sum(len(audit(c, m)) for c, m in zip(contracts, evaluation.markets, strict=True))
    ratios = cloud_utility_batch(*menus, batch) / evaluation.optimum
    rows.append(reference_row(task, "ref:pooling", ratios, violations, seconds))
    return rows


def reference_row(task, name, ratios, violations, seconds) -> dict[str, Any]:
    return {
        "market": task,
        "designer": name,
        "seed": "",
        "utility_ratio": float(np.mean(ratios)),
        "violations": violations,
        "infer_ms_1000": 1e6 * float(seconds),
    }


def designer_labels(labels: Iterable[str]) -> list[str]:
    """The designer labels present, learners in DESIGNERS order, each before its ``+bc``."""
    present = set(labels)
    order = [name for learner in DESIGNERS for name in (learner, f"{learner}+bc")]
    return [name for name in order if name in present]


def summary_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per market and learner over seeds: mean, min, max and a 95 % t-interval of the ratio."""
    out = []
    for task in TASKS:
        for designer in designer_labels(r["designer"] for r in rows):
            ratios = [
                r["utility_ratio"] for r in rows if (r["market"], r["designer"]) == (task, designer)
            ]
            if not ratios:
                continue
            low, high = mean_interval(ratios)
            out.append(
                {
                    "market": task,
                    "designer": designer,
                    "seeds": len(ratios),
                    "mean": float(np.mean(ratios)),
                    "min": float(np.min(ratios)),
                    "max": float(np.max(ratios)),
                    "ci_low": low,
                    "ci_high": high,
                }
            )
    return out


def merge_histories(results: list[dict[str, Any]], path: Path) -> list[dict[str, Any]]:
    """Merge this invocation's learning curves into the JSON file of earlier ones (by task,
    designer and seed), so the plot shows every task however the runs were split up."""
    stored = json.loads(path.read_text()) if path.is_file() else {}
    for result in results:
        run = result["run"]
        key = f"{run.task}/{run.label}/{run.seed}"
        if result["history"] or key not in stored:
            stored[key] = result["history"]
    path.write_text(json.dumps(stored))
    merged = []
    for key, history in sorted(stored.items()):
        if not history:  # a reused checkpoint has no curve
            continue
        task, designer, seed = key.split("/")
        merged.append({"run": Run(task, designer, int(seed), 0), "history": history})
    return merged


def plot_curves(results: list[dict[str, Any]], path: Path) -> None:
    """Utility ratio vs environment steps, mean and min-max band over seeds, per task."""
    fig, axes = plt.subplots(1, len(TASKS), figsize=(5 * len(TASKS), 4), sharey=False)
    for axis, task in zip(axes, TASKS, strict=True):
        for designer in designer_labels(r["run"].designer for r in results):
            curves = [
                r["history"]
                for r in results
                if r["run"].task == task and r["run"].designer == designer
            ]
            if not curves:
                continue
            # every history ends with the kept learner (DesignerConfig.keep_best): a marker
            steps = np.array([row["env_steps"] for row in curves[0][:-1]])
            ratios = np.array([[row["utility_ratio"] for row in c[:-1]] for c in curves])
            mean = ratios.mean(axis=0)
            (line,) = axis.plot(steps, mean, label=f"{designer} (n={len(curves)})")
            axis.fill_between(steps, ratios.min(axis=0), ratios.max(axis=0), alpha=0.2)
            kept = np.mean([c[-1]["utility_ratio"] for c in curves])
            axis.plot(steps[-1], kept, marker="*", markersize=11, color=line.get_color())
        axis.axhline(1.0, color="black", linewidth=0.8, linestyle=":")
        axis.axhline(0.99, color="grey", linewidth=0.8, linestyle="--")
        title = "held-out federation markets (K=3)" if task == "federation" else f"{task} market"
        axis.set(title=title, xlabel="environment steps", ylabel="utility / optimum")
        axis.set_ylim(0.8, 1.005)
        axis.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def time_inference(results: list[dict[str, Any]]) -> None:
    """Fill infer_ms_1000 with 2 threads, sequentially (not while training runs)."""
    torch.set_num_threads(1)
    markets = {task: inference_markets(task) for task in TASKS}
    for result in results:
        designer = ContractDesigner.load(result["checkpoint"])
        result["row"]["infer_ms_1000"] = round(
            designer.inference_ms(markets[result["run"].task]), 2
        )


def main() -> None:
    """Run every training run, then time inference, then write the tables and the plot."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env-steps", type=int, default=DesignerConfig().env_steps)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--designers", nargs="+", default=list(DESIGNERS), choices=DESIGNERS)
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument(
        "--checkpoint-dir", type=Path, default=None, help="keep every trained checkpoint here"
    )
    parser.add_argument(
        "--reuse-checkpoints",
        action="store_true",
        help="only score the designers already in --checkpoint-dir (e.g. of an invocation cut "
        "short), training none",
    )
    parser.add_argument(
        "--demonstrations",
        type=int,
        default=0,
        help="exactly solved training markets every learner imitates (rows named LEARNER+bc)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 seed, 1,024 steps")
    args = parser.parse_args()
    steps, seeds = (1024, 1) if args.quick else (args.env_steps, args.seeds)
    runs = [
        Run(t, d, s, steps, demonstrations=args.demonstrations)
        for t in args.tasks
        for d in args.designers
        for s in range(seeds)
    ]
    # the slow diffusion runs first, so the pool ends on short runs
    runs.sort(key=lambda r: r.designer not in ("edmsac", "dmsac"))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        checkpoints = str(args.checkpoint_dir or scratch)
        Path(checkpoints).mkdir(parents=True, exist_ok=True)
        results = []
        if args.reuse_checkpoints:
            saved = [score_saved(run, checkpoints) for run in runs]
            results = [r for r in saved if r is not None]
            runs = []  # score only what exists: a cut-short invocation's designers
        demos = {
            task: demonstrations_for(task, args.demonstrations, Path(checkpoints))
            for task in {run.task for run in runs}
            if args.demonstrations
        }
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            futures = [
                pool.submit(train_one, run, checkpoints, demos.get(run.task)) for run in runs
            ]
            for future in futures:
                results.append(future.result())
                row = results[-1]["row"]
                print({k: row[k] for k in ("market", "designer", "seed", "utility_ratio")})
        time_inference(results)
    rows = [r["row"] for r in results]
    for task in args.tasks:
        rows += reference_rows(task, evaluation_for(task))
    keys = ("market", "designer", "seed")
    upsert_table(rows, args.out_dir / "designer.csv", keys)
    upsert_table(summary_rows(rows), args.out_dir / "designer_summary.csv", ("market", "designer"))
    pruning = [r for r in rows if r["designer"].split("+")[0] in ("edmsac", "dmsac")]
    upsert_table(pruning, args.out_dir / "designer_pruning.csv", keys)
    curves = merge_histories(results, args.out_dir / "designer_histories.json")
    plot_curves(curves, args.out_dir / "designer_curves.png")


if __name__ == "__main__":
    main()
