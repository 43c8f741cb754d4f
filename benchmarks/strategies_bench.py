"""Contract policies side by side in real Flower simulations, same seeds for every policy.

For 20 and 100 virtual ESs, each policy (plain FedAvg with a flat fee, uniform, static,
complete-information oracle, exact optimum, EDMSAC, DMSAC) drives the same federation: the
same ESs (profiles and private willingness paths come from the seed), the same offer and
participant limits, the same rounds. Per run it records the mean per-round cloud utility,
payments, participation rate, modelled round latency (slowest participant, W/f + S/r), the
measured round wall time and the final agent's held-out quality.

Selection (``--selections``): ``surplus`` (the default rule), and the straggler-aware rules
``latency_priced`` and ``deadline`` (fed_agent/incentives/selection.py, at their config
defaults) for the policies of ``--selection-policies``.

``--in-process`` runs each federation in this process (benchmarks/in_process.py: the same
strategy and ClientApp handlers, no Flower processes; the ``runner`` column says which). The
contracts, choices, selection and ledger are the same code either way: at 20 ESs the
in-process rows repeat the simulation's cloud utility and modelled latency to the digit; at
100 ESs the 40 ESs offered each round are a seeded sample of the node ids, which a
simulation draws at random, so the two runners offer to different ESs.

Run:  .venv/bin/python benchmarks/strategies_bench.py [--sizes 20 100] [--rounds 4]
          [--selections surplus latency_priced deadline] [--in-process]
Out:  benchmarks/results/strategies.csv (a run replaces the rows of the sizes and policies it
      ran and keeps the others), benchmarks/results/strategies.png
      and, with --large, benchmarks/results/strategies_1000.csv (1,000 virtual ESs, tiny model)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd

from benchmarks.federation_overhead import PeakMemory
from benchmarks.in_process import run_in_process
from fed_agent.deploy.launcher import launch_simulation
from fed_agent.evaluation.report import upsert_table
from fed_agent.incentives.config import POLICIES

RESULTS = Path(__file__).resolve().parent / "results"
TABLE_KEYS = ("num_es", "strategy", "selection", "runner")
SELECTIONS = ("surplus", "latency_priced", "deadline")
RUNNERS = ("flower", "in_process")


def run_policy(
    policy: str,
    num_es: int,
    rounds: int,
    out: Path,
    extra: list[str],
    experiment: str = "default",
    selection: str = "surplus",
    runner: str = "flower",
) -> dict:
    """One federation; its per-round metrics summarised into one row."""
    overrides = [
        f"incentive={policy}",
        f"incentive.selection={selection}",
        f"federation.num_es={num_es}",
        f"federation.num_rounds={rounds}",
        f"output_dir={out}",
        f"run_name={policy}-{selection}-{num_es}",
        *extra,
    ]
    start = time.perf_counter()
    with PeakMemory() as memory:
        if runner == "flower":
            output_dir = launch_simulation(experiment, overrides).output_dir
        elif runner == "in_process":
            output_dir = run_in_process(num_es, experiment, overrides).output_dir
        else:
            raise ValueError(f"runner: unknown value {runner!r}; valid choices: {list(RUNNERS)}")
    metrics = pd.read_csv(output_dir / "metrics.csv")
    rounds_df = metrics[metrics["round"] >= 1]
    final = metrics.iloc[-1]
    return {
        "num_es": num_es,
        "strategy": policy,
        "selection": selection,
        "runner": runner,
        "cloud_utility": rounds_df["cloud_utility"].mean(),
        "payments": rounds_df["payments"].mean(),
        "participation_rate": participation_from_ledger(output_dir / "ledger.csv"),
        "participants": rounds_df["participants"].mean(),
        "round_latency_model_s": rounds_df["round_latency_model_s"].mean(),
        "round_wall_s": rounds_df["round_wall_s"].median(),
        "agent_quality": final["decision_accuracy"],
        "answer_loss": final["answer_loss"],
        "belief_accuracy": rounds_df["belief_accuracy"].mean(),
        "run_wall_s": time.perf_counter() - start,
        "peak_rss_mb": memory.peak_bytes / 2**20,
    }


def participation_from_ledger(ledger_csv: Path) -> float:
    """Mean over rounds of the share of offered ESs that took an item (ledger ``item >= 0``)."""
    ledger = pd.read_csv(ledger_csv)
    return float(ledger.groupby("round")["item"].apply(lambda items: (items >= 0).mean()).mean())


def plot(frame: pd.DataFrame, path: Path) -> None:
    metrics = ["cloud_utility", "round_latency_model_s", "participation_rate", "answer_loss"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 6), sharey=True)
    for ax, metric in zip(axes, metrics, strict=True):
        labels = frame["strategy"] + "/" + frame["selection"]
        labels = labels.where(frame["runner"] == "flower", labels + " (in-process)")
        table = frame.assign(label=labels).pivot_table(
            index="label", columns="num_es", values=metric
        )
        table.plot.barh(ax=ax)
        ax.set_title(metric)
        ax.set_xlabel("")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def bench_cases(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(policy, selection) pairs: surplus for every policy, the other rules for some."""
    return [
        (policy, selection)
        for policy in args.policies
        for selection in args.selections
        if selection == "surplus" or policy in args.selection_policies
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 100])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--policies", nargs="+", default=list(POLICIES))
    parser.add_argument("--large", action="store_true", help="also the 1,000-ES run")
    parser.add_argument("--ffa", action="store_true", help="also EDMSAC with FFA-LoRA")
    parser.add_argument(
        "--extra", nargs="*", default=["federation.es_per_round=10", "training.local_steps=10"]
    )
    parser.add_argument("--selections", nargs="+", default=["surplus"], choices=SELECTIONS)
    parser.add_argument(
        "--selection-policies",
        nargs="+",
        default=["edmsac"],
        help="policies also run with the selections other than surplus",
    )
    parser.add_argument("--in-process", action="store_true", help="no Flower processes")
    parser.add_argument("--recompute", type=Path, help="redo participation from run folders")
    args = parser.parse_args()
    if args.recompute:  # participation from the ledgers of an earlier invocation's runs
        frame = pd.read_csv(RESULTS / "strategies.csv")
        for i, row in frame.iterrows():
            name = f"{row['strategy'].replace('_ffa_lora', '')}-{row['num_es']}"
            # a later run of the same name (the FFA-LoRA row) moved the earlier folder aside
            folders = sorted(args.recompute.glob(f"{name}-*")) or [args.recompute / name]
            ledger = folders[0] / "ledger.csv"
            if ledger.is_file() and row["strategy"] != "edmsac_ffa_lora":
                frame.loc[i, "participation_rate"] = participation_from_ledger(ledger)
        frame.to_csv(RESULTS / "strategies.csv", index=False)
        plot(frame, RESULTS / "strategies.png")
        print(frame.to_string(index=False))
        return
    out = Path(tempfile.mkdtemp(prefix="fed-agent-strategies-"))
    rows, table = [], RESULTS / "strategies.csv"
    runner = "in_process" if args.in_process else "flower"
    for num_es in args.sizes:
        offers = [f"incentive.max_offers_per_round={min(num_es, 40)}"]
        for policy, selection in bench_cases(args):
            extra = [*args.extra, *offers]
            rows.append(
                run_policy(policy, num_es, args.rounds, out, extra, "default", selection, runner)
            )
            print(rows[-1], flush=True)
            upsert_table(rows, table, TABLE_KEYS)
    if args.ffa:
        # the exact aggregation alternative (frozen-A FFA-LoRA) against FedAvg of A and B
        row = run_policy(
            "edmsac", args.sizes[0], args.rounds, out, [*args.extra, "model.lora_freeze_a=true"]
        )
        rows.append({**row, "strategy": "edmsac_ffa_lora"})
    # a run of some sizes or policies replaces their rows and keeps the others
    frame = upsert_table(rows, table, TABLE_KEYS)
    plot(frame, RESULTS / "strategies.png")
    print(frame.to_string(index=False))
    if args.large:
        # the smoke experiment's tiny model; 10 % of the ESs are offered contracts each round
        large = run_policy(
            "edmsac",
            1000,
            2,
            out,
            ["incentive.max_offers_per_round=100", "federation.es_per_round=100"],
            "smoke",
        )
        pd.DataFrame([large]).to_csv(RESULTS / "strategies_1000.csv", index=False)
        print(large)


if __name__ == "__main__":
    main()
