"""``fed-agent summarize``: the table of a multirun sweep (means over seeds, 95 % intervals)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``summarize`` command."""
    parser = subparsers.add_parser(
        "summarize", help="table of a `fed-agent run -m` sweep: per setting, means over seeds"
    )
    parser.add_argument("sweep_dir", type=Path, help="the folder `fed-agent run -m` printed")
    parser.add_argument("--out", type=Path, help="the CSV (default <sweep_dir>/summary.csv)")
    parser.set_defaults(handler=_summarize)


def _summarize(args: argparse.Namespace) -> int:
    import pandas as pd

    from fed_agent.evaluation.sweep_summary import SUMMARY, SweepError, summarize

    try:
        table = summarize(args.sweep_dir)
    except SweepError as err:
        logging.error("%s", err)
        return 2
    out = args.out or args.sweep_dir / SUMMARY
    table.to_csv(out, index=False)
    with pd.option_context("display.width", 200, "display.max_columns", None):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"written to {out}")
    return 0
