"""Learners: entropy estimate, pure losses, finite updates, targets move by Polyak steps."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from fed_agent.rl.gaussian_sac import GaussianSAC, GaussianSACConfig
from fed_agent.rl.ppo import PPO, PPOConfig, RolloutBatch, clipped_surrogate_loss
from fed_agent.rl.replay import one_step_batch
from fed_agent.rl.sac import (
    DiffusionSAC,
    EDMSACConfig,
    actor_loss,
    critic_loss,
    estimate_entropy,
    soft_q_target,
)
from fed_agent.seeding import torch_generator

STATE_DIM, ACTION_DIM = 5, 3
SMALL = {"hidden_sizes": [16, 16], "critic_hidden_sizes": [16, 16], "batch_size": 32}


def batch(seed: int = 0, size: int = 32):
    gen = torch_generator(seed)
    states = torch.randn(size, STATE_DIM, generator=gen)
    actions = torch.rand(size, ACTION_DIM, generator=gen) * 2 - 1
    return one_step_batch(states, actions, -actions.pow(2).sum(-1))


def test_entropy_estimate_matches_gaussian_entropy() -> None:
    sigma = torch.tensor([0.1, 0.5, 2.0])
    samples = torch.randn(4, 20_000, 3, generator=torch_generator(0)) * sigma
    exact = float(0.5 * torch.log(2 * math.pi * math.e * sigma**2).sum())
    estimate = estimate_entropy(samples)
    assert estimate.shape == (4,)
    assert torch.allclose(estimate, torch.full((4,), exact), atol=0.03)


def test_entropy_estimate_grows_with_spread_and_needs_two_samples() -> None:
    base = torch.randn(2, 8, 3, generator=torch_generator(1))
    assert bool((estimate_entropy(2 * base) > estimate_entropy(base)).all())
    with pytest.raises(ValueError, match="M >= 2"):
        estimate_entropy(base[:, :1])


def test_pure_losses_match_their_formulas() -> None:
    q1, q2, target = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 2.0]), torch.tensor([1.0, 1.0])
    assert float(critic_loss(q1, q2, target)) == pytest.approx(0.5 + 1.0)
    assert float(actor_loss(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 0.0]), 0.5)) == -2.5
    r, d = torch.tensor([1.0, 1.0]), torch.tensor([0.0, 1.0])
    y = soft_q_target(r, d, torch.tensor([2.0, 2.0]), torch.tensor([1.0, 1.0]), 0.1, 0.9)
    assert y.tolist() == pytest.approx([1.0 + 0.9 * 2.1, 1.0])
    ratio, adv = torch.tensor([1.5, 0.5]), torch.tensor([1.0, -1.0])
    assert float(clipped_surrogate_loss(ratio, adv, 0.2)) == pytest.approx(-(1.2 - 0.8) / 2)


@pytest.mark.parametrize("prune_rate", [0.0, 0.5])
def test_diffusion_sac_update_is_finite_and_moves_targets_by_polyak(prune_rate: float) -> None:
    agent = DiffusionSAC(STATE_DIM, ACTION_DIM, EDMSACConfig(**SMALL, prune_rate=prune_rate), 0)
    data = batch()
    info = agent.begin_episode(data.states)
    assert info["active_neuron_frac"] == pytest.approx(1 - prune_rate)
    old_target = copy.deepcopy(agent.critic_target)
    metrics = agent.update(data)
    assert {"critic_loss", "actor_loss", "entropy", "alpha"} <= metrics.keys()
    assert all(math.isfinite(v) for v in metrics.values())
    tau = agent.config.tau
    for new, old, online in zip(
        agent.critic_target.parameters(),
        old_target.parameters(),
        agent.critic.parameters(),
        strict=True,
    ):
        assert torch.allclose(new, (1 - tau) * old + tau * online, atol=1e-6)
    assert torch.equal(agent.actor_target.denoiser.masks()[0], agent.actor.denoiser.masks()[0])


def test_diffusion_sac_is_deterministic_under_a_seed() -> None:
    def run() -> torch.Tensor:
        agent = DiffusionSAC(STATE_DIM, ACTION_DIM, EDMSACConfig(**SMALL), seed=4)
        data = batch()
        agent.begin_episode(data.states)
        for _ in range(3):
            agent.update(data)
        return agent.act(data.states)

    assert torch.equal(run(), run())


class KnownCritic(torch.nn.Module):
    """Q(s, a) = -|a - optimum|^2 for both heads: the actor's only job is to find optimum."""

    def __init__(self, optimum: torch.Tensor) -> None:
        super().__init__()
        self.optimum = optimum

    def q_min(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return -(actions - self.optimum).pow(2).sum(-1)


def test_diffusion_actor_ascends_a_known_critic_including_a_bound_optimum() -> None:
    agent = DiffusionSAC(STATE_DIM, ACTION_DIM, EDMSACConfig(**SMALL, prune_rate=0.25), 0)
    optimum = torch.tensor([0.5, -0.3, 1.0])  # the last coordinate sits on the bound
    agent.critic = KnownCritic(optimum)
    states = torch.randn(32, STATE_DIM, generator=torch_generator(1))
    before = float(-agent.critic.q_min(states, agent.act(states)).mean())
    for _ in range(100):
        agent.begin_episode(states)
        agent._update_actor(states)
    after = float(-agent.critic.q_min(states, agent.act(states)).mean())
    assert after < 0.02 < 0.5 < before


def test_gaussian_sac_update_is_finite_and_actions_bounded() -> None:
    agent = GaussianSAC(STATE_DIM, ACTION_DIM, GaussianSACConfig(**SMALL), 0)
    metrics = agent.update(batch())
    assert all(math.isfinite(v) for v in metrics.values())
    actions = agent.act(torch.randn(10, STATE_DIM) * 50)
    assert float(actions.abs().max()) <= 1.0


def test_ppo_update_moves_policy_towards_higher_reward() -> None:
    agent = PPO(STATE_DIM, ACTION_DIM, PPOConfig(hidden_sizes=[16], minibatch_size=128, lr=3e-3), 0)
    states = torch.zeros(256, STATE_DIM)
    for _ in range(15):
        actions, log_probs = agent.explore(states)
        rewards = -(actions - 0.5).pow(2).sum(-1)
        metrics = agent.update(RolloutBatch(states, actions, log_probs, rewards))
    assert all(math.isfinite(v) for v in metrics.values())
    mean = agent.act(states[:1], deterministic=True)
    assert float((mean - 0.5).abs().max()) < 0.2


def _learners() -> dict[str, object]:
    return {
        "edmsac": DiffusionSAC(STATE_DIM, ACTION_DIM, EDMSACConfig(**SMALL, prune_rate=0.5), 0),
        "dmsac": DiffusionSAC(STATE_DIM, ACTION_DIM, EDMSACConfig(**SMALL, prune_rate=0.0), 0),
        "sac": GaussianSAC(STATE_DIM, ACTION_DIM, GaussianSACConfig(**SMALL), 0),
        "ppo": PPO(STATE_DIM, ACTION_DIM, PPOConfig(hidden_sizes=[16, 16]), 0),
    }


@pytest.mark.parametrize("name", ["edmsac", "dmsac", "sac", "ppo"])
def test_imitation_clones_a_deterministic_teacher(name: str) -> None:
    """Behaviour cloning of a smooth state -> action map: the deterministic action (the
    target actor for the diffusion learners) ends far closer to the teacher than it starts."""
    learner = _learners()[name]
    gen = torch_generator(1)
    weights = torch.randn(STATE_DIM, ACTION_DIM, generator=gen) * 0.4
    states = torch.randn(512, STATE_DIM, generator=gen)
    teacher = torch.tanh(states @ weights)

    def error() -> float:
        return float((learner.act(states, deterministic=True) - teacher).pow(2).mean())

    before = error()
    for step in range(600):
        index = torch.randint(0, 512, (64,), generator=gen)
        if step % 8 == 0:
            learner.begin_episode(states[:64])
        metrics = learner.imitate(states[index], teacher[index])
    assert math.isfinite(metrics["imitation_loss"])
    assert error() < 0.25 * before, (before, error())


def test_diffusion_imitation_loss_is_zero_for_a_denoiser_that_predicts_the_target() -> None:
    """For x_0 prediction the loss regresses the denoiser's output on the clean action."""
    learner = DiffusionSAC(STATE_DIM, ACTION_DIM, EDMSACConfig(**SMALL, prune_rate=0.0), 0)
    actor = learner.actor
    states = torch.randn(16, STATE_DIM, generator=torch_generator(2))
    actions = torch.rand(16, ACTION_DIM, generator=torch_generator(3)) * 2 - 1
    loss = actor.imitation_loss(states, actions, torch_generator(4))
    assert loss.item() > 0
    with torch.no_grad():  # a denoiser whose last layer outputs the (constant) target
        target = actions[0]
        last = [m for m in actor.denoiser.modules() if isinstance(m, torch.nn.Linear)][-1]
        last.weight.zero_()
        last.bias.copy_(target)
    same = actions[:1].expand(16, -1)
    assert actor.imitation_loss(states, same, torch_generator(4)).item() < 1e-12
