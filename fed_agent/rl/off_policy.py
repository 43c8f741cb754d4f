"""What the off-policy learners share: a replay buffer's sizes, the entropy temperature and
exploration by the stochastic policy (SAC with a diffusion or a Gaussian actor)."""

from __future__ import annotations

from typing import Any

from torch import Tensor


class OffPolicyLearner:
    """Mixin of :class:`~fed_agent.rl.sac.DiffusionSAC` and
    :class:`~fed_agent.rl.gaussian_sac.GaussianSAC`; ``config`` has ``batch_size``,
    ``buffer_size``, ``alpha`` and ``auto_alpha``, and ``log_alpha`` is the tuned temperature."""

    on_policy = False
    """Learns from a replay buffer of any behaviour's transitions."""
    config: Any
    log_alpha: Tensor

    @property
    def alpha(self) -> float:
        """Current entropy temperature."""
        return self.log_alpha.exp().item() if self.config.auto_alpha else self.config.alpha

    @property
    def batch_size(self) -> int:
        """Transitions per gradient step."""
        return self.config.batch_size

    @property
    def buffer_size(self) -> int:
        """Capacity of the replay buffer the caller keeps for this learner."""
        return self.config.buffer_size

    def act(self, states: Tensor, deterministic: bool = False) -> Tensor:
        raise NotImplementedError

    def explore(self, states: Tensor) -> tuple[Tensor, None]:
        """Behaviour actions for training (no log-probabilities: off-policy)."""
        return self.act(states), None
