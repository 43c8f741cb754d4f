"""Shipped designer checkpoints on the markets a federated run actually builds.

A ContractStrategy designs one contract per ES on ``es_market``: the configured market with
the ES's public workload and uplink gain, the measured adapter size and the cloud's belief
(the prior before the ES's first choice, then the row of P of the type it revealed). This
scores each shipped checkpoint on those markets for ``--es`` simulated ESs x 4 beliefs
against the exact optimum, and on held-out markets of the ``federation`` training ranges.

Run (about 2 minutes, one core)::

    .venv/bin/python benchmarks/designer_run_markets.py

Writes ``benchmarks/results/designer_run_markets.csv``: per checkpoint and market set, the
mean and 10th percentile of U / U*, the aggregate sum U / sum U*, the share of markets where
the cloud loses money (U < 0) and the audit violations.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import torch

from fed_agent.contracts import Market, MarketBatch, audit, cloud_utility_batch
from fed_agent.contracts.market import MarketParams
from fed_agent.designer import TRAINING_RANGES, ContractDesigner, EvaluationSet, heldout_markets
from fed_agent.incentives.config import IncentiveConfig
from fed_agent.incentives.profiles import es_market, simulated_profiles

ASSETS = Path(__file__).resolve().parents[1] / "fed_agent" / "assets"
CHECKPOINTS = ("edmsac_default.npz", "edmsac_federation.npz", "dmsac_federation.npz")
RESULTS = Path(__file__).resolve().parent / "results" / "designer_run_markets.csv"


def run_markets(num_es: int, seed: int, module_bytes: float) -> list[Market]:
    """Every ES's market under each belief the cloud can hold about it."""
    params, incentive = MarketParams(), IncentiveConfig()
    transition = Market.from_params(params).transition
    markets = []
    for partition_id in range(num_es):
        public, _ = simulated_profiles(seed, partition_id, params, incentive)
        for belief in (None, *transition):
            markets.append(es_market(params, public, module_bytes, belief))
    return markets


def score(designer: ContractDesigner, evaluation: EvaluationSet) -> dict[str, float]:
    """Utility ratios of the designer's contracts on ``evaluation``."""
    proposed = designer.propose_batch(evaluation.markets)
    batch = MarketBatch.from_markets(evaluation.markets)
    utility = cloud_utility_batch(proposed.f1, proposed.r1, proposed.f2, proposed.r2, batch)
    ratio = utility / evaluation.optimum
    contracts = proposed.contracts()
    violations = sum(len(audit(c, m)) for c, m in zip(contracts, evaluation.markets, strict=True))
    return {
        "mean_ratio": float(np.mean(ratio)),
        "p10_ratio": float(np.quantile(ratio, 0.1)),
        "aggregate_ratio": float(utility.sum() / evaluation.optimum.sum()),
        "loss_share": float(np.mean(utility < 0)),
        "violations": violations,
        "markets": len(evaluation.markets),
    }


def main() -> None:
    """Score every shipped checkpoint on both market sets and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--es", type=int, default=40, help="simulated ESs (x 4 beliefs)")
    parser.add_argument("--module-bytes", type=float, default=28_672, help="tiny-llm adapter")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    sets = {
        "federated-run": EvaluationSet.solve(run_markets(args.es, 0, args.module_bytes)),
        "federation-heldout": EvaluationSet.solve(
            heldout_markets(TRAINING_RANGES["federation"], 3, 24, seed=777)
        ),
    }
    rows = []
    for name in CHECKPOINTS:
        designer = ContractDesigner.load(ASSETS / name)
        for market_set, evaluation in sets.items():
            rows.append(
                {"checkpoint": name, "markets_from": market_set, **score(designer, evaluation)}
            )
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rows[-1].items()})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
