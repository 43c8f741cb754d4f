"""``fed-agent run``: a federated run as a Flower simulation, with its final status checked."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from fed_agent.config import experiment_names
from fed_agent.validation import number_option


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``run`` command."""
    parser = subparsers.add_parser("run", help="run the federation as a Flower simulation")
    parser.add_argument("--experiment", default="default", choices=experiment_names())
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. federation.num_es=20")
    parser.add_argument(
        "--timeout-s", type=number_option(0, ends="()"), default=3600.0, help="per run (per job)"
    )
    parser.add_argument(
        "-m",
        "--multirun",
        action="store_true",
        help="Hydra sweep: one run per combination of the listed values (seed=0,1,2 ...)",
    )
    parser.add_argument(
        "--sweep-dir",
        type=Path,
        help="-m: the sweep's folder (default <output_dir>/multirun/<run_name>-<time stamp>)",
    )
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from fed_agent.config import ConfigError
    from fed_agent.deploy.launcher import FederationRunError, launch_simulation

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.multirun:
        return _multirun(args)
    if args.sweep_dir is not None:
        logging.error("--sweep-dir goes with -m/--multirun")
        return 2
    try:
        outcome = launch_simulation(args.experiment, args.overrides, args.timeout_s)
    except ConfigError as err:  # refused before any SuperLink or run folder exists
        logging.error("bad config: %s", err)
        return 2
    except FederationRunError as err:
        logging.error("%s", err)
        return 1
    print(
        f"run {outcome.run_id} {outcome.status} in {outcome.wall_s:.1f} s; outputs in "
        f"{outcome.output_dir}"
    )
    return 0


def _multirun(args: argparse.Namespace) -> int:
    from fed_agent.config import ConfigError
    from fed_agent.deploy.multirun import launch_multirun
    from fed_agent.evaluation.sweep_summary import COMPLETED, MANIFEST

    try:
        sweep_dir, jobs = launch_multirun(
            args.experiment, args.overrides, args.timeout_s, args.sweep_dir
        )
    except ConfigError as err:  # refused before the first job
        logging.error("bad config: %s", err)
        return 2
    failed = [j.job for j in jobs if j.status != COMPLETED]
    print(
        f"{len(jobs) - len(failed)} of {len(jobs)} jobs completed; outputs in {sweep_dir} "
        f"(`fed-agent summarize {sweep_dir}`)"
    )
    if failed:
        logging.error("jobs %s did not complete (see %s)", failed, sweep_dir / MANIFEST)
    return 1 if failed else 0
