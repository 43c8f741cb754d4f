"""``fed-agent contract solve``: print (and tabulate) the reference contracts of a market."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from fed_agent.contracts import (
    COMMITMENTS,
    PARTICIPATION_RULES,
    REFERENCE_SOLVERS,
    Market,
    MarketParams,
    MarketRanges,
    Solution,
    es_rents,
    named_market,
    reference_violations,
    sample_market,
    solve_reference,
)
from fed_agent.contracts.market import MAX_TYPES
from fed_agent.contracts.renegotiation import renegotiation_gain
from fed_agent.contracts.solvers.renegotiation_proof import NoRenegotiationProofContract
from fed_agent.validation import number_option

MARKET_CHOICES = ("default", "paper", "random")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``contract`` and its sub-command ``solve`` to the top-level parser."""
    parser = subparsers.add_parser("contract", help="two-period contract model and references")
    commands = parser.add_subparsers(dest="contract_command", required=True, metavar="COMMAND")
    solve = commands.add_parser("solve", help="solve and print every reference contract")
    solve.add_argument("--market", choices=MARKET_CHOICES, default="default")
    solve.add_argument(
        "--seed",
        type=number_option(0, integer=True),
        default=0,
        help="seed of a random market and menu",
    )
    solve.add_argument(
        "--num-types", type=int, default=None, help=f"K in [2, {MAX_TYPES}] (default: the market's)"
    )
    solve.add_argument("--participation", choices=PARTICIPATION_RULES, default=None)
    solve.add_argument(
        "--solution",
        action="append",
        choices=sorted(REFERENCE_SOLVERS),
        help="solve only these references (repeatable; default: all)",
    )
    solve.add_argument(
        "--exclusion",
        action="store_true",
        help="let any type be excluded (an exit item: no work, no pay)",
    )
    solve.add_argument(
        "--commitment",
        choices=COMMITMENTS,
        default="full",
        help="renegotiation_proof: also solve the renegotiation-proof contract and report "
        "each solution's renegotiation gain (what re-offering period 2 would earn the cloud)",
    )
    solve.add_argument("--out", type=Path, default=None, help="write the table as CSV")
    solve.set_defaults(handler=run_solve)


def build_market(name: str, seed: int, num_types: int | None, participation: str | None) -> Market:
    """The market the options describe (a named market, resized, or a random one)."""
    if name == "random":
        rng = np.random.default_rng(seed)
        market = sample_market(rng, MarketRanges(), num_types or MarketParams().num_types)
    elif num_types is None:
        market = named_market(name)
    else:
        base = MarketParams() if name == "default" else MarketParams(num_types=5)
        base.num_types = num_types
        market = Market.from_params(base)
    return market if participation is None else market.replace(participation=participation)


def _format_solution(solution: Solution, market: Market) -> str:
    contract = solution.contract
    lines = [
        f"== {solution.name}: cloud utility {solution.cloud_utility:.6f}, "
        f"solve time {solution.solve_time_s * 1e3:.1f} ms"
        + (
            ""
            if solution.optimality_gap is None
            else f", certified gap {solution.optimality_gap:.1e}"
        )
        + (f", excluded {solution.excluded_types}" if solution.excluded_types else ""),
        "   period 1   "
        + "  ".join(
            f"type {i}: f={f:.4f} R={r:8.4f}"
            for i, (f, r) in enumerate(zip(contract.f1, contract.r1, strict=True))
        ),
    ]
    for i in range(market.num_types):
        items = "  ".join(
            f"f={f:.4f} R={r:8.4f}" for f, r in zip(contract.f2[i], contract.r2[i], strict=True)
        )
        lines.append(f"   period 2 | report {i}: {items}")
    rents = es_rents(contract, market)
    lines.append("   ES rents   " + "  ".join(f"{v:.4f}" for v in rents))
    return "\n".join(lines)


def solve_table(
    market: Market, names: list[str], seed: int, exclusion: bool = False, gains: bool = False
) -> tuple[list[dict], list[str]]:
    """Solve each reference (with ``exclusion``: exit items allowed, ``random`` excepted);
    return table rows and the printable blocks; ``gains``: each row's renegotiation gain."""
    rows, blocks = [], []
    for name in names:
        if exclusion and name == "random":
            continue
        try:
            solution = solve_reference(name, market, np.random.default_rng(seed), exclusion)
        except NoRenegotiationProofContract as err:
            blocks.append(f"== {name}: {err}")
            continue
        violations = reference_violations(name, solution.contract, market)
        rows.append(
            {
                "solution": name,
                "cloud_utility": solution.cloud_utility,
                "violations": len(violations),
                "solve_time_s": solution.solve_time_s,
                "excluded_types": solution.excluded_types,
                "es_rents": " ".join(f"{v:.6g}" for v in es_rents(solution.contract, market)),
                "f1": " ".join(f"{v:.6g}" for v in solution.contract.f1),
                "r1": " ".join(f"{v:.6g}" for v in solution.contract.r1),
                "f2": " ".join(f"{v:.6g}" for v in solution.contract.f2.ravel()),
                "r2": " ".join(f"{v:.6g}" for v in solution.contract.r2.ravel()),
            }
        )
        blocks.append(_format_solution(solution, market))
        if gains:
            gain = renegotiation_gain(solution.contract, market, exclusion).gain
            rows[-1]["renegotiation_gain"] = gain
            blocks[-1] += f"\n   renegotiation gain {gain:+.4%}"
    return rows, blocks


def run_solve(args: argparse.Namespace) -> int:
    """Handler of ``fed-agent contract solve``."""
    if args.num_types is not None and not 2 <= args.num_types <= MAX_TYPES:
        print(
            f"bad option: --num-types must be an integer in [2, {MAX_TYPES}] (the solver's "
            f"range), got {args.num_types}",
            file=sys.stderr,
        )
        return 2
    if args.out is not None:  # before solving: a table that cannot be written fails at once
        from fed_agent.outputs import check_output_path  # pandas: only with --out

        check_output_path(args.out, "--out", is_file=True)
    market = build_market(args.market, args.seed, args.num_types, args.participation)
    names = args.solution or list(REFERENCE_SOLVERS)
    renegotiating = args.commitment == "renegotiation_proof"
    if renegotiating and "renegotiation_proof" not in names:
        names = [*names, "renegotiation_proof"]
    print(
        f"market {args.market}: K={market.num_types}, participation={market.participation}, "
        f"types={np.round(market.types, 4).tolist()}, discount={market.discount:.3g}, "
        f"S/r={market.upload_s:.4g} s, f in [{market.f_lower_ghz:.4g}, {market.f_max_ghz:.4g}] GHz"
    )
    rows, blocks = solve_table(market, names, args.seed, args.exclusion, renegotiating)
    print("\n".join(blocks))
    if args.out is not None:
        import pandas as pd  # only the table writer needs pandas

        table = pd.DataFrame(rows)
        table.insert(0, "market", args.market)
        table.insert(1, "K", market.num_types)
        table.insert(2, "participation", market.participation)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out, index=False)
        print(f"wrote {args.out}")
    return 0
