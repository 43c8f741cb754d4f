"""Benchmark of the reference contracts: utility, audit and solve time per market.

Run from the repository root::

    .venv/bin/python benchmarks/contracts_bench.py

It solves every reference (complete information, optimal, static, uniform, random) on the
default (K = 3) and paper (K = 5) markets, a K = 8 market and 20 random markets (10 with the
neighbour transition structure, 10 with arbitrary Dirichlet transitions), under both
participation rules, and writes benchmarks/results/contracts.csv. It also prints the
throughput of the batch scorer ``score_f_menus`` that the RL designer uses.

``--part sweep`` adds the persistence sweep (docs/contract-model.md, "Where dynamics pay
off"): the persistence family of fed_agent/contracts/families.py x participation rule x delta,
K = 3 and K = 5, with the exact optimum, the exact best static pair of menus (one for each
period, the same after every report), the exact one-menu static contract and complete
information, the ratios optimum / static and optimum / best static and the rent shares
(optimum - baseline) / (complete information - baseline); rows are merged into contracts.csv (keyed by market, K, participation, solution) and
plotted in benchmarks/results/contracts_sweep.png. ``--part federation`` solves 50 federation
markets per K (the ranges of ``TRAINING_RANGES["federation"]`` in
fed_agent/designer/config.py) moved onto the recommended family member and left on today's
neighbour transition, and writes
benchmarks/results/contracts_federation.csv. ``--part references`` also solves every reference with exclusion (any item may be the exit,
no work and no pay; rows ``<solution>+exclusion``, column ``excluded_types``) on the named
markets and on ``scarce``. ``--part all`` (the default) runs all three::

    .venv/bin/python benchmarks/contracts_bench.py --part sweep
"""

from __future__ import annotations

import argparse
import itertools
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
    family_market,
    federation_ranges,
    named_market,
    neighbour_transition,
    reference_violations,
    sample_market,
    score_f_menus,
    solve_reference,
)
from fed_agent.contracts.renegotiation import renegotiation_gain
from fed_agent.evaluation.report import upsert_table

RESULTS = Path(__file__).parent / "results" / "contracts.csv"
SWEEP_PLOT = RESULTS.with_name("contracts_sweep.png")
FEDERATION_RESULTS = RESULTS.with_name("contracts_federation.csv")
SEED = 2026
NUM_RANDOM = 20
KEYS = ("market", "K", "participation", "solution")
# The persistence sweep: persistence p of fed_agent/contracts/families.py (1 persistent,
# 0 i.i.d., -1 reversal), finer where the optimum departs from the static menu.
PERSISTENCES = (1.0, 0.7, 0.4, 0.2, 0.0, -0.2, -0.3, -0.4, -0.5, -0.7, -0.8, -1.0)
DISCOUNTS = (0.5, 0.9, 0.99)
SWEEP_TYPES = (3, 5)
SWEEP_SOLUTIONS = ("complete_information", "optimal", "best_static", "static")
DEFAULT = MarketParams()
# the per-ES markets a federated run on the default market builds (what the designer's
# "federation" training markets are drawn from)
FEDERATION_RANGES = federation_ranges(DEFAULT)
NUM_FEDERATION = 50
NAMED_FOR_EXCLUSION = ("default", "paper", "persistent", "persistent_paper")
# what the cloud's commitment is worth: the renegotiation-proof optimum on the named markets
# and these K = 3 family members at delta 0.5 (the default economics)
COMMITMENT_PERSISTENCES = (0.4, 0.0, -0.4, -1.0)


def markets() -> list[tuple[str, Market]]:
    """The benchmark markets under the per-period rule (the rule is varied later)."""
    rng = np.random.default_rng(SEED)
    chosen = [
        ("default", named_market("default")),
        ("paper", named_market("paper")),
        ("persistent", named_market("persistent")),
        ("persistent_paper", named_market("persistent_paper")),
        ("k8", Market.from_params(MarketParams(num_types=8))),
    ]
    for index in range(NUM_RANDOM):
        structure = "neighbour" if index < NUM_RANDOM // 2 else "dirichlet"
        num_types = int(rng.integers(2, 7))
        market = sample_market(rng, MarketRanges(transition=structure), num_types)
        chosen.append((f"random{index:02d}_{structure}", market))
    return chosen


def solve_all(
    label: str,
    market: Market,
    solutions: tuple[str, ...] = tuple(n for n in REFERENCE_SOLVERS if n != "renegotiation_proof"),
    exclusion: bool = False,
    contracts: dict | None = None,
) -> list[dict]:
    """One row per reference contract of ``market`` (all of ``REFERENCE_SOLVERS`` but
    ``renegotiation_proof`` by default; ``complete_information``, ``optimal``,
    ``best_static`` and ``static`` are always solved, for the ratios); ``contracts``, if
    given, receives each solution's contract by name."""
    rows = []
    names = [n for n in REFERENCE_SOLVERS if n in {*solutions, *SWEEP_SOLUTIONS}]
    if exclusion:
        names = [n for n in names if n != "random"]
    for name in names:
        solution = solve_reference(name, market, np.random.default_rng(SEED), exclusion)
        found = reference_violations(name, solution.contract, market)
        if contracts is not None:
            contracts[name] = solution.contract
        rows.append(
            {
                "market": label,
                "K": market.num_types,
                "participation": market.participation,
                "solution": f"{name}+exclusion" if exclusion else name,
                "excluded_types": solution.excluded_types,
                "cloud_utility": solution.cloud_utility,
                "violations": len(found),
                "solve_time_s": solution.solve_time_s,
                "optimality_gap": solution.optimality_gap,
                "transition_monotone": market.transition_is_monotone,
            }
        )
    utility = {row["solution"].removesuffix("+exclusion"): row["cloud_utility"] for row in rows}
    static, complete = utility["static"], utility["complete_information"]
    best_static = utility["best_static"]
    for row in rows:
        row["utility_ratio_to_optimum"] = row["cloud_utility"] / utility["optimal"]
        # a ratio to a loss-making (or zero) static menu would read backwards: left undefined
        row["ratio_to_static"] = row["cloud_utility"] / static if static > 0 else float("nan")
        # share of the information rent (complete information - static) that this contract
        # recovers over the static menu; 0 when the static menu already reaches complete info
        rent = complete - static
        row["rent_share"] = (row["cloud_utility"] - static) / rent if rent > 1e-9 else 0.0
        # the same against the best report-independent pair of menus: what conditioning on
        # the period-1 report is worth
        row["ratio_to_best_static"] = (
            row["cloud_utility"] / best_static if best_static > 0 else float("nan")
        )
        rent = complete - best_static
        row["rent_share_best_static"] = (
            (row["cloud_utility"] - best_static) / rent if rent > 1e-9 else 0.0
        )
    return rows


def sweep_rows(exclusion: bool = False) -> list[dict]:
    """The persistence sweep: family member x participation rule x delta x K (with
    ``exclusion``: the ``+exclusion`` solutions)."""
    rows = []
    for k in SWEEP_TYPES:
        for rule in PARTICIPATION_RULES:
            for delta in DISCOUNTS:
                for persistence in PERSISTENCES:
                    market = family_market(persistence, k, rule, discount=delta)
                    label = f"family_p{persistence:+.1f}_d{delta:g}"
                    for row in solve_all(label, market, SWEEP_SOLUTIONS, exclusion):
                        rows.append({**row, "persistence": persistence, "delta": delta})
    return rows


def print_sweep(table: pd.DataFrame, optimum: str = "optimal") -> None:
    """The optimum's ratio to the static menu and rent share, one line per family member."""
    optimal = table[table["solution"] == optimum]
    pivot = optimal.pivot_table(
        index=["K", "participation", "delta"],
        columns="persistence",
        values=["ratio_to_static", "rent_share", "ratio_to_best_static", "rent_share_best_static"],
    )
    with pd.option_context("display.width", 200, "display.precision", 4):
        for metric in pivot.columns.levels[0]:
            print(f"\n{metric}")
            print(pivot[metric].sort_index(axis=1, ascending=False).to_string())
    for ratio, share, against in (
        ("ratio_to_static", "rent_share", "the one-menu static contract"),
        ("ratio_to_best_static", "rent_share_best_static", "the best static pair of menus"),
    ):
        hits = optimal[(optimal[ratio] >= 1.05) & (optimal[share] >= 0.3)]
        print(f"\nmembers with optimum >= 1.05 x {against} and rent share >= 0.3:")
        print(
            hits[["K", "participation", "delta", "persistence", ratio, share]]
            .sort_values(["K", "participation", "delta", "persistence"])
            .to_string(index=False)
        )
    print(
        f"solve time per market (optimum): max {optimal['solve_time_s'].max():.3f} s "
        f"(K=3 {optimal[optimal['K'] == 3]['solve_time_s'].max():.3f} s, "
        f"K=5 {optimal[optimal['K'] == 5]['solve_time_s'].max():.3f} s); "
        f"violations {int(table['violations'].sum())}"
    )


def plot_sweep(table: pd.DataFrame, path: Path) -> None:
    """Ratio optimum / static and rent share vs persistence; a panel per K, a line per rule x
    delta, dashed lines at the targets (1.05 and 0.3)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in CI
    import matplotlib.pyplot as plt

    optimal = table[table["solution"] == "optimal"]
    fig, axes = plt.subplots(3, len(SWEEP_TYPES), figsize=(11, 10), sharex=True, sharey="row")
    styles = {"per_period": "-", "ex_ante": "--"}
    colours = dict(zip(DISCOUNTS, ("tab:blue", "tab:orange", "tab:green"), strict=True))
    for column, k in enumerate(SWEEP_TYPES):
        for row, (metric, target, ylabel) in enumerate(
            (
                ("ratio_to_static", 1.05, "optimum / one-menu static"),
                ("ratio_to_best_static", 1.05, "optimum / best static pair"),
                ("rent_share_best_static", 0.3, "rent share vs best static pair"),
            )
        ):
            axis = axes[row, column]
            for rule in PARTICIPATION_RULES:
                for delta in DISCOUNTS:
                    line = optimal[
                        (optimal["K"] == k)
                        & (optimal["participation"] == rule)
                        & (optimal["delta"] == delta)
                    ].sort_values("persistence")
                    axis.plot(
                        line["persistence"],
                        line[metric],
                        styles[rule],
                        color=colours[delta],
                        marker="o",
                        markersize=3,
                        label=f"{rule}, delta {delta:g}",
                    )
            axis.axhline(target, color="grey", linestyle=":", linewidth=1)
            axis.grid(alpha=0.3)
            if row == 0:
                axis.set_title(f"K = {k}")
            if row == 2:
                axis.set_xlabel("persistence p (1 persistent, 0 i.i.d., -1 reversal)")
            if column == 0:
                axis.set_ylabel(ylabel)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("Exact dynamic optimum vs exact static menus across the persistence family")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def federation_rows() -> list[dict]:
    """The per-ES markets of a run on the default market and, for contrast, the same markets
    on the earlier neighbour transition (stay 0.7) under both rules."""
    rows = []
    for k in SWEEP_TYPES:
        rng = np.random.default_rng(SEED + k)
        for index in range(NUM_FEDERATION):
            base = sample_market(rng, FEDERATION_RANGES, k)
            # the run's own markets (the default market's transition, the belief as prior),
            # and for contrast the same markets on the earlier neighbour transition
            neighbour = base.replace(transition=neighbour_transition(k, 0.7))
            variants = {
                f"reversal{DEFAULT.persistence:+.1f}": base,
                "neighbour0.7": neighbour.replace(participation="per_period"),
                "neighbour0.7_ex_ante": neighbour.replace(participation="ex_ante"),
            }
            for transition, market in variants.items():
                for row in solve_all(f"federation{index:02d}", market, SWEEP_SOLUTIONS):
                    rows.append({**row, "transition": transition})
    return rows


def print_federation(table: pd.DataFrame) -> None:
    """Per K and transition: the optimum's ratio to the static menu over the markets (median,
    min, share >= 1.05), the ratio of the totals (what a run of one ES per market earns) and
    the rent share."""
    pivot = table.pivot_table(
        index=["K", "transition", "participation", "market"],
        columns="solution",
        values="cloud_utility",
    )
    pivot["ratio"] = pivot["optimal"] / pivot["static"].where(pivot["static"] > 0)
    pivot["share"] = (pivot["optimal"] - pivot["static"]) / (
        pivot["complete_information"] - pivot["static"]
    )
    groups = pivot.groupby(level=["K", "transition", "participation"])
    summary = groups.agg(
        markets=("ratio", "size"),
        static_le_0=("static", lambda v: int((v <= 0).sum())),
        ratio_median=("ratio", "median"),
        ratio_min=("ratio", "min"),
        ratio_max=("ratio", "max"),
        frac_ge_1_05=("ratio", lambda r: float((r >= 1.05).mean())),
        share_mean=("share", "mean"),
        share_min=("share", "min"),
    )
    summary["total_ratio"] = groups["optimal"].sum() / groups["static"].sum()
    summary["total_share"] = (groups["optimal"].sum() - groups["static"].sum()) / (
        groups["complete_information"].sum() - groups["static"].sum()
    )
    times = table[table["solution"] == "optimal"].groupby("K")["solve_time_s"]
    with pd.option_context("display.width", 220, "display.precision", 4):
        print(summary.to_string())
        print(f"optimum solve time per market: max {times.max().to_dict()}")


def round_rows(rows: list[dict]) -> list[dict]:
    """Ten significant digits, as the committed tables (stable diffs between re-runs)."""
    return [
        {k: float(f"{v:.10g}") if isinstance(v, float) else v for k, v in row.items()}
        for row in rows
    ]


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


def exclusion_markets() -> list[tuple[str, Market]]:
    """The named markets and ``scarce`` (the default economics with a least willing type of
    0.08 and omega 16, where serving that type costs more than its work is worth)."""
    named = [(name, named_market(name)) for name in NAMED_FOR_EXCLUSION]
    scarce = named_market("default").replace(types=np.linspace(0.08, 2.0, 3), omega=16.0)
    return [*named, ("scarce", scarce)]


def references() -> None:
    """The reference contracts on the default, paper, K = 8 and random markets, and with
    exclusion (``<solution>+exclusion`` rows) on the named markets and ``scarce``."""
    rows = []
    for label, market in markets():
        for rule in PARTICIPATION_RULES:
            rows.extend(solve_all(label, market.replace(participation=rule)))
    for label, market in exclusion_markets():
        for rule in PARTICIPATION_RULES:
            rule_market = market.replace(participation=rule)
            if label == "scarce":
                rows.extend(solve_all(label, rule_market))
            rows.extend(solve_all(label, rule_market, exclusion=True))
    upsert_table(round_rows(rows), RESULTS, KEYS)
    table = pd.DataFrame(rows)
    fixed = table[table["market"].isin(["default", "paper", "persistent", "k8", "scarce"])]
    columns = ["market", "participation", "solution", "cloud_utility", "ratio_to_best_static"]
    columns += ["excluded_types", "violations", "solve_time_s"]
    with pd.option_context("display.width", 200):
        print(fixed[columns].to_string(index=False))
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


def commitment_rows() -> list[dict]:
    """The renegotiation-proof optimum (rows ``renegotiation_proof``, with exclusion on
    ``default`` and ``paper`` too), its ratios to the full-commitment optimum and the best
    static pair, and its renegotiation gain (0 up to the solver's tolerance)."""
    points = [(name, named_market(name), -0.8, 0.5, True) for name in ("default", "paper")]
    for p in COMMITMENT_PERSISTENCES:
        market = family_market(p, 3, "ex_ante", discount=0.5)
        points.append((f"family_p{p:+.1f}_d0.5", market, p, 0.5, False))
    rows = []
    for label, market, persistence, delta, excluding in points:
        for rule, exclusion in itertools.product(PARTICIPATION_RULES, (False, True)):
            if exclusion and not excluding:
                continue
            rule_market = market.replace(participation=rule)
            contracts: dict = {}
            solved = solve_all(label, rule_market, ("renegotiation_proof",), exclusion, contracts)
            gains = {
                name: renegotiation_gain(contracts[name], rule_market, exclusion).gain
                for name in ("renegotiation_proof", "optimal")
            }
            for row in solved:
                if row["solution"].startswith("renegotiation_proof"):
                    row["renegotiation_gain"] = gains["renegotiation_proof"]
                    row["optimum_renegotiation_gain"] = gains["optimal"]
                    rows.append({**row, "persistence": persistence, "delta": delta})
    return rows


def commitment() -> None:
    """What full commitment is worth to the cloud, merged into contracts.csv."""
    start = time.perf_counter()
    rows = commitment_rows()
    upsert_table(round_rows(rows), RESULTS, KEYS)
    table = pd.DataFrame(rows)
    columns = ["market", "K", "participation", "solution", "cloud_utility"]
    columns += ["utility_ratio_to_optimum", "ratio_to_best_static", "renegotiation_gain"]
    columns += ["optimum_renegotiation_gain", "excluded_types", "violations", "solve_time_s"]
    with pd.option_context("display.width", 220, "display.precision", 5):
        print(table[columns].to_string(index=False))
    print(f"commitment: {len(rows)} solutions in {time.perf_counter() - start:.1f} s")


def sweep_exclusion() -> None:
    """The persistence sweep with exclusion, merged into contracts.csv (no plot)."""
    start = time.perf_counter()
    rows = sweep_rows(exclusion=True)
    upsert_table(round_rows(rows), RESULTS, KEYS)
    print_sweep(pd.DataFrame(rows), "optimal+exclusion")
    print(
        f"sweep with exclusion: {len(rows) // len(SWEEP_SOLUTIONS)} markets in "
        f"{time.perf_counter() - start:.1f} s"
    )


def sweep() -> None:
    """The persistence sweep, merged into contracts.csv, and its plot."""
    start = time.perf_counter()
    rows = sweep_rows()
    upsert_table(round_rows(rows), RESULTS, KEYS)
    table = pd.DataFrame(rows)
    print_sweep(table)
    plot_sweep(table, SWEEP_PLOT)
    print(
        f"sweep: {len(rows) // len(SWEEP_SOLUTIONS)} markets in {time.perf_counter() - start:.1f} s"
    )
    print(f"wrote {SWEEP_PLOT}")


def federation() -> None:
    """The federation markets on the recommended family member."""
    start = time.perf_counter()
    rows = round_rows(federation_rows())
    upsert_table(rows, FEDERATION_RESULTS, ("transition", *KEYS))
    print_federation(pd.DataFrame(rows))
    print(
        f"federation: {len(rows) // len(SWEEP_SOLUTIONS)} markets in {time.perf_counter() - start:.1f} s"
    )
    print(f"wrote {FEDERATION_RESULTS}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--part",
        choices=("all", "references", "sweep", "sweep_exclusion", "federation", "commitment"),
        default="all",
    )
    part = parser.parse_args().part
    if part in ("all", "references"):
        references()
    if part in ("all", "sweep"):
        sweep()
    if part in ("all", "sweep_exclusion"):
        sweep_exclusion()
    if part in ("all", "federation"):
        federation()
    if part in ("all", "commitment"):
        commitment()
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
