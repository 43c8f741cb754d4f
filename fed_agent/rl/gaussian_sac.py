"""Baseline: soft actor-critic with a tanh-squashed diagonal Gaussian policy (Haarnoja 2018)."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from fed_agent.rl.critic import TwinQ, mlp
from fed_agent.rl.off_policy import OffPolicyLearner
from fed_agent.rl.replay import Batch
from fed_agent.rl.sac import critic_loss, soft_q_target, temperature_loss
from fed_agent.rl.targets import polyak_update
from fed_agent.seeding import torch_generator

LOG_STD_MIN = -10.0
LOG_STD_MAX = 2.0
TANH_EPS = 1e-6


@dataclass
class GaussianSACConfig:
    """Hyperparameters of the Gaussian SAC baseline (the one home of their defaults)."""

    hidden_sizes: list[int] = field(default_factory=lambda: [128, 128])
    """hidden widths of the policy network"""
    critic_hidden_sizes: list[int] = field(default_factory=lambda: [128, 128])
    """hidden widths of each critic"""
    actor_lr: float = 1e-3
    """Adam learning rate of the policy"""
    critic_lr: float = 1e-3
    """Adam learning rate of the critics"""
    alpha_lr: float = 3e-4
    """Adam learning rate of log(alpha)"""
    gamma: float = 0.99
    """discount (irrelevant for one-step episodes)"""
    tau: float = 0.05
    """Polyak step of the target critics"""
    alpha: float = 0.002
    """initial entropy temperature"""
    auto_alpha: bool = True
    """tune alpha towards target_entropy_per_dim * action_dim"""
    target_entropy_per_dim: float = -2.0
    """target entropy per action dimension"""
    grad_clip_norm: float = 10.0
    """global gradient-norm clip"""
    buffer_size: int = 8_192
    """replay capacity"""
    batch_size: int = 128
    """transitions per gradient step"""

    def __post_init__(self) -> None:
        if not 0.0 < self.tau <= 1.0 or self.alpha < 0 or not self.hidden_sizes:
            raise ValueError("need 0 < tau <= 1, alpha >= 0 and at least one hidden layer")


class TanhGaussianPolicy(nn.Module):
    """pi(a | s) = tanh(N(mu(s), diag sigma(s)^2)), with its exact log-density."""

    def __init__(self, state_dim: int, action_dim: int, hidden_sizes: list[int]) -> None:
        super().__init__()
        self.net = mlp(state_dim, hidden_sizes, 2 * action_dim)

    def forward(
        self, states: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Sampled action, its log-probability and the deterministic action tanh(mu).

        Returns
        -------
        tuple[Tensor, Tensor, Tensor]
            Shapes (batch, action_dim), (batch,), (batch, action_dim).
        """
        mean, log_std = self.net(states).chunk(2, dim=-1)
        log_std = log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
        std = log_std.exp()
        noise = torch.randn(mean.shape, generator=generator)
        pre_tanh = mean + std * noise
        action = torch.tanh(pre_tanh)
        gauss_log_prob = (-0.5 * noise**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        # change of variables through tanh (SAC appendix C)
        log_prob = gauss_log_prob - torch.log(1 - action**2 + TANH_EPS).sum(-1)
        return action, log_prob, torch.tanh(mean)


class GaussianSAC(OffPolicyLearner):
    """SAC with a tanh-Gaussian actor; the same update(batch) interface as DiffusionSAC."""

    networks = ("actor", "critic", "critic_target")

    def __init__(
        self, state_dim: int, action_dim: int, config: GaussianSACConfig, seed: int
    ) -> None:
        self.config = config
        self.action_dim = action_dim
        self.generator = torch_generator(seed)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.actor = TanhGaussianPolicy(state_dim, action_dim, config.hidden_sizes)
            self.critic = TwinQ(state_dim, action_dim, config.critic_hidden_sizes)
        self.critic_target = copy.deepcopy(self.critic)
        self.log_alpha = torch.tensor(math.log(max(config.alpha, 1e-12)), requires_grad=True)
        self.target_entropy = config.target_entropy_per_dim * action_dim
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=config.actor_lr)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=config.critic_lr)
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=config.alpha_lr)

    @torch.no_grad()
    def act(self, states: Tensor, deterministic: bool = False) -> Tensor:
        """Actions of shape (batch, action_dim): sampled, or tanh(mu) when deterministic."""
        action, _, mean_action = self.actor(states, self.generator)
        return mean_action if deterministic else action

    def active_neuron_fraction(self) -> float:
        """Fraction of the actor's hidden neurons in use (no pruning: always 1.0)."""
        return 1.0

    def begin_episode(self, probe_states: Tensor) -> dict[str, float]:
        """Nothing to do at episode start (no pruning)."""
        return {}

    def update(self, batch: Batch) -> dict[str, float]:
        """One gradient step on critic, actor and temperature, then the target update."""
        with torch.no_grad():
            next_action, next_log_prob, _ = self.actor(batch.next_states, self.generator)
            next_q = self.critic_target.q_min(batch.next_states, next_action)
            target = soft_q_target(
                batch.rewards, batch.dones, next_q, -next_log_prob, self.alpha, self.config.gamma
            )
        q1, q2 = self.critic(batch.states, batch.actions)
        loss_q = critic_loss(q1, q2, target)
        self._step(self.critic_optimizer, loss_q, self.critic)
        action, log_prob, _ = self.actor(batch.states, self.generator)
        loss_pi = (self.alpha * log_prob - self.critic.q_min(batch.states, action)).mean()
        self._step(self.actor_optimizer, loss_pi, self.actor)
        metrics = {"critic_loss": loss_q.item(), "actor_loss": loss_pi.item()}
        if self.config.auto_alpha:
            loss_alpha = temperature_loss(self.log_alpha, -log_prob, self.target_entropy)
            self.alpha_optimizer.zero_grad()
            loss_alpha.backward()
            self.alpha_optimizer.step()
        polyak_update(self.critic, self.critic_target, self.config.tau)
        return metrics | {"entropy": -log_prob.mean().item(), "alpha": self.alpha}

    def imitate(self, states: Tensor, actions: Tensor) -> dict[str, float]:
        """One behaviour-cloning step: regress the deterministic action tanh(mu) on
        ``actions`` (demonstrations); the spread is left to the entropy term."""
        _, _, mean_action = self.actor(states, self.generator)
        loss = (mean_action - actions).pow(2).mean()
        self._step(self.actor_optimizer, loss, self.actor)
        return {"imitation_loss": loss.item()}
