"""Benchmark of the reference contracts: utility, audit and solve time per market.

Run from the repository root::

    .venv/bin/python benchmarks/contracts_bench.py

It solves every reference (complete information, optimal, static, uniform, random) on the
default (K = 3) and paper (K = 5) markets, a K = 8 market and 20 random markets (10 with the
neighbour transition structure, 10 with arbitrary Dirichlet transitions), under both
participation rules, and writes benchmarks/results/contracts.csv. It also prints the
throughput of the batch scorer ``score_f_menus`` that the RL designer uses.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from fed_agent.contracts import (
    PARTICIPATION_RULES,
    REFERENCE_SOLVERS,
    Market,
    MarketParams,
    MarketRanges,
    named_market,
    reference_violations,
    sample_market,
    score_f_menus,
    solve_reference,
)

RESULTS = Path(__file__).parent / "results" / "contracts.csv"
SEED = 2026
NUM_RANDOM = 20


def markets() -> list[tuple[str, Market]]:
    """The benchmark markets under the per-period rule (the rule is varied later)."""
    rng = np.random.default_rng(SEED)
    chosen = [
        ("default", named_market("default")),
        ("paper", named_market("paper")),
        ("k8", Market.from_params(MarketParams(num_types=8))),
    ]
    for index in range(NUM_RANDOM):
        structure = "neighbour" if index < NUM_RANDOM // 2 else "dirichlet"
        num_types = int(rng.integers(2, 7))
        market = sample_market(rng, MarketRanges(transition=structure), num_types)
        chosen.append((f"random{index:02d}_{structure}", market))
    return chosen


def solve_all(label: str, market: Market) -> list[dict]:
    """One row per reference contract of ``market``."""
    rows = []
    for name in REFERENCE_SOLVERS:
        solution = solve_reference(name, market, np.random.default_rng(SEED))
        found = reference_violations(name, solution.contract, market)
        rows.append(
            {
                "market": label,
                "K": market.num_types,
                "participation": market.participation,
                "solution": name,
                "cloud_utility": solution.cloud_utility,
                "violations": len(found),
                "solve_time_s": solution.solve_time_s,
                "optimality_gap": solution.optimality_gap,
                "transition_monotone": market.transition_is_monotone,
            }
        )
    optimum = next(row["cloud_utility"] for row in rows if row["solution"] == "optimal")
    for row in rows:
        row["utility_ratio_to_optimum"] = row["cloud_utility"] / optimum
    return rows


def batch_throughput(market: Market, batch: int = 4096) -> tuple[float, float]:
    """Menus per second of ``score_f_menus`` on random monotone menus (fast, exact)."""
    rng = np.random.default_rng(SEED)
    k = market.num_types
    f1 = np.sort(rng.uniform(market.f_lower_ghz, market.f_max_ghz, (batch, k)), axis=1)
    f2 = np.sort(rng.uniform(market.f_lower_ghz, market.f_max_ghz, (batch, k, k)), axis=2)
    rates = []
    for exact in (False, True):
        start = time.perf_counter()
        score_f_menus(f1, f2, market, exact=exact)
        rates.append(batch / (time.perf_counter() - start))
    return rates[0], rates[1]


def main() -> None:
    rows = []
    for label, market in markets():
        for rule in PARTICIPATION_RULES:
            rows.extend(solve_all(label, market.replace(participation=rule)))
    table = pd.DataFrame(rows)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(RESULTS, index=False, float_format="%.10g")
    fixed = table[table["market"].isin(["default", "paper", "k8"])]
    print(
        fixed[
            ["market", "participation", "solution", "cloud_utility", "violations", "solve_time_s"]
        ].to_string(index=False)
    )
    optimal = table[table["solution"] == "optimal"]
    print(
        f"\noptimum solve time: max {optimal['solve_time_s'].max():.3f} s, "
        f"K=5 {optimal[optimal['K'] == 5]['solve_time_s'].max():.3f} s, "
        f"K=8 {optimal[optimal['K'] == 8]['solve_time_s'].max():.3f} s"
    )
    print(f"total violations over all references: {int(table['violations'].sum())}")
    for name in ("default", "paper"):
        fast, exact = batch_throughput(named_market(name))
        print(f"score_f_menus on {name}: {fast:,.0f} menus/s closed form, {exact:,.0f} exact")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
