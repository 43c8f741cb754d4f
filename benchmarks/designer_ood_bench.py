"""The shipped designers out of distribution, raw and behind the guard.

Run from the repository root::

    .venv/bin/python benchmarks/designer_ood_bench.py

For K = 3 and K = 5 it loads the shipped EDMSAC designer (trained on the per-ES markets of a
federated run on the default market, ``TRAINING_RANGES["federation"]``: only workload, module
size and the prior vary) and draws ``NUM_MARKETS`` markets far wider than that
(``OOD_RANGES``: every economic number of ``MarketRanges()``'s broad ranges, the whole
persistence family p in [-1, 1], delta in [0.3, 0.9], ex ante participation). Per market it
solves the exact optimum and measures the designer's own proposal (``raw``, after the
designer's repair of menus it cannot implement) and what the guard offers (``guarded``), as
shares of the optimum over the markets where the optimum is positive, and counts markets with
a positive optimum left without an offer. The guard's time is measured there and, in
distribution, on ``NUM_IN_DISTRIBUTION`` federation markets against the design time.
Writes benchmarks/results/designer_ood.csv.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from fed_agent.contracts import MarketRanges, optimal_contract, sample_market
from fed_agent.designer import ContractDesigner
from fed_agent.designer.config import TRAINING_RANGES
from fed_agent.evaluation.provenance import stamp
from fed_agent.incentives.guard import NO_OFFER, guard_offers
from fed_agent.incentives.policies import shipped_checkpoint

RESULTS = Path(__file__).parent / "results" / "designer_ood.csv"
SEED = 2027
NUM_MARKETS = 200
NUM_IN_DISTRIBUTION = 1000
REPEATS = 3
OOD_RANGES = MarketRanges(
    transition="persistence",
    persistence=(-1.0, 1.0),
    discount=(0.3, 0.9),
    participation="ex_ante",
)
"""Wider than training in every number: theta, prior, transition, delta, W, S, kappa, omega,
T_max all vary (``MarketRanges()``'s defaults), ex ante as in the federated run."""


def ood_markets(num_types: int) -> list:
    rng = np.random.default_rng(SEED + num_types)
    return [sample_market(rng, OOD_RANGES, num_types) for _ in range(NUM_MARKETS)]


def measure(num_types: int) -> dict:
    designer = ContractDesigner.load(shipped_checkpoint("edmsac", num_types))
    markets = ood_markets(num_types)
    start = time.perf_counter()
    optimum = np.array([optimal_contract(m).cloud_utility for m in markets])
    solve_s = time.perf_counter() - start
    proposed = designer.propose_batch(markets)
    proposals = proposed.contracts()
    start = time.perf_counter()  # the guard's time includes deciding which markets to trust
    offers = guard_offers(markets, proposals, priced=True, trusted=designer.covers(markets))
    guard_s = time.perf_counter() - start
    positive = optimum > 0
    raw = proposed.utility[positive] / optimum[positive]
    guarded = offers.cloud_utility[positive] / optimum[positive]
    unserved = int(np.sum(positive & np.array([s == NO_OFFER for s in offers.sources])))
    # in distribution: design and guard time on the markets the designer was trained for
    rng = np.random.default_rng(SEED)
    inside = [
        sample_market(rng, TRAINING_RANGES["federation"], num_types)
        for _ in range(NUM_IN_DISTRIBUTION)
    ]
    design_times, guard_times, solves = [], [], []
    for _ in range(REPEATS):
        start = time.perf_counter()
        inside_proposals = designer.propose(inside)
        design_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        trusted = designer.covers(inside)
        inside_offers = guard_offers(inside, inside_proposals, priced=True, trusted=trusted)
        guard_times.append(time.perf_counter() - start)
        solves.append(inside_offers.exact_solves)
    sources = pd.Series(offers.sources).value_counts().to_dict()
    covered = designer.covers(inside)
    row = {
        "designer": f"edmsac_k{num_types}",
        "markets": NUM_MARKETS,
        "positive_optimum": int(positive.sum()),
        "raw_p5": float(np.percentile(raw, 5)),
        "raw_min": float(raw.min()),
        "guarded_p5": float(np.percentile(guarded, 5)),
        "guarded_min": float(guarded.min()),
        "guarded_mean": float(guarded.mean()),
        "no_offer_profitable": unserved,
        "exact_solves": offers.exact_solves,
        "offered_exact": int(sources.get("exact", 0)),
        "offered_fallback": int(sources.get("fallback", 0)),
        "guard_s": guard_s,
        "optimum_solve_s_per_market": solve_s / NUM_MARKETS,
        "in_dist_markets": NUM_IN_DISTRIBUTION,
        "in_dist_design_s": float(np.median(design_times)),
        "in_dist_guard_s": float(np.median(guard_times)),
        "in_dist_guard_share": float(np.median(guard_times) / np.median(design_times)),
        "in_dist_exact_solves": int(max(solves)),
        "in_dist_covered": int(covered.sum()),
        "ood_covered": int(designer.covers(markets).sum()),
    }
    print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    return row


def main() -> None:
    rows = [measure(k) for k in (3, 5)]
    table = pd.DataFrame(stamp(rows))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    table.round(6).to_csv(RESULTS, index=False)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
