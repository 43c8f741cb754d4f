"""The diffusion actor: a T-step reverse-diffusion sampler of actions conditioned on the state.

Structure and formulas follow Diffusion-QL (``agents/diffusion.py``): the schedule tensors
are registered buffers, the denoiser predicts the noise, and the predicted clean action x_0
is clamped to the action box before each posterior step.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fed_agent.rl.denoiser import Denoiser
from fed_agent.rl.schedules import NoiseSchedule

PREDICTIONS = ("noise", "sample")


def straight_through_clamp(x: Tensor, bound: float) -> Tensor:
    """Clamp values to [-bound, bound] but pass gradients through unchanged.

    A plain clamp has zero gradient outside the box, so an actor pushed onto the bound by an
    early, wrong critic could never move back; the straight-through estimator keeps the
    critic's gradient flowing. Forward values equal ``x.clamp(-bound, bound)`` exactly.
    """
    return x.clamp(-bound, bound).detach() + (x - x.detach())


class DiffusionActor(nn.Module):
    """Policy pi(a | s) defined by running the reverse diffusion chain from Gaussian noise.

    Parameters
    ----------
    denoiser : Denoiser
        The noise-prediction network eps_theta(x_t, t, s).
    schedule : NoiseSchedule
        The noise schedule; its T is the number of denoising steps.
    action_bound : float
        Actions lie in [-action_bound, action_bound]^action_dim.
    prediction : str
        What the denoiser's output means: ``"noise"`` (eps, DDPM and Diffusion-QL's default)
        or ``"sample"`` (the clean action x_0 itself). With few steps and no behaviour data
        to imitate, ``"sample"`` learns much faster: a network that ignores x_t is already
        a deterministic policy, and spread is added only where the entropy term pays for it.
    """

    def __init__(
        self,
        denoiser: Denoiser,
        schedule: NoiseSchedule,
        action_bound: float = 1.0,
        prediction: str = "sample",
    ) -> None:
        super().__init__()
        if action_bound <= 0:
            raise ValueError(f"action_bound must be positive, got {action_bound}")
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {prediction!r}; choose from {list(PREDICTIONS)}")
        self.prediction = prediction
        self.denoiser = denoiser
        self.action_dim = denoiser.action_dim
        self.action_bound = action_bound
        self.num_steps = schedule.num_steps
        alphas_cumprod = schedule.alphas_cumprod
        self.register_buffer("sqrt_recip_alphas_cumprod", torch.rsqrt(alphas_cumprod))
        self.register_buffer("sqrt_recipm1_alphas_cumprod", torch.sqrt(1 / alphas_cumprod - 1))
        self.register_buffer("posterior_mean_coef1", schedule.posterior_mean_coef1)
        self.register_buffer("posterior_mean_coef2", schedule.posterior_mean_coef2)
        self.register_buffer(
            "posterior_std", torch.exp(0.5 * schedule.posterior_log_variance_clipped)
        )

    def _denoise_step(
        self, x: Tensor, step: int, states: Tensor, noise: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """One reverse step x_t -> x_{t-1}; also returns the x_0 overshoot, shape (batch,)."""
        steps = torch.full((x.shape[0],), step, dtype=torch.long, device=x.device)
        output = self.denoiser(x, steps, states)
        if self.prediction == "noise":
            x0 = (
                self.sqrt_recip_alphas_cumprod[step] * x
                - self.sqrt_recipm1_alphas_cumprod[step] * output
            )
        else:
            x0 = output
        overshoot = (x0.abs() - self.action_bound).clamp(min=0).pow(2).sum(dim=-1)
        # clamp x0 before the posterior step; unclamped x0 makes early steps explode (Diffusion-QL)
        x0 = straight_through_clamp(x0, self.action_bound)
        mean = self.posterior_mean_coef1[step] * x0 + self.posterior_mean_coef2[step] * x
        if step == 0 or noise is None:
            return mean, overshoot
        return mean + self.posterior_std[step] * noise, overshoot

    def sample_with_overshoot(
        self, states: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Sample actions and measure how far the raw final action left the action box.

        The overshoot sum_d max(|x0_d| - bound, 0)^2 of the last step's (unclamped) x_0
        prediction is what a learner penalises so that the raw action stays near the box: a
        clamped action far outside it would need many updates to come back when the critic
        asks for it. Earlier steps are not penalised: at high noise their x_0 predictions are
        wild by nature and the clamp is what keeps them usable (Diffusion-QL).

        Parameters
        ----------
        states : Tensor
            Shape (batch, state_dim).
        generator : torch.Generator, optional
            Source of the chain's Gaussian noise.

        Returns
        -------
        tuple[Tensor, Tensor]
            Actions (batch, action_dim) in [-bound, bound]; overshoot (batch,).
        """
        batch = states.shape[0]
        shape = (self.num_steps + 1, batch, self.action_dim)
        # all noise is drawn up front so a generator gives the same actions on any batch path
        noise = torch.randn(shape, generator=generator, device=states.device, dtype=states.dtype)
        x = noise[0]
        overshoot = torch.zeros(batch, device=states.device, dtype=states.dtype)
        for step in reversed(range(self.num_steps)):
            x, overshoot = self._denoise_step(x, step, states, noise[step + 1])
        return straight_through_clamp(x, self.action_bound), overshoot

    @torch.no_grad()
    def sample_mean_path(self, states: Tensor) -> Tensor:
        """The noise-free reverse chain: start at x_T = 0 and take each posterior mean.

        The deterministic proposal of a trained actor (no random numbers, so the same state
        gives the same action on any batch), shape (batch, action_dim).
        """
        x = torch.zeros(states.shape[0], self.action_dim, dtype=states.dtype)
        for step in reversed(range(self.num_steps)):
            x, _ = self._denoise_step(x, step, states, None)
        return x.clamp(-self.action_bound, self.action_bound)

    def sample(self, states: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Draw one action per state by running the reverse chain (differentiable in theta).

        Parameters
        ----------
        states : Tensor
            Shape (batch, state_dim).
        generator : torch.Generator, optional
            Source of the chain's Gaussian noise; pass one for reproducible actions.

        Returns
        -------
        Tensor
            Shape (batch, action_dim), in [-action_bound, action_bound].
        """
        return self.sample_with_overshoot(states, generator)[0]

    def imitation_loss(
        self, states: Tensor, actions: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """The denoising loss of behaviour cloning (Diffusion-QL's ``Diffusion.loss``).

        Each target action is noised to a random step t, x_t = sqrt(abar_t) a +
        sqrt(1 - abar_t) eps, and the denoiser is regressed on what it predicts: the clean
        action (``"sample"``) or the noise (``"noise"``). Shape: a scalar.
        """
        batch = actions.shape[0]
        steps = torch.randint(0, self.num_steps, (batch,), generator=generator)
        noise = torch.randn(actions.shape, generator=generator, dtype=actions.dtype)
        recip = self.sqrt_recip_alphas_cumprod[steps].unsqueeze(-1)  # 1 / sqrt(abar_t)
        noisy = actions / recip + torch.sqrt(1.0 - 1.0 / recip**2) * noise
        target = actions if self.prediction == "sample" else noise
        return (self.denoiser(noisy, steps, states) - target).pow(2).mean()

    def forward(self, states: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Alias of :meth:`sample`, shape (batch, action_dim)."""
        return self.sample(states, generator)
