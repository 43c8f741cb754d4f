"""Federated vs local-only vs centralised agent modules, and the deployed agent's latency.

Run (from the repository root; on 2 busy CPU cores the tiny LLM takes about 10 minutes a
seed, SmolLM2 over an hour a seed)::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/agent_eval_bench.py \
        --models tiny-llm,minilm-perception --seeds 0,1,2,3,4

and the VLM, trained on the rendered images (rows are merged into the same table: a run
replaces only the rows of the models and seeds it ran)::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/agent_eval_bench.py --models tiny-vlm --seeds 0,1,2,3,4

Writes ``benchmarks/results/agent_eval.csv`` and ``benchmarks/results/agent_eval.png``: one row
per model, training, deployment and seed (``--seeds``, e.g. ``0,1,2,3,4``; the first seed's
federated agent is the one timed), and per model, training and deployment a ``seed = mean`` row
with the Student-t 95 % interval over the seeds (``n_seeds``) and ``majority``, the share of
the commonest answer on the held-out set (``benchmarks/seed_table.py``).
Each model runs with its own config (``model=<name>`` on the experiment of
``MODEL_EXPERIMENTS``: the tiny LLM as in ``make run``, SmolLM2 with its learning rate and
natural-language prompts) on the decision task, and with the federation of
``MODEL_BUDGETS`` (ESs, ESs a round, local steps per round) unless ``--num-es``,
``--es-per-round`` or ``--steps`` say otherwise.
Every accuracy is on ``--eval-samples`` held-out scenes (500) with its Wilson 95 % interval
(``ci_low``, ``ci_high``, over ``n_eval`` decisions; ``fed_agent.evaluation.intervals``).

With the same step budget per ES (``rounds * steps`` optimiser steps of batch ``batch_size``):

* ``federated``: ``rounds`` rounds; in each, ``es_per_round`` ESs in turn
  (:func:`round_participants`) train the global module for ``steps`` steps on their own data,
  and the cloud averages the adapters weighted by example counts. This is what the Flower apps
  do (``train_locally`` on ``es_examples`` in the ClientApp, ``weighted_average`` and the
  server step ``server_step`` in the ServerApp), run in one process to share one base; the apps choose the round's ESs
  by ``incentive.selection`` and give each steps in proportion to its contracted f instead of
  the same ``steps`` (``benchmarks/in_process.py`` runs that real strategy in one process);
* ``local-only``: each ES trains alone for ``rounds * steps`` steps and answers its own
  share of the held-out set (every ``num_es``-th scene, ``pooled_quality``): the mean over the
  ESs for one held-out pass, its interval over the whole set;
* ``centralised``: ``rounds * steps`` steps on the pooled data of all ESs (the same number of
  sequential steps as the federation's global model);
* ``centralised-equal-compute``: ``es_per_round * rounds * steps`` steps,
  as many gradient steps as the whole federation spent;
* ``none``: the base model without modules.

The federated agent is exported, loaded by the runtime and timed (edge-agent, edge-base and a
modelled cloud-only row); the other trained rows leave latency empty (same architecture).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.seed_table import MEAN, save_seed_rows  # noqa: E402
from fed_agent.config import load_config, to_yaml  # noqa: E402
from fed_agent.config.schema import ExperimentConfig  # noqa: E402
from fed_agent.data.partition import es_examples, heldout_examples  # noqa: E402
from fed_agent.evaluation.config import EvaluationConfig  # noqa: E402
from fed_agent.evaluation.deployment import Latency, table_row  # noqa: E402
from fed_agent.evaluation.evaluate_agent import evaluate_runtime  # noqa: E402
from fed_agent.evaluation.quality import Quality, evaluate_quality, pooled_quality  # noqa: E402
from fed_agent.evaluation.report import plot_table  # noqa: E402
from fed_agent.models.registry import load_base  # noqa: E402
from fed_agent.modules.adapter import AgentModule, agent_module  # noqa: E402
from fed_agent.modules.training import train_locally  # noqa: E402
from fed_agent.packaging.export import export_agent  # noqa: E402
from fed_agent.runtime import AgentRuntime  # noqa: E402
from fed_agent.screening.aggregation import server_step, weighted_average  # noqa: E402
from fed_agent.seeding import derive_seed, seed_everything  # noqa: E402

log = logging.getLogger("agent_eval_bench")
RESULTS = Path(__file__).resolve().parent / "results"
NO_LATENCY = Latency(math.nan, math.nan, math.nan, math.nan, math.nan, 0)
MODEL_EXPERIMENTS = {
    "smollm2-135m": "default",
    "tiny-llm": "default",
    "tiny-vlm": "vlm",
    "minilm-perception": "default",
}
"""The tiny LLM is ``make run``'s model; the VLMs read the rendered scene images (labelled by
the rule an image can show: no motion) instead of the perception logs."""
MODEL_BUDGETS = {
    "tiny-llm": (10, 4, 115),
    "smollm2-135m": (3, 3, 20),
    "tiny-vlm": (3, 3, 60),
    "minilm-perception": (3, 3, 20),
}
"""(ESs, ESs training per round, local steps per ES per round): the tiny LLM as in ``make run``
(10 ESs, 4 a round; 115 steps is about the mean of what the ESs chosen at the default contracts
buy: 480 x 1.0-1.8 GHz / 5 GHz), the real models at 3 ESs, all in every round (MiniLM at
SmolLM2's budget: 20 steps a round)."""
TRAININGS = ("local-only", "centralised", "centralised-equal-compute", "federated")
KEYS = ["model", "training", "deployment", "num_es", "es_per_round", "rounds", "steps"]
KEYS += ["samples_per_es", "batch_size", "server_learning_rate", "seed"]
"""A row: one training of one model at one budget and seed (``seed = mean``: over the seeds);
rows of other budgets of the same model stay beside it."""


def experiment(model: str, args: argparse.Namespace, seed: int) -> ExperimentConfig:
    """The config of one model's comparison (decision task, small per-ES datasets)."""
    return load_config(
        MODEL_EXPERIMENTS[model],
        [
            f"seed={seed}",
            f"model={model}",
            "incentive=optimal",  # no designer checkpoint needed: contracts play no part here
            f"federation.num_es={args.num_es}",
            f"federation.es_per_round={args.es_per_round}",  # both must be <= num_es
            f"federation.min_available_es={min(args.num_es, 2)}",
            "data.tasks=[decide]",
            f"data.eval_samples={args.eval_samples}",
            *([f"data.samples_per_es={args.samples_per_es}"] if args.samples_per_es else []),
            *([f"training.batch_size={args.batch_size}"] if args.batch_size else []),
            *args.overrides,
        ],
    )


def round_participants(rnd: int, per_round: int, num_es: int) -> list[int]:
    """The ESs that train in round ``rnd`` (from 1): ``per_round`` of them in turn, so that
    every ES's data is used when fewer than all train a round."""
    return [((rnd - 1) * per_round + i) % num_es for i in range(per_round)]


def federated(module: AgentModule, cfg: ExperimentConfig, data: list, args) -> dict:
    """FedAvg of the adapters over ``rounds`` rounds of ``steps`` local steps per chosen ES,
    with the experiment's server step (``federation.server_learning_rate``)."""
    state = module.initial_state
    for rnd in range(1, args.rounds + 1):
        states, chosen = [], round_participants(rnd, args.es_per_round, len(data))
        for es in chosen:
            module.load_adapter(state)
            seed = derive_seed(cfg.seed, "local-training", es, rnd)
            report = train_locally(module, data[es], cfg.training, args.steps, seed)
            log.info("round %d ES %d loss %.3f (%.0f s)", rnd, es, report.mean_loss, report.wall_s)
            states.append(module.adapter_state())
        averaged = weighted_average(states, [len(data[es]) for es in chosen])
        state = server_step(state, averaged, cfg.federation.server_learning_rate)
    module.load_adapter(state)
    return state


def trained_alone(
    module: AgentModule, cfg: ExperimentConfig, examples: list, steps: int, key: int
) -> None:
    """Train a fresh module on ``examples`` for ``steps`` steps."""
    module.reset()
    train_locally(module, examples, cfg.training, steps, derive_seed(cfg.seed, "alone", key))


def compare(model: str, args: argparse.Namespace, seed: int, timed: bool) -> None:
    """Write the rows of one model and seed (the table is rewritten after each training);
    ``timed``: export the federated agent and time its requests (the latency rows)."""
    num_es, per_round, steps = MODEL_BUDGETS[model]
    args = argparse.Namespace(**{**vars(args), "num_es": args.num_es or num_es})
    args.es_per_round = min(args.es_per_round or per_round, args.num_es)
    args.steps = args.steps or steps
    cfg = experiment(model, args, seed)
    seed_everything(seed)
    start = time.perf_counter()
    load_base(cfg.model, seed)
    base_s = time.perf_counter() - start
    module = agent_module(cfg.model, seed)
    images = module.base.is_vision
    heldout = heldout_examples(cfg.data, seed, images)
    data = [es_examples(cfg.data, seed, es, images) for es in range(args.num_es)]
    trainings = set(args.trainings.split(","))
    budget = args.rounds * args.steps
    answers = [e.answer for e in heldout if e.task == "decide"]
    setup = {
        "seed": str(seed),
        "majority": max(answers.count(a) for a in set(answers)) / len(answers),
        "num_es": args.num_es,
        "es_per_round": args.es_per_round,
        "rounds": args.rounds,
        "steps": args.steps,
        "samples_per_es": cfg.data.samples_per_es,
        "batch_size": cfg.training.batch_size,
        "server_learning_rate": cfg.federation.server_learning_rate,
    }

    def quality() -> Quality:
        return evaluate_quality(module, heldout, cfg.training.eval_batch_size)

    def record(training: str, q: Quality, deployment: str = "edge-agent") -> None:
        log.info("%s seed %d %s: accuracy %.3f", model, seed, training, q.decision_accuracy)
        save([{**table_row(model, training, deployment, q, NO_LATENCY), **setup}], args.out)

    # the federated agent first: the row the others are compared with, and the one timed
    state = federated(module, cfg, data, args)
    if timed:
        with tempfile.TemporaryDirectory() as tmp:
            info = {"training": "federated", "config_yaml": to_yaml(cfg)}
            agent_dir = export_agent(Path(tmp) / "agent", module, state, info)
            start = time.perf_counter()
            runtime = AgentRuntime.load(agent_dir, seed)
            agent_s = base_s + time.perf_counter() - start
            ecfg = EvaluationConfig(requests=args.requests, max_new_tokens=args.max_new_tokens)
            rows = evaluate_runtime(runtime, heldout, ecfg, "federated", (base_s, agent_s))
        save([{**row, **setup} for row in rows], args.out)
    else:
        record("federated", quality())
        module.reset()  # the initial adapter leaves the base's outputs unchanged
        record("none", quality(), "edge-base")
    if "local-only" in trainings:  # each ES's module answers its own share of the held-out set
        local = []
        for es, examples in enumerate(data):
            trained_alone(module, cfg, examples, budget, es)
            share = heldout[es :: len(data)]
            local.append(evaluate_quality(module, share, cfg.training.eval_batch_size))
        record("local-only", pooled_quality(local))
    pooled = [e for x in data for e in x]
    if "centralised" in trainings:
        trained_alone(module, cfg, pooled, budget, -1)
        record("centralised", quality())
    if "centralised-equal-compute" in trainings:
        trained_alone(module, cfg, pooled, budget * args.es_per_round, -2)
        record("centralised-equal-compute", quality())


def save(rows: list[dict], out: Path) -> None:
    """Merge rows into the CSV, recompute the mean rows and redraw the plot (after every
    training, so an interrupted run keeps what it measured; rows of other models and seeds
    stay)."""
    save_seed_rows(
        rows,
        out / "agent_eval.csv",
        KEYS,
        KEYS[:-1],
        "quality",
        averaged=("majority", "answer_loss", "perplexity"),
        draw=plot,
    )


def plot(frame, path: Path) -> None:
    """The mean rows: accuracy over the seeds and the (first seed's) request latency."""
    means = frame[frame["seed"] == MEAN].reset_index(drop=True)
    plot_table(means, path, "held-out accuracy (mean over seeds) and request latency")


def main() -> None:
    """Parse the budget, run every model, write the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="tiny-llm,smollm2-135m")
    parser.add_argument("--num-es", type=int, default=0, help="0: the model's MODEL_BUDGETS")
    parser.add_argument(
        "--es-per-round", type=int, default=0, help="ESs training a round (0: MODEL_BUDGETS)"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--steps", type=int, default=0, help="local steps per ES per round (0: MODEL_BUDGETS)"
    )
    parser.add_argument("--batch-size", type=int, default=0, help="0: the config's")
    parser.add_argument("--samples-per-es", type=int, default=0, help="0: the config's")
    parser.add_argument("--eval-samples", type=int, default=500)
    parser.add_argument(
        "--seeds", default="0", help="comma-separated; the first one's agent is timed"
    )
    parser.add_argument("--requests", type=int, default=50, help="0: time nothing")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument(
        "--overrides",
        nargs="*",
        default=[],
        help="extra config overrides, e.g. model.lora_freeze_a=true",
    )
    parser.add_argument(
        "--trainings",
        default="local-only,centralised,federated",
        help=f"comma-separated subset of {','.join(TRAININGS)} (federated always runs: "
        "its agent is the one timed)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest on a busy box)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    unknown = set(args.trainings.split(",")) - set(TRAININGS)
    if unknown:
        parser.error(f"--trainings: unknown {sorted(unknown)}; valid choices: {list(TRAININGS)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    for model in args.models.split(","):
        for seed in seeds:
            compare(model, args, seed, timed=seed == seeds[0] and args.requests > 0)


if __name__ == "__main__":
    main()
