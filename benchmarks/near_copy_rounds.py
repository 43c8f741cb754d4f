"""Near-copies in rounds of a few updates: what the dependence clause pays, round after round.

Commands (from the repository root; the smoke model takes about 1 s a round, the default
module 50-80 s on 2 cores)::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/near_copy_rounds.py --experiment smoke \\
        --seeds 0 1 2 3 4 --rounds 10 training.local_steps=16
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/near_copy_rounds.py --experiment default \\
        --seeds 0 1 2 --rounds 4
    # the same with near-IID data (the ESs' updates closest to each other):
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/near_copy_rounds.py --experiment default \\
        --seeds 0 --rounds 3 data.dirichlet_alpha=1000

Setup (in the columns of every row of ``benchmarks/results/near_copy_rounds.csv``): rounds of
FedAvg in which 4 of 10 ESs (``--per-round`` of ``--num-es``), drawn at random, train the
current module on their own data by the project's training code, each for the steps of a
computing resource drawn uniformly from ``market.f_min_ghz``-``market.f_max_ghz`` (the
default module: 96-480 steps), and the module moves by ``federation.server_learning_rate``
x their mean. Each round is settled by the dependence clause as shipped
(``fed_agent.screening.dependence.dependence_shares``, ``screening.*`` defaults): once as
sent (``honest_cut``: honest ESs paid less than in full) and once for each participant with
a near-copy of its update at cosine 0.99 and one at 0.95 (``benchmarks.attacks``) added as
one more reply (``copies_paid``: what the near-copies were paid in all, in replies' worth;
``originals_cut``, ``others_cut``: the copied ES and the round's other ESs paid less than
in full). Diagnostics: ``searched`` (whether a round of that size is searched for
near-copies), the largest cosine of two honest updates, and of the honest pairs at
``screening.near_copy_cosine`` or more (the only ones tested), how many and the least
share of their difference the others explain over the noise limit (below 1: taken for a
near-copy were the round searched).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.attacks import peer_deltas
from fed_agent.config import load_config
from fed_agent.data.partition import es_examples
from fed_agent.evaluation.provenance import stamp
from fed_agent.modules.adapter import agent_module
from fed_agent.modules.training import local_steps_for, train_locally
from fed_agent.outputs import write_table_atomic
from fed_agent.screening.dependence import (
    dependence_shares,
    explained_shares,
    noise_share_limit,
    unit_rows,
)
from fed_agent.screening.robust import flatten, unflatten
from fed_agent.seeding import derive_seed, seed_everything

OUT = Path("benchmarks/results/near_copy_rounds.csv")
COPIES = ("near_copy_99", "near_copy_95")


def honest_pairs(units: np.ndarray, cfg) -> tuple[float, int, float]:
    """The largest honest cosine; of the pairs at ``near_copy_cosine`` or more, how many and
    the least explained share over the noise limit (inf for none)."""
    n, dim = units.shape
    gram = units @ units.T
    closest = max(float(abs(gram[i, j])) for i, j in combinations(range(n), 2))
    shares = explained_shares(units, cfg.dependence_tolerance, cfg.near_copy_cosine)
    limit = noise_share_limit(n - 2, dim, cfg.near_copy_sigmas)
    least = min(shares.values(), default=np.inf) / limit
    return closest, len(shares), least


def settle_round(updates: list[np.ndarray], cfg, rng: np.random.Generator) -> dict:
    """The honest round's settlement, and each participant's update near-copied in turn."""
    n = len(updates)
    honest = dependence_shares(updates, cfg)
    paid, originals_cut, others_cut, tried = 0.0, 0, 0, 0
    for source in range(n):
        for attack in COPIES:
            peers = [updates[source], *np.delete(np.stack(updates), source, axis=0)]
            copy = peer_deltas(attack, [updates[source]], peers, rng)[0]  # of peer 0
            shares = dependence_shares([*updates, copy], cfg)
            paid += float(shares[n])
            originals_cut += int(shares[source] < 1 - 1e-9)
            others_cut += int(np.sum(np.delete(shares[:n], source) < 1 - 1e-9))
            tried += 1
    units = unit_rows(updates)
    closest, tested, least = honest_pairs(units, cfg)
    limit = noise_share_limit(n - 1, units.shape[1], cfg.near_copy_sigmas)
    return {
        "kept": n,
        "searched": n + 1 >= cfg.near_copy_min_updates or limit <= cfg.near_copy_max_noise_share,
        "honest_cut": int(np.sum(honest < 1 - 1e-9)),
        "near_copies": tried,
        "copies_paid": paid,
        "originals_cut": originals_cut,
        "others_cut": others_cut,
        "max_honest_cosine": closest,
        "close_honest_pairs": tested,
        "least_close_pair_share_over_limit": least,
    }


def run_seed(args, seed: int, write: Callable[[list[dict]], None]) -> list[dict]:
    """``args.rounds`` rounds of one seed, one row each (``write``: called with the rows so far
    after each round)."""
    cfg = load_config(args.experiment, [f"seed={seed}", *args.overrides])
    seed_everything(seed)
    module = agent_module(cfg.model, seed)
    state = {k: v.copy() for k, v in module.initial_state.items()}
    keys = list(state)
    origin = flatten(state, keys)
    rng = np.random.default_rng(derive_seed(seed, "near-copy-rounds"))
    market, num_es = cfg.market, args.num_es
    data = {es: es_examples(cfg.data, seed, es) for es in range(num_es)}
    rows = []
    for done in range(1, args.rounds + 1):
        started = time.perf_counter()
        chosen = np.sort(rng.choice(num_es, args.per_round, replace=False))
        f_ghz = rng.uniform(market.f_min_ghz, market.f_max_ghz, size=len(chosen))
        steps = [local_steps_for(f, market.f_max_ghz, cfg.training.local_steps) for f in f_ghz]
        updates = []
        for es, k in zip(chosen, steps, strict=True):
            module.load_adapter(state)
            train_seed = derive_seed(seed, "local-training", int(es), done)
            train_locally(module, data[int(es)], cfg.training, k, train_seed)
            updates.append(flatten(module.adapter_state(), keys) - origin)
        row = settle_round(updates, cfg.screening, rng)
        rows.append(
            {
                "experiment": args.experiment,
                "overrides": " ".join(args.overrides),
                "dim": int(origin.size),
                "seed": seed,
                "round": done,
                "min_steps": min(steps),
                "max_steps": max(steps),
                **row,
            }
        )
        write(rows)
        origin = origin + cfg.federation.server_learning_rate * np.mean(updates, axis=0)
        state = unflatten(origin, state)
        print(
            f"{args.experiment} seed {seed} round {done} ({time.perf_counter() - started:.0f} s): "
            f"searched {row['searched']}, honest cut {row['honest_cut']}, near-copies paid "
            f"{row['copies_paid']:.2f} of {row['near_copies']}, originals cut "
            f"{row['originals_cut']}, others cut {row['others_cut']}, max honest cosine "
            f"{row['max_honest_cosine']:.3f} ({row['close_honest_pairs']} close pairs, least "
            f"share/limit {row['least_close_pair_share_over_limit']:.3g})",
            flush=True,
        )
    return rows


def main() -> None:
    """Run the seeds; replace this experiment's and overrides' rows of the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="default")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--num-es", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=4)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "overrides", nargs="*", help="config overrides, e.g. data.dirichlet_alpha=1000"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    kept = pd.DataFrame()
    if args.out.exists():  # the other setups' rows stay
        old = pd.read_csv(args.out, keep_default_na=False)
        same = (old["experiment"] == args.experiment) & (
            old["overrides"] == " ".join(args.overrides)
        )
        kept = old[~same]
    done: list[dict] = []

    def write(rows: list[dict]) -> None:
        table = pd.DataFrame(stamp(done + rows))
        write_table_atomic(pd.concat([kept, table], ignore_index=True), args.out)

    for seed in args.seeds:
        done += run_seed(args, seed, write)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
