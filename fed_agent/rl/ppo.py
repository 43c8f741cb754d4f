"""Baseline: PPO (clipped surrogate, Schulman et al. 2017) specialised to one-step episodes.

With one-step episodes the return is the reward, so the advantage is r - V(s) and there is
no GAE; each rollout of a batch of parallel episodes is used for a few epochs of minibatch
updates and then discarded (on-policy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from fed_agent.rl.critic import mlp
from fed_agent.seeding import torch_generator


@dataclass
class PPOConfig:
    """Hyperparameters of the PPO baseline (the one home of their defaults)."""

    hidden_sizes: list[int] = field(default_factory=lambda: [128, 128])
    """hidden widths of the policy and value networks"""
    lr: float = 1e-3
    """Adam learning rate of policy and value"""
    clip_ratio: float = 0.2
    """epsilon of the clipped surrogate"""
    epochs: int = 4
    """passes over each rollout"""
    minibatch_size: int = 128
    """transitions per gradient step"""
    value_coef: float = 0.5
    """weight of the value loss"""
    entropy_coef: float = 0.0
    """weight of the entropy bonus"""
    init_log_std: float = -0.5
    """initial log standard deviation of the Gaussian policy"""
    grad_clip_norm: float = 0.5
    """global gradient-norm clip"""
    rollout_size: int = 512
    """on-policy transitions collected before each update"""

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.minibatch_size < 1 or not 0 < self.clip_ratio < 1:
            raise ValueError("need epochs >= 1, minibatch_size >= 1 and 0 < clip_ratio < 1")


@dataclass(frozen=True)
class RolloutBatch:
    """One on-policy rollout of one-step episodes.

    Attributes
    ----------
    states : Tensor
        (batch, state_dim).
    actions : Tensor
        (batch, action_dim), the unclipped Gaussian samples.
    log_probs : Tensor
        (batch,), log-probability of the actions under the behaviour policy.
    rewards : Tensor
        (batch,).
    """

    states: Tensor
    actions: Tensor
    log_probs: Tensor
    rewards: Tensor


def clipped_surrogate_loss(ratio: Tensor, advantage: Tensor, clip_ratio: float) -> Tensor:
    """PPO's -E[min(r A, clip(r, 1 - eps, 1 + eps) A)], inputs of shape (batch,)."""
    clipped = ratio.clamp(1 - clip_ratio, 1 + clip_ratio)
    return -torch.minimum(ratio * advantage, clipped * advantage).mean()


class GaussianPolicy(nn.Module):
    """N(tanh(mu(s)), diag exp(log_std)^2) with a state-independent log_std."""

    def __init__(
        self, state_dim: int, action_dim: int, hidden_sizes: list[int], init_log_std: float
    ) -> None:
        super().__init__()
        self.mean_net = mlp(state_dim, hidden_sizes, action_dim)
        self.log_std = nn.Parameter(torch.full((action_dim,), init_log_std))

    def mean(self, states: Tensor) -> Tensor:
        """Policy mean, shape (batch, action_dim), in (-1, 1)."""
        return torch.tanh(self.mean_net(states))

    def log_prob(self, states: Tensor, actions: Tensor) -> Tensor:
        """Log-density of actions, shape (batch,)."""
        z = (actions - self.mean(states)) / self.log_std.exp()
        return (-0.5 * z**2 - self.log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


class PPO:
    """PPO for one-step episodes with the update(batch) -> dict interface.

    Parameters
    ----------
    state_dim, action_dim : int
        Widths of states and actions.
    config : PPOConfig
        Hyperparameters.
    seed : int
        Seeds initialisation and the learner's generator.
    """

    on_policy = True
    """Learns only from rollouts of its current policy (with their log-probabilities)."""

    def __init__(self, state_dim: int, action_dim: int, config: PPOConfig, seed: int) -> None:
        self.config = config
        self.generator = torch_generator(seed)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.policy = GaussianPolicy(
                state_dim, action_dim, config.hidden_sizes, config.init_log_std
            )
            self.value = mlp(state_dim, config.hidden_sizes, 1)
        params = [*self.policy.parameters(), *self.value.parameters()]
        self.optimizer = torch.optim.Adam(params, lr=config.lr)

    @torch.no_grad()
    def explore(self, states: Tensor) -> tuple[Tensor, Tensor]:
        """Sampled actions (batch, action_dim) and their log-probabilities (batch,)."""
        mean = self.policy.mean(states)
        noise = torch.randn(mean.shape, generator=self.generator)
        actions = mean + self.policy.log_std.exp() * noise
        return actions, self.policy.log_prob(states, actions)

    @torch.no_grad()
    def act(self, states: Tensor, deterministic: bool = False) -> Tensor:
        """Actions clipped to [-1, 1]: the mean when deterministic, else a sample."""
        if deterministic:
            return self.policy.mean(states)
        return self.explore(states)[0].clamp(-1.0, 1.0)

    def active_neuron_fraction(self) -> float:
        """Fraction of the policy's hidden neurons in use (no pruning: always 1.0)."""
        return 1.0

    def begin_episode(self, probe_states: Tensor) -> dict[str, float]:
        """Nothing to do at episode start."""
        return {}

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        """Several epochs of clipped-surrogate minibatch steps on one rollout."""
        size = batch.states.shape[0]
        totals = {"policy_loss": 0.0, "value_loss": 0.0}
        count = 0
        for _ in range(self.config.epochs):
            order = torch.randperm(size, generator=self.generator)
            for start in range(0, size, self.config.minibatch_size):
                index = order[start : start + self.config.minibatch_size]
                policy_loss, value_loss = self._minibatch_step(batch, index)
                totals["policy_loss"] += policy_loss
                totals["value_loss"] += value_loss
                count += 1
        return {key: value / count for key, value in totals.items()} | {
            "log_std": self.policy.log_std.mean().item()
        }

    def imitate(self, states: Tensor, actions: Tensor) -> dict[str, float]:
        """One behaviour-cloning step: regress the policy mean on ``actions``
        (demonstrations); the state-independent spread is left to PPO."""
        loss = (self.policy.mean(states) - actions).pow(2).mean()
        self.optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(self.policy.parameters(), self.config.grad_clip_norm)
        self.optimizer.step()
        return {"imitation_loss": loss.item()}

    def _minibatch_step(self, batch: RolloutBatch, index: Tensor) -> tuple[float, float]:
        """One gradient step on the minibatch ``index``; returns both losses."""
        states, actions = batch.states[index], batch.actions[index]
        values = self.value(states).squeeze(-1)
        advantage = (batch.rewards[index] - values).detach()
        advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
        ratio = torch.exp(self.policy.log_prob(states, actions) - batch.log_probs[index])
        policy_loss = clipped_surrogate_loss(ratio, advantage, self.config.clip_ratio)
        value_loss = (values - batch.rewards[index]).pow(2).mean()
        entropy = self.policy.log_std.sum()
        loss = (
            policy_loss + self.config.value_coef * value_loss - self.config.entropy_coef * entropy
        )
        self.optimizer.zero_grad()
        loss.backward()
        params = [*self.policy.parameters(), *self.value.parameters()]
        nn.utils.clip_grad_norm_(params, self.config.grad_clip_norm)
        self.optimizer.step()
        return policy_loss.item(), value_loss.item()

    def state_dict(self) -> dict[str, dict[str, Tensor]]:
        """Network weights keyed by network name."""
        return {"policy": self.policy.state_dict(), "value": self.value.state_dict()}

    def load_state_dict(self, state: dict[str, dict[str, Tensor]]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.policy.load_state_dict(state["policy"])
        self.value.load_state_dict(state["value"])
