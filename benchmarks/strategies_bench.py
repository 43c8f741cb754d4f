"""Contract policies side by side in federations of the default experiment, same seeds for
every policy.

For 20 and 100 virtual ESs, each policy (plain FedAvg with a flat fee, uniform, static,
complete-information oracle, exact optimum, EDMSAC, DMSAC, PPO) drives the same federation
for each seed: the same ESs (profiles and private willingness paths come from the seed), the
same offer and participant limits, the same rounds and local-training budget. The budget is
time_to_quality_bench.py's (``BUDGET``: 3 ESs train a round, the default recipe), long enough
for the module to learn the decision rule, so that quality can separate the policies. Per run
it records the mean per-round cloud utility, payments, participation rate, modelled round
latency (slowest participant, W/f + S/r), the measured round wall time and the final
agent's held-out quality with its Wilson 95 % interval.

Selection (``--selections``): ``surplus`` (the default rule), and the straggler-aware rules
``latency_priced`` and ``deadline`` (fed_agent/incentives/selection.py, at their config
defaults) for the policies of ``--selection-policies``.

``--in-process`` runs each federation in this process (benchmarks/in_process.py: the same
strategy and ClientApp handlers, no Flower processes; the ``runner`` column says which). The
contracts, choices, selection and ledger are the same code either way: at 20 ESs the
in-process rows repeat the simulation's cloud utility and modelled latency to the digit; at
100 ESs the 40 ESs offered each round are a seeded sample of the node ids, which a
simulation draws at random, so the two runners offer to different ESs.

Besides the per-round means, each row has ``cloud_utility_discounted`` (the contract model's
objective ``U1 + delta U2``: period-2 rounds at the market's discount, what the contracts
maximise) and the time to quality (rounds, modelled seconds, payments) to each of ``TARGETS``.

Run:  .venv/bin/python benchmarks/strategies_bench.py --in-process [--sizes 20 100]
          [--seeds 0 1 2 3 4] [--rounds 4] [--selections surplus latency_priced deadline]
      economics only (one local step, 20 held-out scenes, every accepting ES trains), into a
      table of its own:
          ... --table strategies_economics --sizes 20 \
              --extra training.local_steps=1 data.eval_samples=20 federation.es_per_round=20
Out:  benchmarks/results/<table>.csv (``strategies`` unless --table; one row per run; a run
      replaces the row of its size, policy, selection, runner and seed and keeps the others),
      <table>_summary.csv (per size, policy, selection and runner over the seeds: means with
      95 % t-intervals, and the cloud utility's ratios to the exact static menu's and to the
      flat fee's, paired by seed), <table>.png
      and, with --large, benchmarks/results/strategies_1000.csv (1,000 virtual ESs, tiny model)
``--from-runs DIR`` recomputes the derived columns from an earlier invocation's run folders.
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
from benchmarks.time_to_quality_bench import BUDGET, time_to_target
from fed_agent.config import load_config
from fed_agent.deploy.launcher import launch_simulation
from fed_agent.evaluation.intervals import accuracy_interval, mean_interval
from fed_agent.evaluation.report import upsert_table
from fed_agent.incentives.config import POLICIES
from fed_agent.incentives.profiles import period_weight
from fed_agent.outputs import write_table_atomic

RESULTS = Path(__file__).resolve().parent / "results"
TABLE_KEYS = ("num_es", "strategy", "selection", "offers", "runner", "seed")
RUN_KEYS = TABLE_KEYS[:5]
OFFERS = ("uniform", "surplus")
"""``incentive.offer_targeting`` of a run (``--offers``): a table written before the column
existed holds uniform offers only."""
TARGETS = (0.8, 0.9)
"""Held-out decision accuracies whose time to quality each row records."""
RATIOS = (
    ("vs_static", "static", "cloud_utility", "uniform"),
    ("vs_static_discounted", "static", "cloud_utility_discounted", "uniform"),
    ("vs_flat_fee", "fedavg_flat_fee", "cloud_utility", "uniform"),
    ("latency_vs_flat_fee", "fedavg_flat_fee", "round_latency_model_s", "uniform"),
    ("s_to_0.9_vs_flat_fee", "fedavg_flat_fee", "modelled_s_to_target_0.9", "uniform"),
    ("vs_targeted_flat_fee", "fedavg_flat_fee", "cloud_utility", "surplus"),
    ("latency_vs_targeted_flat_fee", "fedavg_flat_fee", "round_latency_model_s", "surplus"),
)
"""Summary columns: (name, reference policy, metric, the reference's offers) of the ratios
paired by seed (over the seeds where both have the metric: time to a target only where both
reached it). The flat fee with uniform offers is the stock baseline; with targeted offers
(``--offers surplus``) it is the stronger one."""
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
    seed: int = 0,
) -> dict:
    """One federation; its per-round metrics summarised into one row."""
    overrides = [
        f"incentive={policy}",
        f"incentive.selection={selection}",
        f"federation.num_es={num_es}",
        f"federation.num_rounds={rounds}",
        f"seed={seed}",
        f"output_dir={out}",
        f"run_name={run_name(policy, selection, num_es, seed)}",
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
    cfg = load_config(experiment, overrides)
    n_eval = cfg.data.eval_samples
    ci_low, ci_high = accuracy_interval(float(final["decision_accuracy"]), n_eval)
    return {
        "num_es": num_es,
        "strategy": policy,
        "selection": selection,
        "runner": runner,
        "seed": seed,
        "cloud_utility": rounds_df["cloud_utility"].mean(),
        "payments": rounds_df["payments"].mean(),
        "participation_rate": participation_from_ledger(output_dir / "ledger.csv"),
        "participants": rounds_df["participants"].mean(),
        "round_latency_model_s": rounds_df["round_latency_model_s"].mean(),
        "round_wall_s": rounds_df["round_wall_s"].median(),
        "agent_quality": final["decision_accuracy"],
        "ci_low": ci_low,
        "ci_high": ci_high,
        "n_eval": n_eval,
        "answer_loss": final["answer_loss"],
        "belief_accuracy": rounds_df["belief_accuracy"].mean(),
        "run_wall_s": time.perf_counter() - start,
        "peak_rss_mb": memory.peak_bytes / 2**20,
        **derived_columns(metrics, cfg.market.discount),
    }


def run_name(policy: str, selection: str, num_es: int, seed: int) -> str:
    """The run folder's name (what ``--from-runs`` looks for)."""
    return f"{policy}-{selection}-{num_es}-seed{seed}"


def derived_from_runs(folder: Path, table: Path, discount: float) -> None:
    """Recompute the columns :func:`derived_columns` derives for the table's rows from the run
    folders under ``folder`` (an earlier invocation's temp folder, its runs at market discount
    ``discount``): rows without a folder stay as they are."""
    rows = []
    for _, row in pd.read_csv(table).iterrows():
        name = run_name(row["strategy"], row["selection"], row["num_es"], row["seed"])
        metrics_csv = folder / name / "metrics.csv"
        if metrics_csv.is_file():
            rows.append({**row.to_dict(), **derived_columns(pd.read_csv(metrics_csv), discount)})
    record(rows, table)
    print(f"derived columns recomputed for {len(rows)} rows from {folder}")


def derived_columns(metrics: pd.DataFrame, discount: float) -> dict[str, float]:
    """What a run's per-round metrics give besides the means: the cloud utility weighed as the
    contract model weighs it (period-2 rounds at the market's ``discount``), and the rounds,
    modelled construction time and payments until the module first reaches each of
    ``TARGETS`` (NaN where the run's rounds did not reach it): time to quality, per seed."""
    rounds = metrics[metrics["round"] >= 1]
    weights = [period_weight(int(p), discount) for p in rounds["period"]]
    out = {"cloud_utility_discounted": float((rounds["cloud_utility"] * weights).mean())}
    for target in TARGETS:
        for name, value in time_to_target(metrics, target).items():
            out[f"{name}_{target}"] = value
    return out


def participation_from_ledger(ledger_csv: Path) -> float:
    """Mean over rounds of the share of offered ESs that took an item (ledger ``item >= 0``)."""
    ledger = pd.read_csv(ledger_csv)
    return float(ledger.groupby("round")["item"].apply(lambda items: (items >= 0).mean()).mean())


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per size, policy, selection and runner over the seeds: means with 95 % t-intervals.

    ``vs_static`` and ``vs_flat_fee`` are the cloud utility's ratio to the exact static menu's
    (surplus selection) and to the flat fee's, per seed of the same size and runner, then
    averaged: the seeds share their ESs and willingness paths, so the ratio is paired.
    ``vs_static_discounted`` is the same ratio of ``cloud_utility_discounted``, the objective
    the contracts maximise.
    """
    frame = with_offers(frame)
    rows = []
    for keys, runs in frame.groupby(list(RUN_KEYS), sort=False):
        row = dict(zip(RUN_KEYS, keys, strict=True)) | {"seeds": len(runs)}
        for metric in ("cloud_utility", "cloud_utility_discounted", "agent_quality"):
            low, high = mean_interval(runs[metric])
            row |= {metric: runs[metric].mean(), f"{metric}_ci_low": low,
                    f"{metric}_ci_high": high}  # fmt: skip
        for metric in ("payments", "participation_rate", "round_latency_model_s"):
            row[metric] = runs[metric].mean()
        for target in TARGETS:  # means over the seeds that reached the target
            reached = runs.dropna(subset=[f"modelled_s_to_target_{target}"])
            row[f"reached_{target}"] = len(reached)
            for metric in ("rounds_to_target", "modelled_s_to_target", "payments_to_target"):
                row[f"{metric}_{target}"] = reached[f"{metric}_{target}"].mean()
        for name, reference, metric, offers in RATIOS:
            ratios = paired_ratios(frame, runs, reference, metric, offers)
            low, high = mean_interval(ratios) if len(ratios) else (float("nan"),) * 2
            row |= {name: ratios.mean() if len(ratios) else float("nan"),
                    f"{name}_ci_low": low, f"{name}_ci_high": high}  # fmt: skip
        if "code_version" in runs:  # the code of the runs averaged (several: mixed setups)
            row["code_version"] = " ".join(sorted(set(runs["code_version"].astype(str))))
        rows.append(row)
    return pd.DataFrame(rows)


def paired_ratios(
    frame: pd.DataFrame,
    runs: pd.DataFrame,
    reference: str,
    metric: str = "cloud_utility",
    offers: str = "uniform",
) -> pd.Series:
    """``runs``' ``metric`` over the ``reference`` policy's (surplus selection, ``offers``),
    seed by seed, for the seeds both ran."""
    frame = with_offers(frame)
    size, runner = runs["num_es"].iloc[0], runs["runner"].iloc[0]
    base = frame[(frame["num_es"] == size) & (frame["runner"] == runner)
                 & (frame["strategy"] == reference) & (frame["selection"] == "surplus")
                 & (frame["offers"] == offers)]  # fmt: skip
    joined = runs.merge(base[["seed", metric]], on="seed", suffixes=("", "_ref"))
    return (joined[metric] / joined[f"{metric}_ref"]).dropna()


def with_offers(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its ``offers`` column (uniform for rows written before it existed),
    after ``selection``."""
    if "offers" in frame:
        return frame.assign(offers=frame["offers"].fillna("uniform"))
    frame = frame.copy()
    frame.insert(list(frame.columns).index("selection") + 1, "offers", "uniform")
    return frame


def plot(table: pd.DataFrame, path: Path) -> None:
    """Means over seeds (95 % intervals where there are several), one panel per metric."""
    metrics = ["cloud_utility", "cloud_utility_discounted", "round_latency_model_s",
               "agent_quality"]  # fmt: skip
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 6), sharey=True)
    labels = table["strategy"] + "/" + table["selection"]
    labels = labels.where(table["offers"] == "uniform", labels + " (targeted)")
    labels = labels.where(table["runner"] == "in_process", labels + " (Flower)")
    for ax, metric in zip(axes, metrics, strict=True):
        means = table.assign(label=labels).pivot_table(
            index="label", columns="num_es", values=metric
        )
        errors = None
        if f"{metric}_ci_low" in table:
            half = table.assign(label=labels, half=(table[f"{metric}_ci_high"]
                                                     - table[f"{metric}_ci_low"]) / 2)  # fmt: skip
            errors = half.pivot_table(index="label", columns="num_es", values="half")
        means.plot.barh(ax=ax, xerr=errors)
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
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--policies", nargs="+", default=list(POLICIES))
    parser.add_argument("--large", action="store_true", help="also the 1,000-ES run")
    parser.add_argument("--ffa", action="store_true", help="also EDMSAC with FFA-LoRA")
    parser.add_argument("--extra", nargs="*", default=list(BUDGET), help="Hydra overrides")
    parser.add_argument("--selections", nargs="+", default=["surplus"], choices=SELECTIONS)
    parser.add_argument(
        "--selection-policies",
        nargs="+",
        default=["edmsac"],
        help="policies also run with the selections other than surplus",
    )
    parser.add_argument(
        "--offers",
        default="uniform",
        choices=OFFERS,
        help="incentive.offer_targeting of every run (a key column of the table)",
    )
    parser.add_argument("--in-process", action="store_true", help="no Flower processes")
    parser.add_argument(
        "--table",
        default="strategies",
        help="results/<table>.csv, <table>_summary.csv, <table>.png: another budget's rows "
        "(--extra) go to a table of their own",
    )
    parser.add_argument(
        "--from-runs", type=Path, help="recompute derived columns from an earlier run's folders"
    )
    args = parser.parse_args()
    if args.from_runs:
        discount = load_config("default", args.extra).market.discount
        derived_from_runs(args.from_runs, RESULTS / f"{args.table}.csv", discount)
        return
    out = Path(tempfile.mkdtemp(prefix="fed-agent-strategies-"))
    table = RESULTS / f"{args.table}.csv"
    runner = "in_process" if args.in_process else "flower"
    for seed in args.seeds:
        for num_es in args.sizes:
            extra = [
                *args.extra,
                f"incentive.max_offers_per_round={min(num_es, 40)}",
                f"incentive.offer_targeting={args.offers}",
            ]
            for policy, selection in bench_cases(args):
                row = run_policy(
                    policy, num_es, args.rounds, out, extra, "default", selection, runner, seed
                )
                row = {**row, "offers": args.offers}
                print(row, flush=True)
                record([row], table)
    if args.ffa:
        # the exact aggregation alternative (frozen-A FFA-LoRA) against FedAvg of A and B
        row = run_policy(
            "edmsac", args.sizes[0], args.rounds, out, [*args.extra, "model.lora_freeze_a=true"]
        )
        record([{**row, "strategy": "edmsac_ffa_lora"}], table)
    print(summary(pd.read_csv(table)).to_string(index=False))
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


def record(rows: list[dict], table: Path) -> None:
    """Merge rows into the per-run table (several invocations may share it), then rewrite
    the summary and the plot from the whole table."""
    if table.is_file():  # a table written before the offers column: its rows are uniform
        old = pd.read_csv(table)
        if "offers" not in old:
            write_table_atomic(with_offers(old), table)
    frame = upsert_table(rows, table, TABLE_KEYS)
    means = summary(frame)
    means.to_csv(table.with_name(f"{table.stem}_summary.csv"), index=False)
    plot(means, table.with_suffix(".png"))


if __name__ == "__main__":
    main()
