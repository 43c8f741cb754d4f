"""Noise schedules of the diffusion actor: betas for T steps and the tensors derived from them.

Pure functions, no learning. The three beta schedules follow Diffusion-QL
(``agents/helpers.py``): ``linear`` (Ho et al. 2020), ``cosine`` (Nichol & Dhariwal 2021)
and ``vp`` (the discretised variance-preserving SDE of Song et al. 2021, which Diffusion-QL
recommends for few denoising steps because it still reaches near-pure noise at T = 5).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

LINEAR_BETA_START = 1e-4
LINEAR_BETA_END = 2e-2
COSINE_OFFSET = 8e-3
VP_BETA_MIN = 0.1
VP_BETA_MAX = 10.0
MAX_BETA = 0.999


def linear_betas(num_steps: int) -> Tensor:
    """Betas evenly spaced in [1e-4, 2e-2] (DDPM), shape (num_steps,), float64."""
    return torch.linspace(LINEAR_BETA_START, LINEAR_BETA_END, num_steps, dtype=torch.float64)


def cosine_betas(num_steps: int) -> Tensor:
    """Betas of the cosine schedule, alpha_bar(t) = cos^2((t/T + s)/(1 + s) pi/2), float64."""
    steps = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    alpha_bar = torch.cos((steps + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2
    alpha_bar = alpha_bar / alpha_bar[0]
    betas = 1 - alpha_bar[1:] / alpha_bar[:-1]
    return betas.clamp(max=MAX_BETA)


def vp_betas(num_steps: int) -> Tensor:
    """Betas of the discretised variance-preserving SDE with beta in [0.1, 10], float64."""
    t = torch.arange(1, num_steps + 1, dtype=torch.float64)
    span = VP_BETA_MAX - VP_BETA_MIN
    alpha = torch.exp(-VP_BETA_MIN / num_steps - 0.5 * span * (2 * t - 1) / num_steps**2)
    return 1 - alpha


SCHEDULES: dict[str, Callable[[int], Tensor]] = {
    "linear": linear_betas,
    "cosine": cosine_betas,
    "vp": vp_betas,
}


@dataclass(frozen=True)
class NoiseSchedule:
    """Every tensor of a DDPM schedule, each of shape (T,), float32.

    Index t = 0 is the first (least noisy) forward step; sampling runs t = T-1, ..., 0.

    Attributes
    ----------
    betas : Tensor
        Forward noise variance per step, in (0, 1).
    alphas_cumprod : Tensor
        alpha_bar_t = prod_{s <= t} (1 - beta_s), strictly decreasing in t.
    alphas_cumprod_prev : Tensor
        alpha_bar_{t-1}, with alpha_bar_{-1} = 1.
    posterior_variance : Tensor
        Variance of q(x_{t-1} | x_t, x_0).
    posterior_log_variance_clipped : Tensor
        Its log, with the t = 0 value (exactly 0) replaced by the t = 1 value.
    posterior_mean_coef1, posterior_mean_coef2 : Tensor
        Weights of x_0 and x_t in the mean of q(x_{t-1} | x_t, x_0).
    """

    betas: Tensor
    alphas_cumprod: Tensor
    alphas_cumprod_prev: Tensor
    posterior_variance: Tensor
    posterior_log_variance_clipped: Tensor
    posterior_mean_coef1: Tensor
    posterior_mean_coef2: Tensor

    @property
    def num_steps(self) -> int:
        """Number of denoising steps T."""
        return int(self.betas.shape[0])

    @classmethod
    def from_betas(cls, betas: Tensor) -> NoiseSchedule:
        """Derive every schedule tensor from betas of shape (T,) (computed in float64)."""
        if betas.ndim != 1 or betas.numel() == 0:
            raise ValueError(
                f"betas must be a non-empty 1-d tensor, got shape {tuple(betas.shape)}"
            )
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("betas must lie in the open interval (0, 1)")
        betas = betas.to(torch.float64)
        alphas = 1 - betas
        alphas_cumprod = torch.cumprod(alphas, dim=0)
        prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
        post_var = betas * (1 - prev) / (1 - alphas_cumprod)
        # the t = 0 posterior variance is exactly 0; log(0) would poison the sampler (DDPM)
        floor = post_var[1] if post_var.numel() > 1 else betas[0]
        post_log_var = torch.log(torch.cat([floor.reshape(1), post_var[1:]]))
        coef1 = betas * torch.sqrt(prev) / (1 - alphas_cumprod)
        coef2 = (1 - prev) * torch.sqrt(alphas) / (1 - alphas_cumprod)
        return cls(
            *(
                x.to(torch.float32)
                for x in (betas, alphas_cumprod, prev, post_var, post_log_var, coef1, coef2)
            )
        )


def make_schedule(name: str, num_steps: int) -> NoiseSchedule:
    """Build the named schedule with ``num_steps`` denoising steps.

    Parameters
    ----------
    name : str
        One of ``"linear"``, ``"cosine"``, ``"vp"``.
    num_steps : int
        T >= 1.

    Returns
    -------
    NoiseSchedule
        Tensors of shape (T,).
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose from {sorted(SCHEDULES)}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    return NoiseSchedule.from_betas(SCHEDULES[name](num_steps))
