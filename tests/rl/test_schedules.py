"""Noise schedules: valid betas, decreasing alpha_bar, loud failure on unknown names."""

from __future__ import annotations

import pytest
import torch

from fed_agent.rl.schedules import SCHEDULES, make_schedule


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("num_steps", [1, 5, 50])
def test_schedule_betas_in_unit_interval_and_alpha_bar_strictly_decreasing(
    name: str, num_steps: int
) -> None:
    schedule = make_schedule(name, num_steps)
    assert schedule.num_steps == num_steps
    assert bool(((schedule.betas > 0) & (schedule.betas < 1)).all())
    assert bool((schedule.alphas_cumprod[1:] < schedule.alphas_cumprod[:-1]).all())
    assert torch.allclose(schedule.alphas_cumprod, torch.cumprod(1 - schedule.betas, 0))
    assert schedule.alphas_cumprod_prev[0] == 1.0
    assert bool((schedule.posterior_variance >= 0).all())
    assert torch.isfinite(schedule.posterior_log_variance_clipped).all()


def test_vp_schedule_reaches_near_pure_noise_in_five_steps() -> None:
    assert make_schedule("vp", 5).alphas_cumprod[-1] < 0.01


def test_posterior_mean_recovers_clean_sample_at_first_step() -> None:
    schedule = make_schedule("cosine", 5)
    assert schedule.posterior_mean_coef1[0] == pytest.approx(1.0)
    assert schedule.posterior_mean_coef2[0] == pytest.approx(0.0)


def test_unknown_schedule_lists_choices() -> None:
    with pytest.raises(ValueError, match=r"choose from \['cosine', 'linear', 'vp'\]"):
        make_schedule("sigmoid", 5)
