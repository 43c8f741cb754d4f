"""``fed-agent designer train|eval``: train a contract designer and measure it.

Examples
--------
Reproduce the shipped checkpoints (each a few minutes on one quiet core; docs/designer.md,
"The shipped checkpoints", says which seed of benchmarks/designer_bench.py each one is)::

    fed-agent designer train --out fed_agent/assets/edmsac_default_k3.npz --market default
    fed-agent designer train --out fed_agent/assets/edmsac_federation_k3.npz --market federation \
        --demonstrations 1024 --env-steps 4096
    fed-agent designer train --out fed_agent/assets/edmsac_federation_k5.npz \
        --market federation --num-types 5 --demonstrations 1024 --imitation-steps 8000 \
        --env-steps 64
    fed-agent designer train --out fed_agent/assets/dmsac_federation_k3.npz --algorithm dmsac \
        --demonstrations 1024 --env-steps 4096 \
        --market federation
    fed-agent designer train --out fed_agent/assets/ppo_federation_k3.npz --algorithm ppo \
        --market federation

Evaluate one on the named markets and on held-out markets from its training ranges::

    fed-agent designer eval --checkpoint fed_agent/assets/edmsac_federation_k3.npz
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from fed_agent.contracts import named_market
from fed_agent.designer import (
    DESIGNERS,
    ContractDesigner,
    DesignerConfig,
    EvaluationSet,
    heldout_markets,
    train_designer,
    training_markets,
)
from fed_agent.designer.demonstrations import (
    Demonstrations,
    demonstration_markets,
    solve_demonstrations,
)
from fed_agent.errors import UserError
from fed_agent.seeding import seed_everything
from fed_agent.validation import number_option

DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "assets" / "edmsac_federation_k3.npz"
# one intra-op thread: these networks are small, and on a shared 2-core machine a second
# thread spent more time synchronising than computing (measured 50x slower under load)
DEFAULT_THREADS = 1


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``designer`` command with its ``train`` and ``eval`` sub-commands."""
    parser = subparsers.add_parser("designer", help="train or evaluate a contract designer")
    actions = parser.add_subparsers(dest="designer_command", required=True, metavar="ACTION")
    train = actions.add_parser("train", help="train a designer and save a .npz checkpoint")
    train.add_argument("--out", type=Path, required=True, help="checkpoint path (.npz)")
    train.add_argument("--algorithm", choices=DESIGNERS, default=DesignerConfig.algorithm)
    train.add_argument("--market", choices=training_markets(), default=DesignerConfig.market)
    train.add_argument("--num-types", type=int, default=DesignerConfig.num_types)
    train.add_argument("--env-steps", type=int, default=DesignerConfig.env_steps)
    train.add_argument("--seed", type=int, default=DesignerConfig.seed)
    train.add_argument("--prune-rate", type=float, default=None, help="EDMSAC's rho")
    train.add_argument(
        "--violation-penalty",
        type=float,
        default=DesignerConfig.violation_penalty,
        help="reward per violated constraint of a menu no rewards implement",
    )
    train.add_argument(
        "--demonstrations",
        type=int,
        default=DesignerConfig.demonstrations,
        help="training markets solved exactly and imitated before and while learning "
        "(0: reinforcement learning alone)",
    )
    train.add_argument(
        "--imitation-steps",
        type=int,
        default=DesignerConfig.imitation_steps,
        help="behaviour-cloning steps on the demonstrations before the first episode",
    )
    train.add_argument("--log", type=Path, default=None, help="metrics log (.jsonl)")
    train.add_argument("--threads", type=number_option(1, integer=True), default=DEFAULT_THREADS)
    train.set_defaults(handler=run_train)
    evaluate = actions.add_parser("eval", help="utility ratio of a checkpoint vs the optimum")
    evaluate.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    evaluate.add_argument(
        "--heldout", type=number_option(0, integer=True), default=16, help="held-out random markets"
    )
    evaluate.add_argument("--out", type=Path, default=None, help="results table (.csv)")
    evaluate.add_argument("--threads", type=number_option(1, integer=True), default=DEFAULT_THREADS)
    evaluate.set_defaults(handler=run_eval)


def _config_from_args(args: argparse.Namespace) -> DesignerConfig:
    """The training config the options describe; a value it refuses is the user's to fix."""
    try:
        config = DesignerConfig(
            algorithm=args.algorithm,
            market=args.market,
            num_types=args.num_types,
            env_steps=args.env_steps,
            seed=args.seed,
            violation_penalty=args.violation_penalty,
            demonstrations=args.demonstrations,
            imitation_steps=args.imitation_steps,
        )
        if args.prune_rate is not None:
            config.edmsac.prune_rate = args.prune_rate
            config.edmsac.__post_init__()
    except ValueError as err:
        raise UserError(f"bad option: {err}") from err
    return config


def run_train(args: argparse.Namespace) -> int:
    """Train with a progress bar, log metrics as JSON lines, save the checkpoint."""
    from fed_agent.outputs import check_output_path  # pandas: only when it runs

    config = _config_from_args(args)
    log_path = args.log or args.out.with_suffix(".metrics.jsonl")
    # before training: a checkpoint or log that cannot be written fails now, not minutes later
    check_output_path(args.out, "--out", is_file=True)
    check_output_path(log_path, "--log", is_file=True)
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    designer = ContractDesigner(config)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log, tqdm(total=config.env_steps, unit="step") as bar:

        def on_progress(steps: int, metrics: dict[str, float]) -> None:
            bar.update(steps)
            log.write(json.dumps({"env_steps": bar.n, **metrics}) + "\n")
            if "eval/utility_ratio" in metrics:
                bar.set_postfix(ratio=f"{metrics['eval/utility_ratio']:.4f}")

        history = train_designer(
            designer, on_progress=on_progress, demonstrations=_demonstrations(designer)
        )
    path = designer.save(args.out)
    final = history[-1]
    print(f"saved {path} ({path.stat().st_size / 1e6:.2f} MB); final evaluation: {final}")
    return 0


def _demonstrations(designer: ContractDesigner) -> Demonstrations | None:
    """The exactly solved markets to imitate (``--demonstrations``), with a progress bar."""
    config = designer.config
    if not config.demonstrations:
        return None
    markets = demonstration_markets(
        config.market, config.num_types, config.demonstrations, config.seed, designer.ranges
    )
    solving = tqdm(markets, desc="solving demonstrations exactly", unit="market")
    return solve_demonstrations(solving, config.reward_scale_frac, config.violation_penalty)


def evaluation_rows(designer: ContractDesigner, heldout: int) -> list[dict[str, Any]]:
    """One row per evaluation market set: default, paper (if K fits) and held-out random."""
    sets: dict[str, EvaluationSet] = {}
    for name in ("default", "paper"):
        market = named_market(name)
        if market.num_types == designer.num_types:
            sets[name] = EvaluationSet.solve([market])
    if heldout > 0:
        markets = heldout_markets(designer.ranges, designer.num_types, heldout, seed=12345)
        sets["heldout"] = EvaluationSet.solve(markets)
    rows = []
    for name, evaluation in sets.items():
        metrics = designer.evaluate(evaluation)
        rows.append({"market": name, "designer": designer.name, **metrics})
    return rows


def run_eval(args: argparse.Namespace) -> int:
    """Print (and optionally write) the utility ratio of a checkpoint per market set."""
    if args.out is not None:  # before evaluating: a table that cannot be written fails at once
        from fed_agent.outputs import check_output_path  # pandas: only with --out

        check_output_path(args.out, "--out", is_file=True)
    torch.set_num_threads(args.threads)
    designer = ContractDesigner.load(args.checkpoint)
    rows = evaluation_rows(designer, args.heldout)
    markets = heldout_markets(designer.ranges, designer.num_types, 8, seed=7)
    batch = [markets[i % len(markets)] for i in range(1000)]
    infer_ms = designer.inference_ms(batch)
    for row in rows:
        row["infer_ms_1000"] = infer_ms
        print(", ".join(f"{k}={_fmt(v)}" for k, v in row.items()))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float | np.floating) else str(value)
