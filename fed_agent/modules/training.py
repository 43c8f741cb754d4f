"""Local training of an agent module with a step budget."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from fed_agent.choices import check_choice
from fed_agent.config.schema import LR_SCHEDULES, TrainingConfig
from fed_agent.data.tasks import Example
from fed_agent.modules.adapter import AgentModule
from fed_agent.modules.batching import encode_for, usable_examples


@dataclass(frozen=True)
class TrainingReport:
    """What one local training call did."""

    steps: int
    examples_seen: int
    mean_loss: float
    """Mean loss over the steps (NaN when no step was taken)."""
    wall_s: float


@torch.enable_grad()  # a caller may hold torch.no_grad() (e.g. a first use in inference)
def train_locally(
    module: AgentModule,
    examples: list[Example],
    cfg: TrainingConfig,
    num_steps: int,
    seed: int,
    after_step: Callable[[int], None] | None = None,
) -> TrainingReport:
    """Train the module's adapter for ``num_steps`` optimiser steps on ``examples``.

    Batches are drawn without replacement per epoch from a generator seeded with ``seed``. The
    optimiser is new for every call: an ES keeps no optimiser state between rounds. A
    classifier module learns from the ``decide`` examples only. ``after_step`` is called with
    the number of steps done after each step (the cloud's reference records its norm growth).
    """
    examples = usable_examples(module.base, examples)
    if num_steps < 0:
        raise ValueError(f"num_steps must be >= 0, got {num_steps}")
    if not examples and num_steps:
        raise ValueError("cannot train on an empty dataset")
    start = time.perf_counter()
    model = module.model
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: learning_rate_factor(cfg.lr_schedule, step, num_steps)
    )
    rng = np.random.default_rng(seed)
    order: list[int] = []
    losses = []
    model.train()
    for _ in range(num_steps):
        if len(order) < cfg.batch_size:
            order.extend(rng.permutation(len(examples)).tolist())
        idx, order = order[: cfg.batch_size], order[cfg.batch_size :]
        batch = encode_for(module.base, [examples[i] for i in idx], module.cfg.max_seq_len)
        loss = model(**batch).loss
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optimiser.step()
        schedule.step()
        losses.append(float(loss.item()))
        if after_step is not None:
            after_step(len(losses))
    model.eval()
    mean_loss = float(np.mean(losses)) if losses else float("nan")
    return TrainingReport(
        num_steps, num_steps * cfg.batch_size, mean_loss, time.perf_counter() - start
    )


def learning_rate_factor(schedule: str, step: int, num_steps: int) -> float:
    """The share of ``training.learning_rate`` used at optimiser step ``step`` of ``num_steps``.

    ``constant``: 1 throughout. ``linear``: from 1 down to ``1 / num_steps`` at the last step
    of each local training call, so that every ES hands back a settled module rather than one
    caught mid-jump by the last noisy batch (what FedAvg then averages).
    """
    check_choice("training.lr_schedule", schedule, LR_SCHEDULES)
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return 1.0 - step / max(num_steps, 1)
    raise AssertionError("unreachable: check_choice covers every schedule")


def learning_effort(schedule: str, num_steps: float) -> float:
    """The sum of the learning-rate factors of ``num_steps`` optimiser steps: what the size of
    an Adam update grows with (each step moves a parameter by about the learning rate), so
    updates of different step counts are compared per unit of it."""
    steps = int(num_steps)
    return float(sum(learning_rate_factor(schedule, k, steps) for k in range(steps)))


def local_steps_for(f_ghz: float, f_max_ghz: float, full_steps: int) -> int:
    """Training steps for a committed computing resource: proportional to f, at least 1."""
    return max(1, round(full_steps * f_ghz / f_max_ghz))
