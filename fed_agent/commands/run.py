"""``fed-agent run``: a federated run as a Flower simulation, with its final status checked."""

from __future__ import annotations

import argparse
import logging

from fed_agent.config import experiment_names


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``run`` command."""
    parser = subparsers.add_parser("run", help="run the federation as a Flower simulation")
    parser.add_argument("--experiment", default="default", choices=experiment_names())
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. federation.num_es=20")
    parser.add_argument("--timeout-s", type=float, default=3600.0)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from fed_agent.config import ConfigError
    from fed_agent.deploy.launcher import FederationRunError, launch_simulation

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
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
