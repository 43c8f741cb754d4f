"""Local training's learning-rate schedule: constant, or a linear decay within each call."""

from __future__ import annotations

import dataclasses

import pytest

from fed_agent.config.schema import TrainingConfig
from fed_agent.modules.training import learning_rate_factor, train_locally


def test_linear_schedule_decays_from_full_rate_to_one_step_above_zero():
    factors = [learning_rate_factor("linear", step, 4) for step in range(4)]
    assert factors == [1.0, 0.75, 0.5, 0.25]
    assert learning_rate_factor("constant", 3, 4) == 1.0


def test_unknown_schedule_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="constant"):
        TrainingConfig(lr_schedule="cosine")
    with pytest.raises(ValueError, match="linear"):
        learning_rate_factor("cosine", 0, 4)


def test_default_is_the_linear_decay_at_3e3():
    cfg = TrainingConfig()
    assert (cfg.lr_schedule, cfg.learning_rate) == ("linear", 3e-3)


def test_training_with_either_schedule_changes_the_adapter(smoke_cfg, smoke_module):
    from fed_agent.data.partition import es_examples

    examples = es_examples(smoke_cfg.data, smoke_cfg.seed, 0)
    for schedule in ("constant", "linear"):
        smoke_module.reset()
        cfg = dataclasses.replace(smoke_cfg.training, lr_schedule=schedule)
        report = train_locally(smoke_module, examples, cfg, 3, seed=1)
        assert report.steps == 3
        changed = [
            k
            for k, v in smoke_module.adapter_state().items()
            if (v != smoke_module.initial_state[k]).any()
        ]
        assert changed
