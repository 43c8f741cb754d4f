"""How much honest updates agree with the cloud's reference update, and how their norm grows
with local steps: the figures the update screen's limits rest on
(``fed_agent/screening/judge.py``).

For the default module, fresh and after centralised training on pooled ES data (a stand-in
for a converged global module), each of ``--es`` ESs trains ``--steps`` steps on its own data
from that module (an honest update). The cloud's reference update is trained on its own split
of each size in ``--splits`` for each step count in ``--reference-steps``. Rows:

- ``reference_cosine``: each honest update's cosine to each reference;
- ``pairwise_cosine``: the honest updates' cosines to each other;
- ``random_cosine``: a random direction's cosine to the first reference (chance level);
- ``norm``: the norm of a fresh run of each of ``--growth-steps`` steps on ES 0's data
  (its growth per doubling of steps is what the expected norm must follow).

Run (about 10 minutes on one idle core)::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/screen_agreement_bench.py

Writes ``benchmarks/results/screen_agreement.csv`` (stage, kind, split, steps, es, value).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fed_agent.config import load_config
from fed_agent.data.partition import cloud_examples, es_examples, heldout_examples
from fed_agent.evaluation.quality import evaluate_quality
from fed_agent.modules.adapter import agent_module
from fed_agent.modules.training import train_locally
from fed_agent.screening.robust import flatten

RESULTS = Path(__file__).resolve().parent / "results"


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--es", type=int, default=4, help="honest ESs (0..N-1)")
    parser.add_argument("--steps", type=int, default=200, help="an honest ES's local steps")
    parser.add_argument("--splits", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--reference-steps", type=int, nargs="+", default=[64, 200])
    parser.add_argument("--growth-steps", type=int, nargs="+", default=[25, 50, 100, 200, 400])
    parser.add_argument("--pretrain-steps", type=int, default=600, help="the converged stage")
    parser.add_argument("--out", type=Path, default=RESULTS / "screen_agreement.csv")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cfg = load_config("default")
    module = agent_module(cfg.model, cfg.seed)
    heldout = heldout_examples(cfg.data, cfg.seed)
    pooled = [
        e for i in range(5, cfg.federation.num_es) for e in es_examples(cfg.data, cfg.seed, i)
    ]
    module.reset()
    fresh = module.adapter_state()
    train_locally(module, pooled, cfg.training, args.pretrain_steps, seed=99)
    stages = {"fresh": fresh, "trained": module.adapter_state()}
    rows = []
    for stage, state in stages.items():
        keys = list(state)
        origin = flatten(state, keys)
        module.load_adapter(state)
        accuracy = evaluate_quality(module, heldout, cfg.training.eval_batch_size).decision_accuracy
        print(f"{stage}: held-out accuracy {accuracy:.3f}", flush=True)

        def update(examples, steps, seed, keys=keys, origin=origin, state=state):
            module.load_adapter(state)
            train_locally(module, examples, cfg.training, steps, seed)
            return flatten(module.adapter_state(), keys) - origin

        honest = [
            update(es_examples(cfg.data, cfg.seed, i), args.steps, 100 + i) for i in range(args.es)
        ]
        base = {"stage": stage, "accuracy": accuracy}
        for i in range(args.es):
            for j in range(i + 1, args.es):
                rows.append(
                    {
                        **base,
                        "kind": "pairwise_cosine",
                        "split": 0,
                        "steps": args.steps,
                        "es": f"{i}-{j}",
                        "value": cosine(honest[i], honest[j]),
                    }
                )
        first = None
        for split in args.splits:
            examples = cloud_examples(cfg.data, cfg.seed, split)
            for steps in args.reference_steps:
                reference = update(examples, steps, 7)
                first = reference if first is None else first
                for i, h in enumerate(honest):
                    rows.append(
                        {
                            **base,
                            "kind": "reference_cosine",
                            "split": split,
                            "steps": steps,
                            "es": str(i),
                            "value": cosine(h, reference),
                        }
                    )
        random = np.random.default_rng(0).normal(size=first.shape)
        rows.append(
            {
                **base,
                "kind": "random_cosine",
                "split": args.splits[0],
                "steps": args.reference_steps[0],
                "es": "-",
                "value": cosine(random, first),
            }
        )
        for steps in args.growth_steps:
            norm = float(np.linalg.norm(update(es_examples(cfg.data, cfg.seed, 0), steps, 5)))
            rows.append(
                {**base, "kind": "norm", "split": 0, "steps": steps, "es": "0", "value": norm}
            )
        table = pd.DataFrame(rows)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out, index=False)
        now = table[table.stage == stage]
        for kind, part in now.groupby("kind"):
            print(f"  {kind}: {part.value.min():.3f} .. {part.value.max():.3f}", flush=True)
        norms = now[now.kind == "norm"].value.to_numpy()
        print(f"  norm growth per doubling: {np.round(norms[1:] / norms[:-1], 2)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
