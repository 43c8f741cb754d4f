"""Own data: federated vs local-only vs centralised on scikit-learn's handwritten digits.

The data go through the user's path (docs/data.md): ``fed-agent data digits`` writes the
1,797 8x8 images as one data folder, ``fed-agent data split`` divides it with flwr-datasets
(Dirichlet alpha 0.5 over the answer, 10 ESs, 360 held-out, 64 for the cloud), and every
party reads its own folder (``fed_agent.data.sources``). Run (from the repository root)::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/own_data_bench.py --seeds 0,1,2,3,4

The experiment is ``digits`` (configs/experiment/digits.yaml, the data paths pointed at the
split); invocations with other ``--seeds`` may run side by side: each merges its rows into the
table (``upsert_table``) and the mean rows are recomputed from every seed row there.

With equal compute (``rounds``, ``steps`` and ``es_per_round`` default to the experiment's
``federation.num_rounds``, ``training.local_steps`` and ``federation.es_per_round``):

* ``federated``: ``rounds`` rounds; in each, ``es_per_round`` ESs in turn train the global
  module ``steps`` steps on their own folder, FedAvg weighted by example counts
  (``benchmarks.agent_eval_bench.federated``: the ClientApp's training and the ServerApp's
  aggregation in one process);
* ``local-only``: every ES trains alone for as many steps as it trained in the federation
  (``steps`` times the rounds it took part in); the mean over ESs, each scored on its own
  tenth of the held-out set (``pooled_quality``);
* ``centralised``: ``es_per_round * rounds * steps`` steps on the pooled ES folders (as many
  gradient steps as the whole federation spent: equal compute).

Each seed builds its own base, LoRA initialisation and training order; the split is the same
for all seeds (the data set is fixed, as an ES's data would be). Per row: the held-out accuracy
with its Wilson 95 % interval; per training, a ``mean`` row with the Student-t 95 % interval
over seeds (``n_seeds``: how many), and the recipe (rounds, steps, ESs a round, learning rate).
Writes ``benchmarks/results/own_data.csv`` and ``own_data.png``.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from benchmarks.agent_eval_bench import (  # noqa: E402
    federated,
    round_participants,
    trained_alone,
)
from benchmarks.seed_table import save_seed_rows  # noqa: E402
from fed_agent.config import load_config  # noqa: E402
from fed_agent.data.digits import digits_records  # noqa: E402
from fed_agent.data.sources import _folder_examples  # noqa: E402
from fed_agent.data.split import SplitSpec, split_folder  # noqa: E402
from fed_agent.data.writing import write_folder  # noqa: E402
from fed_agent.evaluation.quality import evaluate_quality, pooled_quality  # noqa: E402
from fed_agent.modules.adapter import agent_module  # noqa: E402
from fed_agent.seeding import seed_everything  # noqa: E402

log = logging.getLogger("own_data_bench")
RESULTS = Path(__file__).resolve().parent / "results"
COLUMNS = [
    "dataset",
    "model",
    "training",
    "partitioner",
    "alpha",
    "num_es",
    "seed",
    "accuracy",
    "ci_low",
    "ci_high",
    "n_eval",
    "majority",
    "n_seeds",
    "rounds",
    "steps",
    "es_per_round",
    "learning_rate",
]
KEYS = ["dataset", "model", "training", "partitioner", "alpha", "num_es", "seed"]
"""A row of the table: one training of one seed (``seed = mean``: over the seeds)."""
GROUPS = ["dataset", "model", "training"]


def prepare(root: Path, form: str, spec: SplitSpec) -> Path:
    """The split folders under ``root/<form>`` (written once)."""
    out = root / form / "split"
    if not (out / "split.json").exists():
        records, meta = digits_records(form)
        write_folder(root / form / "all", records, meta)
        split_folder(root / form / "all", out, spec)
    return out


def run_seed(seed: int, data_root: Path, args: argparse.Namespace, save: Callable) -> None:
    """One seed: federated, local-only, centralised, each row handed to ``save`` when done."""
    paths = [
        f"data.path={data_root / 'es'}",
        f"data.eval_path={data_root / 'eval'}",
        f"data.cloud_path={data_root / 'cloud'}",
    ]
    cfg = load_config(args.experiment, [f"seed={seed}", *paths, *shlex.split(args.overrides)])
    args.rounds = args.rounds or cfg.federation.num_rounds
    args.steps = args.steps or cfg.training.local_steps
    args.es_per_round = args.es_per_round or cfg.federation.es_per_round
    seed_everything(seed)
    module = agent_module(cfg.model, seed)
    size = cfg.data.image_size if module.base.is_vision else None
    heldout = _folder_examples(str(data_root / "eval"), size)
    data = [_folder_examples(str(data_root / "es" / str(i)), size) for i in range(args.num_es)]
    answers = [e.answer for e in heldout]
    majority = max(answers.count(a) for a in set(answers)) / len(answers)
    budget = args.rounds * args.steps
    chain = range(1, args.rounds + 1)

    def row(training: str, quality) -> dict:
        low, high = quality.accuracy_interval
        log.info("seed %d %s: accuracy %.3f", seed, training, quality.decision_accuracy)
        return {
            "dataset": f"digits-{args.form}",
            "model": cfg.model.name,
            "training": training,
            "partitioner": args.partitioner,
            "alpha": args.alpha,
            "num_es": args.num_es,
            "seed": str(seed),  # a text column: the mean rows say "mean"
            "accuracy": quality.decision_accuracy,
            "ci_low": low,
            "ci_high": high,
            "n_eval": quality.num_decisions,
            "majority": majority,
            "n_seeds": 1,
            "rounds": args.rounds,
            "steps": args.steps,
            "es_per_round": args.es_per_round,
            "learning_rate": cfg.training.learning_rate,
        }

    def quality():
        return evaluate_quality(module, heldout, cfg.training.eval_batch_size)

    federated(module, cfg, data, args)
    save(row("federated", quality()))
    if "local-only" in args.trainings:
        local = []
        for es, examples in enumerate(data):
            rounds = sum(es in round_participants(r, args.es_per_round, len(data)) for r in chain)
            trained_alone(module, cfg, examples, rounds * args.steps, es)
            share = heldout[es :: len(data)]
            local.append(evaluate_quality(module, share, cfg.training.eval_batch_size))
        save(row("local-only", pooled_quality(local)))
    if "centralised" in args.trainings:
        pooled = [e for examples in data for e in examples]
        trained_alone(module, cfg, pooled, budget * args.es_per_round, -1)
        save(row("centralised", quality()))


def plot(frame: pd.DataFrame, path: Path) -> None:
    """Per training: each seed's accuracy and the mean with its 95 % interval."""
    seeds = frame[frame["seed"] != "mean"]
    means = frame[frame["seed"] == "mean"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for x, (_, m) in enumerate(means.iterrows()):
        values = seeds[seeds["training"] == m["training"]]["accuracy"]
        ax.scatter(np.full(len(values), x), values, color="0.6", s=12, zorder=2)
        ax.errorbar(
            x,
            m["accuracy"],
            yerr=[[m["accuracy"] - m["ci_low"]], [m["ci_high"] - m["accuracy"]]],
            fmt="o",
            color="C0",
            capsize=4,
            zorder=3,
        )
    ax.axhline(means["majority"].iloc[0], ls=":", color="0.5", label="majority answer")
    labels = [f"{t}\n{n} seeds" for t, n in zip(means["training"], means["n_seeds"], strict=True)]
    ax.set_xticks(range(len(means)), labels)
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, 1)
    first = means.iloc[0]
    ax.set_title(
        f"{first['dataset']}, {first['model']}: {first['num_es']} ESs, "
        f"{first['partitioner']} alpha {first['alpha']}, {first['n_eval']} held-out",
        fontsize=9,
    )
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def save(row: dict | None, table: Path) -> None:
    """Merge ``row`` (if any) into the table, recompute the mean rows and redraw the plot."""
    frame = save_seed_rows(
        [row] if row is not None else [], table, KEYS, GROUPS, "accuracy", draw=plot
    )
    print(frame.to_string(index=False), flush=True)


def main() -> None:
    """Prepare the split, run every seed, write the table and the plot."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--form", default="image", choices=["image", "text"])
    parser.add_argument("--experiment", default="digits")
    parser.add_argument(
        "--overrides",
        default="",
        help="Hydra overrides of the experiment (one string)",
    )
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--num-es", type=int, default=10)
    parser.add_argument("--partitioner", default="dirichlet")
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--eval-size", type=int, default=360)
    parser.add_argument("--rounds", type=int, help="default: the experiment's num_rounds")
    parser.add_argument("--steps", type=int, help="local steps a round; default: local_steps")
    parser.add_argument("--es-per-round", type=int, help="default: the experiment's")
    parser.add_argument("--trainings", default="federated,local-only,centralised")
    parser.add_argument("--work", type=Path, default=Path(".cache/own_data"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--redraw", action="store_true", help="only recompute the mean rows and the plot"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    spec = SplitSpec(args.num_es, args.partitioner, args.alpha, "answer", args.eval_size)
    data_root = prepare(args.work, args.form, spec)
    table = args.out / "own_data.csv"
    if args.redraw:
        save(None, table)
        return
    for seed in (int(s) for s in args.seeds.split(",")):
        run_seed(seed, data_root, args, lambda row: save(row, table))


if __name__ == "__main__":
    main()
