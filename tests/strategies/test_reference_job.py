"""The cloud's reference update runs in the background on a twin of the module."""

from __future__ import annotations

import numpy as np
import pytest

from strategies.reference_job import ReferenceJob


def test_a_started_reference_equals_one_computed_on_demand_and_leaves_the_module(
    smoke_cfg, smoke_module
):
    state = smoke_module.initial_state
    job = ReferenceJob(smoke_cfg, smoke_module)
    job.start(3, state, [2, 4, 1])
    # the process-wide module is free meanwhile: train-like use of it does not disturb the job
    smoke_module.load_adapter({k: v + 0.01 for k, v in state.items()})
    background = job.take(3, state, [2, 4, 1])
    on_demand = ReferenceJob(smoke_cfg, smoke_module).take(3, state, [2, 4, 1])
    np.testing.assert_allclose(background.delta, on_demand.delta, rtol=1e-6, atol=1e-9)
    assert [e for e, _ in background.growth] == pytest.approx([1.0, 2.0, 4.0])  # the most steps
    after = smoke_module.adapter_state()
    assert all(np.allclose(after[k], state[k] + 0.01) for k in state)


def test_a_reference_of_another_round_is_not_used(smoke_cfg, smoke_module):
    state = smoke_module.initial_state
    job = ReferenceJob(smoke_cfg, smoke_module)
    job.start(1, state, [1])
    reference = job.take(2, state, [3])  # round 1's job is dropped, round 2's computed
    assert reference.effort == pytest.approx(3.0)


def test_a_failing_background_reference_raises_where_it_is_taken(smoke_cfg, smoke_module):
    job = ReferenceJob(smoke_cfg, smoke_module)
    broken = {k: np.full_like(v, np.nan) for k, v in smoke_module.initial_state.items()}
    job.start(1, broken, [2])
    with pytest.raises(ValueError, match="NaN"):
        job.take(1, broken, [2])
