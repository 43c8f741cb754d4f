"""Diffusion soft actor-critic: EDMSAC (with dynamic structured pruning) and DMSAC (without).

The actor is a :class:`~fed_agent.rl.diffusion_actor.DiffusionActor`; actions are sampled
by the reparameterised reverse chain, so the actor loss is differentiated through all T
denoising steps (as in Diffusion-QL). The critic is a twin Q with Polyak-averaged targets.

Entropy of a diffusion policy. The marginal density pi(a | s) of a diffusion policy has no
closed form, so SAC's -log pi(a | s) is not available. :func:`estimate_entropy` replaces it
by the entropy of a diagonal Gaussian fitted to M actions drawn from the policy for the same
state (M = ``entropy_samples``): H(s) ~= sum_d 0.5 log(2 pi e var_d(s)). It is exact for a
Gaussian policy, an upper bound for any policy with the same per-dimension variances (the
Gaussian maximises entropy at fixed variance) and differentiable through the samples, so
the actor can be pushed towards spread. It enters the actor loss -(Q + alpha H) and the soft
critic target exactly where SAC puts -alpha log pi; the temperature alpha is fixed or tuned
automatically towards a target entropy given per action dimension.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from fed_agent.rl.critic import TwinQ
from fed_agent.rl.denoiser import Denoiser
from fed_agent.rl.diffusion_actor import PREDICTIONS, DiffusionActor
from fed_agent.rl.off_policy import OffPolicyLearner
from fed_agent.rl.pruning import DynamicPruner, active_neuron_fraction, compact_denoiser
from fed_agent.rl.replay import Batch
from fed_agent.rl.schedules import SCHEDULES, make_schedule
from fed_agent.rl.targets import polyak_update
from fed_agent.seeding import torch_generator

MIN_SAMPLE_VARIANCE = 1e-6


@dataclass
class EDMSACConfig:
    """Hyperparameters of the diffusion soft actor-critic (the one home of their defaults).

    ``prune_rate = 0`` turns EDMSAC into DMSAC.
    """

    hidden_sizes: list[int] = field(default_factory=lambda: [128, 128])
    """widths of the denoiser's hidden layers (the prunable neurons)"""
    critic_hidden_sizes: list[int] = field(default_factory=lambda: [128, 128])
    """widths of each critic's hidden layers"""
    time_dim: int = 16
    """width of the sinusoidal step embedding"""
    denoising_steps: int = 5
    """T, the number of reverse-diffusion steps per action"""
    schedule: str = "vp"
    """noise schedule: linear, cosine or vp"""
    prediction: str = "sample"
    """what the denoiser predicts: sample (x_0) or noise (eps)"""
    actor_lr: float = 1e-3
    """Adam learning rate of the denoiser"""
    critic_lr: float = 1e-3
    """Adam learning rate of the twin critics"""
    alpha_lr: float = 3e-4
    """Adam learning rate of log(alpha) when auto_alpha is on"""
    gamma: float = 0.99
    """discount of the soft Bellman target (irrelevant for one-step episodes)"""
    tau: float = 0.01
    """Polyak step of the target networks (the target actor, an EMA over ~1/tau updates, is
    what the designer proposes with: 0.01 averages out the actor's chase of its critic)"""
    alpha: float = 0.002
    """entropy temperature (initial value when auto_alpha is on); 0.002 keeps the policy
    spread wide enough for the critic to see the bunching corners of the optimal menus"""
    auto_alpha: bool = False
    """tune alpha towards target_entropy_per_dim * action_dim"""
    target_entropy_per_dim: float = -2.0
    """target entropy per action dimension (-2 ~ a per-dimension std of 0.033)"""
    entropy_samples: int = 4
    """M, actions drawn per state for the entropy estimate"""
    prune_rate: float = 0.5
    """rho, the fraction of each hidden layer's neurons masked (0 = DMSAC)"""
    prune_probe_size: int = 256
    """states scored per mask recomputation"""
    bound_penalty: float = 1.0
    """weight of the penalty on predicted x_0 leaving the action box"""
    grad_clip_norm: float = 10.0
    """global gradient-norm clip of actor and critic"""
    buffer_size: int = 8_192
    """replay capacity (transitions)"""
    batch_size: int = 128
    """transitions per gradient step"""

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose from {sorted(SCHEDULES)}")
        if self.prediction not in PREDICTIONS:
            raise ValueError(
                f"unknown prediction {self.prediction!r}; choose from {list(PREDICTIONS)}"
            )
        if not 0.0 <= self.prune_rate < 1.0:
            raise ValueError(f"prune_rate must be in [0, 1), got {self.prune_rate}")
        if self.denoising_steps < 1 or self.entropy_samples < 2:
            raise ValueError("denoising_steps must be >= 1 and entropy_samples >= 2")
        if not self.hidden_sizes or min(self.hidden_sizes) < 1:
            raise ValueError(f"hidden_sizes must be positive widths, got {self.hidden_sizes}")
        if not 0.0 < self.tau <= 1.0 or self.alpha < 0:
            raise ValueError(f"need 0 < tau <= 1 and alpha >= 0, got {self.tau}, {self.alpha}")


def estimate_entropy(actions: Tensor) -> Tensor:
    """Gaussian-fit entropy estimate of a policy from M samples per state.

    H(s) = sum_d 0.5 * log(2 pi e * var_d(s)), var_d the unbiased sample variance of
    dimension d over the M samples (floored at 1e-6). Exact for a diagonal Gaussian policy,
    an upper bound otherwise; differentiable through the samples.

    Parameters
    ----------
    actions : Tensor
        Shape (batch, M, action_dim), M >= 2 actions drawn for each state.

    Returns
    -------
    Tensor
        Shape (batch,), the entropy estimate in nats.
    """
    if actions.ndim != 3 or actions.shape[1] < 2:
        raise ValueError(f"need actions of shape (batch, M >= 2, dim), got {tuple(actions.shape)}")
    variance = actions.var(dim=1, unbiased=True).clamp(min=MIN_SAMPLE_VARIANCE)
    return 0.5 * torch.log(2 * math.pi * math.e * variance).sum(dim=-1)


def critic_loss(q1: Tensor, q2: Tensor, target: Tensor) -> Tensor:
    """Sum of both critics' mean squared errors to the (detached) target, all (batch,)."""
    return F.mse_loss(q1, target) + F.mse_loss(q2, target)


def soft_q_target(
    rewards: Tensor, dones: Tensor, next_q: Tensor, next_entropy: Tensor, alpha: float, gamma: float
) -> Tensor:
    """Soft Bellman target r + gamma (1 - done) (Q'(s', a') + alpha H(s')), shapes (batch,)."""
    return rewards + gamma * (1 - dones) * (next_q + alpha * next_entropy)


def actor_loss(q_min: Tensor, entropy: Tensor, alpha: float) -> Tensor:
    """SAC actor loss E[-(min Q(s, a) + alpha H(s))]; q_min and entropy of shape (batch,)."""
    return -(q_min + alpha * entropy).mean()


def temperature_loss(log_alpha: Tensor, entropy: Tensor, target_entropy: float) -> Tensor:
    """Loss of log(alpha): alpha grows when the entropy is below target (SAC v2)."""
    return (log_alpha * (entropy.detach() - target_entropy)).mean()


class DiffusionSAC(OffPolicyLearner):
    """Soft actor-critic with a diffusion actor and optional dynamic structured pruning.

    Parameters
    ----------
    state_dim, action_dim : int
        Widths of states and actions (actions in [-1, 1]).
    config : EDMSACConfig
        Hyperparameters.
    seed : int
        Seeds the network initialisation and the learner's own generator.
    """

    networks = ("actor", "actor_target", "critic", "critic_target")

    def __init__(self, state_dim: int, action_dim: int, config: EDMSACConfig, seed: int) -> None:
        self.config = config
        self.state_dim = state_dim
        self.action_dim = action_dim
        self.generator = torch_generator(seed)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            denoiser = Denoiser(state_dim, action_dim, config.hidden_sizes, config.time_dim)
            self.critic = TwinQ(state_dim, action_dim, config.critic_hidden_sizes)
        schedule = make_schedule(config.schedule, config.denoising_steps)
        self.actor = DiffusionActor(denoiser, schedule, prediction=config.prediction)
        self.actor_target = copy.deepcopy(self.actor)
        self.critic_target = copy.deepcopy(self.critic)
        self.log_alpha = torch.tensor(math.log(max(config.alpha, 1e-12)), requires_grad=True)
        self.target_entropy = config.target_entropy_per_dim * action_dim
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=config.actor_lr)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=config.critic_lr)
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=config.alpha_lr)
        self.pruner = DynamicPruner(config.prune_rate) if config.prune_rate > 0 else None

    @torch.no_grad()
    def act(self, states: Tensor, deterministic: bool = False) -> Tensor:
        """Actions of shape (batch, action_dim) in [-1, 1], without gradients.

        Stochastic: a sample of the online actor's reverse chain (exploration).
        Deterministic: the Polyak-averaged target actor (the EMA model that Diffusion-QL
        samples from), pruned and compacted to its active neurons, run along the noise-free
        chain (x_T = 0, then every posterior mean): no random numbers, so a state gets the
        same action in any batch, and the average of recent actors is steadier than the
        latest one, which chases its critic.
        """
        if not deterministic:
            return self.actor.sample(states, self.generator)
        actor = DiffusionActor(
            compact_denoiser(self.actor_target.denoiser),
            make_schedule(self.config.schedule, self.config.denoising_steps),
            prediction=self.config.prediction,
        )
        return actor.sample_mean_path(states)

    def active_neuron_fraction(self) -> float:
        """Fraction of the actor's hidden neurons in use (1.0 without pruning)."""
        return active_neuron_fraction(self.actor.denoiser)

    def begin_episode(self, probe_states: Tensor) -> dict[str, float]:
        """Recompute the pruning masks on probe states (a no-op for DMSAC)."""
        if self.pruner is None:
            return {"active_neuron_frac": 1.0}
        self.pruner.update(
            self.actor.denoiser,
            self.actor_target.denoiser,
            probe_states[: self.config.prune_probe_size],
            self.generator,
            self.config.denoising_steps,
        )
        return {"active_neuron_frac": active_neuron_fraction(self.actor.denoiser)}

    def update(self, batch: Batch) -> dict[str, float]:
        """One gradient step on critic, actor and temperature, then the target updates."""
        metrics = self._update_critic(batch)
        entropy, actor_metrics = self._update_actor(batch.states)
        metrics |= actor_metrics
        if self.config.auto_alpha:
            metrics |= self._update_temperature(entropy)
        self._update_targets()
        metrics["alpha"] = self.alpha
        return metrics

    def imitate(self, states: Tensor, actions: Tensor) -> dict[str, float]:
        """One behaviour-cloning step of the actor towards ``actions`` (demonstrations).

        The diffusion denoising loss (:meth:`DiffusionActor.imitation_loss`), then the
        Polyak step of the target actor that :meth:`act` proposes with.
        """
        loss = self.actor.imitation_loss(states, actions, self.generator)
        self._step(self.actor_optimizer, loss, self.actor)
        polyak_update(self.actor, self.actor_target, self.config.tau)
        return {"imitation_loss": loss.item()}

    def _sample_groups(self, actor: DiffusionActor, states: Tensor) -> tuple[Tensor, Tensor]:
        """M actions per state, shape (batch, M, action_dim), and the mean x_0 overshoot."""
        m = self.config.entropy_samples
        actions, overshoot = actor.sample_with_overshoot(
            states.repeat_interleave(m, dim=0), self.generator
        )
        return actions.view(states.shape[0], m, self.action_dim), overshoot.mean()

    def _update_critic(self, batch: Batch) -> dict[str, float]:
        """Regress both critics on the soft Bellman target."""
        with torch.no_grad():
            next_q, next_entropy = self._next_value(batch)
            target = soft_q_target(
                batch.rewards, batch.dones, next_q, next_entropy, self.alpha, self.config.gamma
            )
        q1, q2 = self.critic(batch.states, batch.actions)
        loss = critic_loss(q1, q2, target)
        self._step(self.critic_optimizer, loss, self.critic)
        return {"critic_loss": loss.item(), "q_mean": q1.mean().item()}

    def _next_value(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """Target Q and entropy at the next states; zeros when every episode has ended."""
        if bool((batch.dones == 1).all()):
            zeros = torch.zeros_like(batch.rewards)
            return zeros, zeros
        groups, _ = self._sample_groups(self.actor_target, batch.next_states)
        first = groups[:, 0]
        return self.critic_target.q_min(batch.next_states, first), estimate_entropy(groups)

    def _update_actor(self, states: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Ascend min Q + alpha H through the reverse chain; returns the entropy estimate."""
        groups, overshoot = self._sample_groups(self.actor, states)
        flat_states = states.repeat_interleave(self.config.entropy_samples, dim=0)
        q_min = self.critic.q_min(flat_states, groups.reshape(-1, self.action_dim))
        q_min = q_min.view(states.shape[0], -1).mean(dim=1)
        entropy = estimate_entropy(groups)
        loss = actor_loss(q_min, entropy, self.alpha) + self.config.bound_penalty * overshoot
        self._step(self.actor_optimizer, loss, self.actor)
        metrics = {"actor_loss": loss.item(), "entropy": entropy.mean().item()}
        return entropy.detach(), metrics | {"overshoot": overshoot.item()}

    def _update_temperature(self, entropy: Tensor) -> dict[str, float]:
        """One step on log(alpha) towards the target entropy."""
        loss = temperature_loss(self.log_alpha, entropy, self.target_entropy)
        self.alpha_optimizer.zero_grad()
        loss.backward()
        self.alpha_optimizer.step()
        return {"alpha_loss": loss.item()}

    def _update_targets(self) -> None:
        """Polyak-average critic and actor targets (masks are copied by polyak_update)."""
        polyak_update(self.critic, self.critic_target, self.config.tau)
        polyak_update(self.actor, self.actor_target, self.config.tau)
