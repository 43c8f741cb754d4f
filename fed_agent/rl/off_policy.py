"""What the off-policy learners share: a replay buffer's sizes, the entropy temperature,
exploration by the stochastic policy, the clipped gradient step and the state of their networks
(SAC with a diffusion or a Gaussian actor)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


class OffPolicyLearner:
    """Mixin of :class:`~fed_agent.rl.sac.DiffusionSAC` and
    :class:`~fed_agent.rl.gaussian_sac.GaussianSAC`; ``config`` has ``batch_size``,
    ``buffer_size``, ``grad_clip_norm``, ``alpha`` and ``auto_alpha``, and ``log_alpha`` is the
    tuned temperature."""

    on_policy = False
    """Learns from a replay buffer of any behaviour's transitions."""
    config: Any
    log_alpha: Tensor
    networks: tuple[str, ...] = ()
    """Attribute names of the learner's networks, in the order :meth:`state_dict` keeps."""

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

    def _step(self, optimizer: torch.optim.Optimizer, loss: Tensor, module: nn.Module) -> None:
        """Backpropagate ``loss`` and step ``optimizer`` with gradient-norm clipping."""
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(module.parameters(), self.config.grad_clip_norm)
        optimizer.step()

    def state_dict(self) -> dict[str, dict[str, Tensor]]:
        """The weights and buffers (masks included) of :attr:`networks`, keyed by network
        name, and the temperature."""
        state = {name: getattr(self, name).state_dict() for name in self.networks}
        return {**state, "log_alpha": {"value": self.log_alpha.detach().reshape(1)}}

    def load_state_dict(self, state: dict[str, dict[str, Tensor]]) -> None:
        """Restore what :meth:`state_dict` returned."""
        for name in self.networks:
            getattr(self, name).load_state_dict(state[name])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"]["value"][0])
