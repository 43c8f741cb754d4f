"""Write docs/results.md from the committed results tables, so a quoted figure cannot drift
from its table.

Each section names its table, the setup it was measured in and the command that re-measures
it, and shows the table's key columns as they are in the CSV (rounded for reading). The page
is generated: edit this file or the tables, never the page.

Run:  .venv/bin/python -m benchmarks.results_page [--check]
Out:  docs/results.md (``--check``: exit 1 when the page differs from what the tables give)
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PAGE = ROOT / "docs" / "results.md"


@dataclass(frozen=True)
class Table:
    """One results table on the page."""

    file: str
    title: str
    setup: str
    command: str
    columns: tuple[str, ...]
    query: str = ""
    """A pandas query that selects the rows shown (empty: all)."""
    plot: str = ""


STRAGGLER_COLUMNS = (
    "num_es", "strategy", "selection", "offers", "seeds", "cloud_utility", "vs_flat_fee",
    "vs_flat_fee_ci_low", "vs_flat_fee_ci_high", "latency_vs_flat_fee",
    "latency_vs_flat_fee_ci_low", "latency_vs_flat_fee_ci_high", "vs_targeted_flat_fee",
    "vs_targeted_flat_fee_ci_low", "vs_targeted_flat_fee_ci_high",
    "latency_vs_targeted_flat_fee", "round_latency_model_s", "payments", "code_version",
)  # fmt: skip
TABLES = (
    Table(
        "default_run.csv", "The main job, per seed",
        "`make run` (experiment `default`): 10 ESs, 5 rounds, tiny LLM, EDMSAC contracts; "
        "held-out decision accuracy on 500 scenes after the last round.",
        ".venv/bin/python benchmarks/default_run_bench.py",
        ("seed", "round", "decision_accuracy", "ci_low", "ci_high", "participants",
         "rejected", "run_wall_s", "code_version"),
        "round == round.max()",
    ),
    Table(
        "reproducibility.csv", "Same seed, same run",
        "The default experiment run under different conditions; identical adapter hashes mean "
        "bit-identical runs.",
        ".venv/bin/python benchmarks/reproducibility_bench.py",
        ("experiment", "seed", "variant", "adapter_sha256", "final_accuracy", "code_version"),
    ),
    Table(
        "own_data.csv", "Your own data: scikit-learn's handwritten digits",
        "10 ESs from `fed-agent data split` (Dirichlet by label), a held-out split no ES sees; "
        "federated against local-only and centralised training.",
        ".venv/bin/python benchmarks/own_data_bench.py",
        ("dataset", "model", "training", "partitioner", "alpha", "num_es", "seed", "accuracy",
         "ci_low", "ci_high", "n_eval", "majority", "n_seeds", "code_version"),
        plot="own_data.png",
    ),
    Table(
        "agent_eval.csv", "Agent quality per base model",
        "Held-out accuracy of the agent each base model builds (base alone, local-only, "
        "centralised, federated) on `n_eval` held-out scenes, at the budget of the row (ESs, "
        "ESs a round, rounds, local steps, scenes an ES, batch size, the server step); "
        "`majority`: the commonest answer's share. Shown: the mean rows, with the Student-t "
        "95 % interval over `n_seeds` seeds (one seed: its Wilson interval); the CSV also "
        "holds every seed's row. Latency: the first seed's agent. The command of each budget: "
        "docs/models.md.",
        ".venv/bin/python benchmarks/agent_eval_bench.py --models tiny-llm,minilm-perception,"
        "tiny-vlm --seeds 0,1,2,3,4",
        ("model", "training", "deployment", "n_seeds", "quality", "ci_low", "ci_high",
         "majority", "num_es", "es_per_round", "rounds", "steps", "samples_per_es", "batch_size",
         "server_learning_rate", "p50_ms", "code_version"),
        query="seed == 'mean'",
        plot="agent_eval.png",
    ),
    Table(
        "hf_models.csv", "Hugging Face architectures through `model=hf`",
        "Tiny random-weight models built from config (and the real SmolLM2-135M): a federated "
        "round, export, stock peft load with equal logits, serving.",
        ".venv/bin/python benchmarks/hf_models_bench.py",
        ("architecture", "kind", "params", "trained", "exported", "stock_peft_loaded", "served",
         "seconds", "code_version"),
    ),
    Table(
        "gpu.csv", "CPU against CUDA",
        "The same small federation on CPU and on a GPU.",
        "bash benchmarks/gpu_check.sh",
        ("device", "model", "steps_per_s", "round_s", "peak_gpu_mb", "code_version"),
    ),
    Table(
        "strategies_summary.csv", "Incentive policies side by side (learning budget)",
        "Mean over seeds (95 % t-intervals); 3 ESs train a round with the main job's recipe, "
        "4 rounds, in process.",
        ".venv/bin/python benchmarks/strategies_bench.py",
        ("num_es", "strategy", "selection", "seeds", "cloud_utility_discounted",
         "cloud_utility_discounted_ci_low", "cloud_utility_discounted_ci_high",
         "agent_quality", "payments", "round_latency_model_s", "code_version"),
        plot="strategies.png",
    ),
    Table(
        "strategies_straggler_summary.csv", "Straggler-aware recruitment against the flat fee",
        "Mean over seeds; economics budget (at most 10 participants a round, 10 local steps); "
        "the deadline rule's default of 6 s, exit items allowed, places priced; ratios to the "
        "flat fee paired by seed, with 95 % t-intervals (`vs_flat_fee`: the flat fee with "
        "uniform offers, the stock baseline; `vs_targeted_flat_fee`: with targeted offers). "
        "`offers`: `incentive.offer_targeting` (`surplus`: the 40 offers go to the ESs worth "
        "most; at 20 ESs every ES is offered either way, so only uniform rows). No run "
        "reaches 0.9 at this budget.",
        "for sizes in '20 --offers uniform' '100 --offers uniform' '100 --offers surplus'; "
        "do for case in 'edmsac --selections deadline' 'fedavg_flat_fee --selections "
        "surplus'; do .venv/bin/python benchmarks/strategies_bench.py --in-process --table "
        "strategies_straggler --seeds 0 1 2 3 4 --sizes $sizes --policies $case --extra "
        "federation.es_per_round=10 training.local_steps=10 federation.server_learning_rate=1 "
        "incentive.deadline_s=6 incentive.exclusion=true; done; done",
        STRAGGLER_COLUMNS,
        plot="strategies_straggler.png",
    ),
    Table(
        "strategies_straggler_7s_summary.csv", "Straggler-aware recruitment at a 7 s deadline",
        "As above with a 7 s deadline, and EDMSAC by surplus beside it.",
        ".venv/bin/python benchmarks/strategies_bench.py --in-process --table "
        "strategies_straggler_7s --sizes 20 100 --seeds 0 1 2 3 4 --policies edmsac "
        "fedavg_flat_fee --selections surplus deadline --extra federation.es_per_round=10 "
        "training.local_steps=10 federation.server_learning_rate=1 incentive.deadline_s=7 "
        "incentive.exclusion=true; the targeted rows: the same with --sizes 100 --offers "
        "surplus, one invocation per case as above",
        STRAGGLER_COLUMNS,
        plot="strategies_straggler_7s.png",
    ),
    Table(
        "strategies_straggler_5s_summary.csv",
        "Straggler-aware recruitment at a 5 s deadline, targeted offers",
        "As above at 100 ESs with a 5 s deadline (about the targeted flat fee's round "
        "latency), every policy with targeted offers: ratios to the targeted flat fee.",
        "for case in 'edmsac --selections deadline' 'fedavg_flat_fee --selections surplus'; "
        "do .venv/bin/python benchmarks/strategies_bench.py --in-process --table "
        "strategies_straggler_5s --sizes 100 --seeds 0 1 2 3 4 --offers surplus --policies "
        "$case --extra federation.es_per_round=10 training.local_steps=10 "
        "federation.server_learning_rate=1 incentive.deadline_s=5 incentive.exclusion=true; "
        "done",
        STRAGGLER_COLUMNS,
        plot="strategies_straggler_5s.png",
    ),
    Table(
        "strategies_economics_summary.csv", "Contract economics in the federation",
        "Mean over seeds; every accepting ES trains.",
        ".venv/bin/python benchmarks/strategies_bench.py --budget economics",
        ("num_es", "strategy", "selection", "seeds", "cloud_utility_discounted",
         "cloud_utility_discounted_ci_low", "cloud_utility_discounted_ci_high", "payments",
         "code_version"),
        plot="strategies_economics.png",
    ),
    Table(
        "time_to_quality.csv", "Time to quality per policy",
        "Seed 0; modelled module-construction time and payments until the held-out accuracy "
        "first reaches the target.",
        ".venv/bin/python benchmarks/time_to_quality_bench.py",
        ("num_es", "strategy", "selection", "target", "rounds_to_target",
         "modelled_s_to_target", "payments_to_target", "final_quality", "code_version"),
        "target == 0.9",
        plot="time_to_quality.png",
    ),
    Table(
        "contracts.csv", "Contract references on the named markets",
        "Exact solutions of the contract model (docs/contract-model.md).",
        ".venv/bin/python benchmarks/contracts_bench.py",
        ("market", "K", "participation", "solution", "cloud_utility", "violations",
         "ratio_to_static", "ratio_to_best_static", "rent_share", "excluded_types",
         "code_version"),
        "market in ['default', 'paper']",
        plot="contracts_sweep.png",
    ),
    Table(
        "designer_summary.csv", "Contract designers: share of the exact optimum",
        "Held-out markets, mean over seeds (95 % t-intervals).",
        ".venv/bin/python benchmarks/designer_bench.py",
        ("market", "designer", "seeds", "mean", "ci_low", "ci_high", "min", "code_version"),
        plot="designer_curves.png",
    ),
    Table(
        "designer_ood.csv", "Designers out of distribution",
        "Markets drawn well outside the training ranges; utility as a share of the optimum.",
        ".venv/bin/python benchmarks/designer_ood_bench.py",
        ("designer", "markets", "raw_p5", "guarded_p5", "guarded_min", "no_offer_profitable",
         "guard_s", "code_version"),
    ),
    Table(
        "design_time.csv", "Design time for many markets",
        "Seconds to design contracts for the given number of markets, and their utility as a "
        "share of the optimum.",
        ".venv/bin/python benchmarks/design_time_bench.py",
        ("markets", "method", "seconds", "utility_ratio", "min_ratio", "violations",
         "code_version"),
    ),
    Table(
        "robustness_settlement.csv", "Attacks on the federation: pay for delivered work",
        "Smoke model, 20 non-IID ESs, 16 local steps, one round; attackers at 10/30/45 %; what "
        "they were paid against the work their replies carry, honest ESs cut, quality against "
        "no attack, judging alone (`expected`), with the round's settlement (`settled`) and "
        "with the effort clause as well (`effort`).",
        ".venv/bin/python benchmarks/robustness_settlement.py",
        ("seed", "attack", "fraction_attackers", "defence", "attacker_paid", "attacker_work",
         "honest_cut", "honest_pay_lost", "quality_vs_no_attack", "code_version"),
        "attack != 'none'",
    ),
    Table(
        "near_copy_rounds.csv", "Near-copies in rounds of four",
        "Rounds of FedAvg of 4 of 10 ESs drawn at random (steps of a computing resource drawn "
        "from the market's range), settled by the dependence clause as shipped: honest ESs "
        "cut, and a near-copy (cosine 0.99, 0.95) of each participant in turn added as one "
        "more reply: what the 8 copies were paid, originals and others cut. Setup columns: "
        "experiment, overrides, dim.",
        ".venv/bin/python benchmarks/near_copy_rounds.py --experiment default --seeds 0 1 2 "
        "--rounds 4",
        ("experiment", "overrides", "dim", "seed", "round", "searched", "honest_cut",
         "near_copies", "copies_paid", "originals_cut", "others_cut", "max_honest_cosine",
         "close_honest_pairs", "least_close_pair_share_over_limit", "code_version"),
    ),
    Table(
        "robustness_extended_default.csv", "Attacks on a module that learns",
        "The main job's tiny LLM and recipe, 40 local steps, 20 ESs, 2 rounds, 500 held-out "
        "scenes; each defence under each attack.",
        ".venv/bin/python benchmarks/robustness_bench.py --suite extended --experiment default "
        "--overrides training.local_steps=40",
        ("attack", "fraction_attackers", "defence", "paid_to_attackers", "rejected_honest",
         "quality_vs_no_attack", "code_version"),
        plot="robustness_extended_default.png",
    ),
    Table(
        "serving.csv", "Serving the agent",
        "`fed-agent serve` under load; edge deployment against the cloud over a modelled link.",
        ".venv/bin/python benchmarks/serving_bench.py",
        ("model", "deployment", "concurrency", "requests", "errors", "p50_ms", "p95_ms",
         "ttft_p50_ms", "throughput_rps", "code_version"),
    ),
    Table(
        "federation_overhead.csv", "What Flower costs",
        "Round time and memory of the same work in plain PyTorch and in Flower.",
        ".venv/bin/python benchmarks/federation_overhead.py",
        ("num_es", "mode", "local_steps", "round_time_s_median", "peak_rss_mb",
         "overhead_ratio", "code_version"),
    ),
    Table(
        "deploy_rounds.csv", "Deployment rounds",
        "One SuperLink and 3 SuperNodes over TLS on 127.0.0.1.",
        ".venv/bin/python benchmarks/deploy_rounds.py",
        ("mode", "round", "wall_s", "messages", "process_starts", "cpu_s", "code_version"),
    ),
)  # fmt: skip


def cell(value: object) -> str:
    """A table cell: floats to 4 significant digits, long strings cut, NaN empty."""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3g}"
        return f"{value:.4g}"
    text = str(value).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= 40 else text[:37] + "..."


def markdown(frame: pd.DataFrame) -> str:
    """``frame`` as a GitHub markdown table."""
    head = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(False)]
    return "\n".join([head, rule, *body])


def section(table: Table) -> str | None:
    """The page's section of one table (None when the table is not committed)."""
    path = RESULTS / table.file
    if not path.is_file():
        return None
    frame = pd.read_csv(path)
    if table.query:
        frame = frame.query(table.query, local_dict={"round": frame.get("round")})
    shown = frame[[c for c in table.columns if c in frame.columns]]
    parts = [
        f"## {table.title}",
        "",
        f"`benchmarks/results/{table.file}`: {table.setup}",
        f"Re-measure: `{table.command}`. Rows shown: {len(shown)} of {len(pd.read_csv(path))}.",
        "",
        markdown(shown),
    ]
    if table.plot and (RESULTS / table.plot).is_file():
        parts += ["", f"![{table.title}](../benchmarks/results/{table.plot})"]
    return "\n".join(parts)


def page() -> str:
    """The whole page."""
    sections = [s for s in map(section, TABLES) if s is not None]
    intro = (
        "# Results\n\n"
        "Generated by `.venv/bin/python -m benchmarks.results_page` from the tables in "
        "`benchmarks/results/`; do not edit by hand. Every row names the `code_version` "
        "(commit) that produced it. Accuracies carry Wilson 95 % intervals over the held-out "
        "examples; means over seeds carry 95 % t-intervals."
    )
    return "\n\n".join([intro, *sections]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when the page is stale")
    args = parser.parse_args(argv)
    text = page()
    if args.check:
        current = PAGE.read_text() if PAGE.is_file() else ""
        if current != text:
            print(f"{PAGE} is stale: run python -m benchmarks.results_page", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text)
    print(f"wrote {PAGE} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
