"""Twin Q networks (clipped double-Q, Fujimoto et al. 2018) and the MLP builder they share."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


def mlp(in_dim: int, hidden_sizes: Sequence[int], out_dim: int) -> nn.Sequential:
    """A Mish MLP in_dim -> hidden_sizes -> out_dim with a linear output layer."""
    layers: list[nn.Module] = []
    width = in_dim
    for size in hidden_sizes:
        layers += [nn.Linear(width, size), nn.Mish()]
        width = size
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


class TwinQ(nn.Module):
    """Two independent critics Q1(s, a), Q2(s, a) built by the same helper.

    Parameters
    ----------
    state_dim, action_dim : int
        Input widths.
    hidden_sizes : Sequence[int]
        Hidden widths of each critic.
    """

    def __init__(self, state_dim: int, action_dim: int, hidden_sizes: Sequence[int]) -> None:
        super().__init__()
        self.q1 = mlp(state_dim + action_dim, hidden_sizes, 1)
        self.q2 = mlp(state_dim + action_dim, hidden_sizes, 1)

    def forward(self, states: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        """Both critics' values, each of shape (batch,)."""
        x = torch.cat([states, actions], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)

    def q_min(self, states: Tensor, actions: Tensor) -> Tensor:
        """The pessimistic value min(Q1, Q2), shape (batch,)."""
        q1, q2 = self(states, actions)
        return torch.minimum(q1, q2)
