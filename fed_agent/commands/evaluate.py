"""``fed-agent evaluate AGENT_DIR``: held-out quality and latency of a deployed agent.

Compares the agent with its bases without modules and with a modelled cloud-only deployment,
and writes ``agent_eval.csv`` and ``agent_eval.png`` to ``--out``.

``fed-agent evaluate [AGENT_DIR] --endpoint URL --concurrency 1 4 16`` measures a served agent
(``fed-agent serve``) through real HTTP instead: p50/p95 latency, time to first token and
throughput per concurrency level, against the modelled cloud-only deployment, in
``serving.csv``. Its requests are AGENT_DIR's held-out prompts (default: the schema's).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fed_agent.errors import UserError
from fed_agent.evaluation.config import EvaluationConfig
from fed_agent.validation import number_option

DEFAULTS = EvaluationConfig()


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` command."""
    parser = subparsers.add_parser(
        "evaluate", help="quality and latency of a deployed agent vs its base and cloud-only"
    )
    parser.add_argument(
        "agent_dir",
        type=Path,
        nargs="?",
        default=None,
        help="an agent directory (manifest.json); optional with --endpoint",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="default: AGENT_DIR/evaluation, or outputs/serving with --endpoint alone",
    )
    parser.add_argument(
        "--endpoint", default=None, help="a served agent's URL (http://host:port): load test it"
    )
    parser.add_argument(
        "--concurrency",
        type=number_option(1, integer=True),
        nargs="+",
        default=[1, 4, 16],
        help="users sending requests at once, one level after the other (with --endpoint)",
    )
    parser.add_argument("--requests", type=int, default=DEFAULTS.requests)
    parser.add_argument("--max-new-tokens", type=int, default=DEFAULTS.max_new_tokens)
    parser.add_argument("--rtt-ms", type=float, default=DEFAULTS.rtt_ms)
    parser.add_argument("--uplink-mbps", type=float, default=DEFAULTS.uplink_mbps)
    parser.add_argument(
        "--eval-samples",
        type=number_option(1, integer=True),
        default=None,
        help="held-out examples (default: the run's)",
    )
    parser.set_defaults(handler=_evaluate)


def _config(args: argparse.Namespace) -> EvaluationConfig:
    try:
        return EvaluationConfig(
            requests=args.requests,
            max_new_tokens=args.max_new_tokens,
            rtt_ms=args.rtt_ms,
            uplink_mbps=args.uplink_mbps,
        )
    except ValueError as err:  # an option out of range: the user's to fix
        raise UserError(str(err)) from err


def _evaluate(args: argparse.Namespace) -> int:
    from fed_agent.evaluation.evaluate_agent import evaluate_agent_dir
    from fed_agent.outputs import check_output_path

    if args.endpoint is not None:
        return _evaluate_endpoint(args)
    if args.agent_dir is None:
        print("fed-agent evaluate: give AGENT_DIR, or --endpoint URL", file=sys.stderr)
        return 2
    cfg = _config(args)
    out = args.out or args.agent_dir / "evaluation"
    check_output_path(out, "--out")
    frame = evaluate_agent_dir(args.agent_dir, out, cfg, args.eval_samples)
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"wrote {out / 'agent_eval.csv'} and {out / 'agent_eval.png'}")
    return 0


def _evaluate_endpoint(args: argparse.Namespace) -> int:
    import dataclasses

    from fed_agent.config.schema import ExperimentConfig
    from fed_agent.data.sources import heldout_data
    from fed_agent.evaluation.evaluate_agent import agent_experiment
    from fed_agent.evaluation.report import upsert_table
    from fed_agent.evaluation.serving import TABLE, Endpoint, EndpointError, evaluate_endpoint

    try:
        cfg = _config(args)
        vision = Endpoint.probe(args.endpoint).vision
    except (ValueError, EndpointError) as err:
        print(f"fed-agent evaluate: {err}", file=sys.stderr)
        return 2
    experiment = agent_experiment(args.agent_dir) if args.agent_dir else ExperimentConfig()
    data = experiment.data
    if args.eval_samples is not None:
        data = dataclasses.replace(data, eval_samples=args.eval_samples)
    examples = heldout_data(data, experiment.seed, vision)
    rows = evaluate_endpoint(args.endpoint, examples, args.concurrency, cfg)
    out = args.out or (args.agent_dir / "evaluation" if args.agent_dir else Path("outputs/serving"))
    # rows of other served agents in the table stay (one table compares several agents)
    frame = upsert_table(rows, out / TABLE, ("model", "deployment", "concurrency"))
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"wrote {out / TABLE}")
    return 0
