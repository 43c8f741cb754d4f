"""The cloud's reference update: the global module trained a few steps on the cloud's own split.

Screening (:mod:`fed_agent.screening.judge`) judges every ES update against it.
"""

from __future__ import annotations

import numpy as np

from fed_agent.config.schema import TrainingConfig
from fed_agent.data.tasks import Example
from fed_agent.modules.adapter import AgentModule
from fed_agent.modules.training import learning_effort, learning_rate_factor, train_locally
from fed_agent.protocol import AdapterState
from fed_agent.screening.judge import Reference
from fed_agent.screening.robust import flatten


def reference_update(
    module: AgentModule,
    global_state: AdapterState,
    examples: list[Example],
    training: TrainingConfig,
    steps: int,
    seed: int,
) -> Reference:
    """The cloud's own update: ``global_state`` trained ``steps`` steps on ``examples``, with
    its norm after 1, 2, 4, ... steps (``Reference.growth``).

    Leaves ``module`` holding the trained adapter (callers load what they need next).
    """
    keys = list(global_state)
    origin = flatten(global_state, keys)
    factors = np.cumsum(
        [learning_rate_factor(training.lr_schedule, k, steps) for k in range(steps)]
    )
    growth: list[tuple[float, float]] = []

    def record(done: int) -> None:
        if done & (done - 1) == 0 or done == steps:  # a power of two, or the end
            norm = float(np.linalg.norm(flatten(module.adapter_state(), keys) - origin))
            growth.append((float(factors[done - 1]), norm))

    module.load_adapter(global_state)
    train_locally(module, examples, training, steps, seed, after_step=record)
    delta = flatten(module.adapter_state(), keys) - origin
    return Reference(delta, learning_effort(training.lr_schedule, steps), tuple(growth))
