"""How many exact optima the designer's action-to-menu mapping can express.

For random markets (K = 3 and 5, both participation rules, the neighbour and the persistence
transition families and arbitrary Dirichlet transitions), the exact optimum's menu of f is
mapped to an action and back (``menus_to_actions`` then ``actions_to_menus``). A menu is
expressed when the round trip returns it within 1e-6 of the range of f. Also counted: optima
with some used item's f above the complete-information level (which the earlier mapping
capped at) and optima whose period-1 f falls with the type.

Run (about a minute)::

    .venv/bin/python benchmarks/mapping_bench.py

Writes ``benchmarks/results/mapping_expressiveness.csv``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from fed_agent.contracts import MarketBatch, MarketRanges, optimal_contract, sample_market
from fed_agent.designer import actions_to_menus, menus_to_actions
from fed_agent.evaluation.report import upsert_table

RESULTS = Path(__file__).resolve().parent / "results" / "mapping_expressiveness.csv"
TOLERANCE = 1e-6


def measure(num_types: int, participation: str, transition: str, count: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    ranges = MarketRanges(transition=transition, participation=participation)
    markets = [sample_market(rng, ranges, num_types) for _ in range(count)]
    optima = [optimal_contract(m).contract for m in markets]
    batch = MarketBatch.from_markets(markets)
    f1 = np.stack([c.f1 for c in optima])
    f2 = np.stack([c.f2 for c in optima])
    back1, back2 = actions_to_menus(menus_to_actions(f1, f2, batch), batch)
    scale = (batch.f_hi - batch.f_lo)[:, None]
    error = np.maximum(
        np.max(np.abs(back1 - f1) / scale, axis=1),
        np.max(np.abs(back2 - f2) / scale[:, None], axis=(1, 2)),
    )
    efficient = batch.efficient_resource()
    # only items some type takes with positive probability (an unused item's f is arbitrary)
    used = batch.transition > 0
    above = np.any((f2 > efficient[:, None, :] + 1e-6) & used, axis=(1, 2)) | np.any(
        f1 > efficient + 1e-6, axis=1
    )
    return {
        "K": num_types,
        "participation": participation,
        "transition": transition,
        "markets": count,
        "expressed_share": float(np.mean(error <= TOLERANCE)),
        "max_error": float(error.max()),
        "above_efficient_share": float(np.mean(above)),
        "period1_falling_share": float(np.mean(np.any(np.diff(f1, axis=1) < -1e-6, axis=1))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    rows = []
    for k in (3, 5):
        for participation in ("per_period", "ex_ante"):
            for index, transition in enumerate(("neighbour", "persistence", "dirichlet")):
                rows.append(measure(k, participation, transition, args.count, 100 * k + index))
                print(rows[-1], flush=True)
    upsert_table(rows, args.out, ("K", "participation", "transition"))


if __name__ == "__main__":
    main()
