"""The cloud's reference update: the global module trained a few steps on the cloud's own split.

Screening (:mod:`fed_agent.screening.judge`) judges every ES update against it; the round's
settlement (:mod:`fed_agent.screening.settlement`) pays each update by its gain on the same
split (:func:`update_gains`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from fed_agent.config.schema import TrainingConfig
from fed_agent.data.tasks import Example
from fed_agent.modules.adapter import AgentModule
from fed_agent.modules.batching import encode_for, usable_examples
from fed_agent.modules.training import learning_effort, learning_rate_factor, train_locally
from fed_agent.protocol import AdapterState
from fed_agent.screening.judge import Reference
from fed_agent.screening.robust import flatten, unflatten


def reference_update(
    module: AgentModule,
    global_state: AdapterState,
    examples: list[Example],
    training: TrainingConfig,
    steps: int,
    seed: int,
    keep_path: bool = False,
) -> Reference:
    """The cloud's own update: ``global_state`` trained ``steps`` steps on ``examples``, with
    its norm after 1, 2, 4, ... steps (``Reference.growth``) and, with ``keep_path``, its
    direction there (``Reference.path``, for the effort clause: a copy of the update each).

    Leaves ``module`` holding the trained adapter (callers load what they need next).
    """
    keys = list(global_state)
    origin = flatten(global_state, keys)
    factors = np.cumsum(
        [learning_rate_factor(training.lr_schedule, k, steps) for k in range(steps)]
    )
    growth: list[tuple[float, float]] = []
    path: list[tuple[float, np.ndarray]] = []

    def record(done: int) -> None:
        if done & (done - 1) == 0 or done == steps:  # a power of two, or the end
            so_far = flatten(module.adapter_state(), keys) - origin
            norm = float(np.linalg.norm(so_far))
            growth.append((float(factors[done - 1]), norm))
            if keep_path and norm > 0:
                path.append((float(factors[done - 1]), so_far / norm))

    module.load_adapter(global_state)
    train_locally(module, examples, training, steps, seed, after_step=record)
    delta = flatten(module.adapter_state(), keys) - origin
    effort = learning_effort(training.lr_schedule, steps)
    return Reference(delta, effort, tuple(growth), tuple(path))


@torch.no_grad()
def split_loss(module: AgentModule, examples: list[Example], batch_size: int) -> float:
    """The training loss of the module's current adapter on ``examples`` (example-weighted
    mean over batches of ``batch_size``)."""
    examples = usable_examples(module.base, examples)
    if not examples:
        raise ValueError("cannot measure a loss on an empty split")
    module.model.eval()
    total = 0.0
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        batch = encode_for(module.base, chunk, module.cfg.max_seq_len)
        total += float(module.model(**batch).loss) * len(chunk)
    return total / len(examples)


def update_gains(
    module: AgentModule,
    global_state: AdapterState,
    deltas: Sequence[np.ndarray],
    examples: list[Example],
    batch_size: int,
) -> list[float]:
    """Each update's gain: the loss of ``global_state`` on ``examples`` minus the loss of
    ``global_state`` + the (flattened) update, the quality clause's measure
    (:func:`fed_agent.screening.settlement.settle`). Leaves ``module`` holding the last one."""
    keys = list(global_state)
    origin = flatten(global_state, keys)
    module.load_adapter(global_state)
    before = split_loss(module, examples, batch_size)
    gains = []
    for delta in deltas:
        module.load_adapter(unflatten(origin + delta, global_state))
        gains.append(before - split_loss(module, examples, batch_size))
    return gains
