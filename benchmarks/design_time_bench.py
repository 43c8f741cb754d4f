"""Contract-design time per round for 1,000 ESs, and what each method's contracts are worth.

The markets are the ones a federated run on the default market builds for its ESs
(``es_market``: the configured market with each simulated ES's public workload and uplink
gain, the measured tiny-LLM adapter size and the cloud's belief: the prior before its first
choice, then the row of P of the type it revealed), 250 ESs x 4 beliefs = 1,000 markets.
Every method designs one contract per market; the table gives its wall time and the ratio
of its total cloud utility to the exact optimum's, sum U / sum U*:

- ``edmsac`` / ``dmsac``: the shipped federation designer, ``propose_batch`` (policy +
  exact pricing: closed form where certified, stacked minimal payment LPs for the rest);
- ``edmsac+guard``: the same and the strategy's guard (verify, compare with the pooling
  reference, no offer where both lose money), what a round really runs;
- ``pooling``: the guard's closed-form reference alone;
- ``optimal-serial`` / ``optimal-parallel``: the exact cutting-plane optimum, one market
  after another and over 2 worker processes (both cores);
- ``static-serial``: the exact static menu.

Run it alone (timings; about 3 minutes)::

    .venv/bin/python benchmarks/design_time_bench.py

Writes ``benchmarks/results/design_time.csv`` (markets, method, seconds, utility_ratio,
min_ratio, loss_markets, violations).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from fed_agent.contracts import (
    DynamicContract,
    Market,
    MarketBatch,
    MarketParams,
    audit,
    cloud_utility,
    optimal_contract,
    static_contract,
)
from fed_agent.contracts.pricing import reference_menus
from fed_agent.designer import ContractDesigner
from fed_agent.evaluation.report import upsert_table
from fed_agent.incentives.config import IncentiveConfig
from fed_agent.incentives.guard import guard_offers
from fed_agent.incentives.policies import shipped_checkpoint
from fed_agent.incentives.profiles import es_market, simulated_profiles

RESULTS = Path(__file__).resolve().parent / "results" / "design_time.csv"
ADAPTER_BYTES = 28_672  # the tiny LLM's LoRA adapter
REPEATS = 3


def run_markets(num_es: int, seed: int = 0) -> list[Market]:
    """Every simulated ES's market under each belief the cloud can hold about it."""
    params, incentive = MarketParams(), IncentiveConfig()
    transition = Market.from_params(params).transition
    markets = []
    for partition_id in range(num_es):
        public, _ = simulated_profiles(seed, partition_id, params, incentive)
        for belief in (None, *transition):
            markets.append(es_market(params, public, ADAPTER_BYTES, belief))
    return markets


def _solve_optimal(market: Market) -> DynamicContract:
    return optimal_contract(market).contract


def timed(design: Callable[[], list], repeats: int) -> tuple[float, list]:
    """Median wall time of ``design`` over ``repeats`` calls, and its last result."""
    seconds, result = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        result = design()
        seconds.append(time.perf_counter() - start)
    return float(np.median(seconds)), result


def score(
    markets: Sequence[Market], contracts: Sequence[DynamicContract | None], optimum: np.ndarray
) -> dict[str, float]:
    """sum U / sum U*, the worst single ratio, markets where the cloud loses, violations."""
    utility = np.array(
        [0.0 if c is None else cloud_utility(c, m) for c, m in zip(contracts, markets, strict=True)]
    )
    violations = sum(
        len(audit(c, m)) for c, m in zip(contracts, markets, strict=True) if c is not None
    )
    return {
        "utility_ratio": float(utility.sum() / optimum.sum()),
        "min_ratio": float(np.min(utility / optimum)),
        "loss_markets": int(np.sum(utility < -1e-9)),
        "violations": violations,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--es", type=int, default=250, help="simulated ESs (x 4 beliefs)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    markets = run_markets(args.es)
    rows = []

    def add(method: str, seconds: float, contracts: Sequence[DynamicContract | None]) -> None:
        rows.append(
            {
                "markets": len(markets),
                "method": method,
                "seconds": round(seconds, 4),
                **score(markets, contracts, optimum),
            }
        )
        print(rows[-1], flush=True)

    seconds, optima = timed(lambda: [_solve_optimal(m) for m in markets], 1)
    optimum = np.array([cloud_utility(c, m) for c, m in zip(optima, markets, strict=True)])
    add("optimal-serial", seconds, optima)
    with ProcessPoolExecutor(max_workers=2) as pool:
        list(pool.map(_solve_optimal, markets[:8]))  # start the workers before timing
        seconds, parallel = timed(lambda: list(pool.map(_solve_optimal, markets, chunksize=25)), 1)
    add("optimal-parallel", seconds, parallel)
    seconds, static = timed(lambda: [static_contract(m).contract for m in markets], 1)
    add("static-serial", seconds, static)
    batch = MarketBatch.from_markets(markets)
    seconds, menus = timed(lambda: reference_menus(MarketBatch.from_markets(markets)), REPEATS)
    add("pooling", seconds, [DynamicContract(*(m[b] for m in menus)) for b in range(batch.size)])
    for name in ("edmsac", "dmsac"):
        designer = ContractDesigner.load(shipped_checkpoint(name, 3))
        designer.propose(markets[:16])  # warm up
        seconds, proposed = timed(lambda d=designer: d.propose(markets), REPEATS)
        add(name, seconds, proposed)

        def guarded(d: ContractDesigner = designer) -> list:
            return guard_offers(markets, d.propose(markets), priced=True).contracts

        seconds, offered = timed(guarded, REPEATS)
        add(f"{name}+guard", seconds, offered)
    upsert_table(rows, args.out, ("markets", "method"))


if __name__ == "__main__":
    main()
