"""``fed-agent evaluate AGENT_DIR``: held-out quality and latency of a deployed agent.

Compares the agent with its bases without modules and with a modelled cloud-only deployment,
and writes ``agent_eval.csv`` and ``agent_eval.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fed_agent.evaluation.config import EvaluationConfig

DEFAULTS = EvaluationConfig()


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` command."""
    parser = subparsers.add_parser(
        "evaluate", help="quality and latency of a deployed agent vs its base and cloud-only"
    )
    parser.add_argument("agent_dir", type=Path, help="an agent directory (manifest.json)")
    parser.add_argument("--out", type=Path, default=None, help="default: AGENT_DIR/evaluation")
    parser.add_argument("--requests", type=int, default=DEFAULTS.requests)
    parser.add_argument("--max-new-tokens", type=int, default=DEFAULTS.max_new_tokens)
    parser.add_argument("--rtt-ms", type=float, default=DEFAULTS.rtt_ms)
    parser.add_argument("--uplink-mbps", type=float, default=DEFAULTS.uplink_mbps)
    parser.add_argument(
        "--eval-samples", type=int, default=None, help="held-out examples (default: the run's)"
    )
    parser.set_defaults(handler=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    from fed_agent.evaluation.evaluate_agent import evaluate_agent_dir

    cfg = EvaluationConfig(
        requests=args.requests,
        max_new_tokens=args.max_new_tokens,
        rtt_ms=args.rtt_ms,
        uplink_mbps=args.uplink_mbps,
    )
    out = args.out or args.agent_dir / "evaluation"
    frame = evaluate_agent_dir(args.agent_dir, out, cfg, args.eval_samples)
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"wrote {out / 'agent_eval.csv'} and {out / 'agent_eval.png'}")
    return 0
