"""The denoiser of the diffusion actor: an MLP that predicts the noise in a noisy action.

Input is the concatenation (noisy action, sinusoidal embedding of the step t, state). Every
hidden layer is a ``Linear`` followed by Mish and by a per-neuron mask (a buffer of ones
and zeros), which is how dynamic structured pruning switches neurons off without touching
the weights (``fed_agent.rl.pruning``). The time embedding has no learned layers, so every
hidden neuron of the actor is a prunable neuron and "active neuron fraction" means one thing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

EMBEDDING_MAX_PERIOD = 10_000.0


def sinusoidal_embedding(steps: Tensor, dim: int) -> Tensor:
    """Transformer-style sinusoidal embedding of integer steps.

    Parameters
    ----------
    steps : Tensor
        Shape (batch,), integer or float step indices.
    dim : int
        Even embedding width.

    Returns
    -------
    Tensor
        Shape (batch, dim): [sin(t w_k), cos(t w_k)] with w_k = 10000^(-k/(dim/2 - 1)).
    """
    if dim % 2 != 0 or dim < 4:
        raise ValueError(f"embedding dim must be even and >= 4, got {dim}")
    half = dim // 2
    freqs = torch.exp(
        -math.log(EMBEDDING_MAX_PERIOD)
        * torch.arange(half, device=steps.device, dtype=torch.float32)
        / (half - 1)
    )
    angles = steps.to(torch.float32)[:, None] * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class Denoiser(nn.Module):
    """Noise-prediction MLP eps_theta(x_t, t, s) with maskable hidden neurons.

    Parameters
    ----------
    state_dim : int
        Width of the conditioning state.
    action_dim : int
        Width of the action (and of the predicted noise).
    hidden_sizes : Sequence[int]
        Width of each hidden layer, e.g. (128, 128).
    time_dim : int
        Width of the sinusoidal step embedding.
    """

    def __init__(
        self,
        state_dim: int,
        action_dim: int,
        hidden_sizes: Sequence[int] = (128, 128),
        time_dim: int = 16,
    ) -> None:
        super().__init__()
        if not hidden_sizes:
            raise ValueError("the denoiser needs at least one hidden layer")
        self.state_dim = state_dim
        self.action_dim = action_dim
        self.time_dim = time_dim
        widths = [action_dim + time_dim + state_dim, *hidden_sizes]
        self.hidden = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.output = nn.Linear(widths[-1], action_dim)
        for index, width in enumerate(hidden_sizes):
            self.register_buffer(f"mask_{index}", torch.ones(width))

    @property
    def hidden_sizes(self) -> list[int]:
        """Width of each hidden layer."""
        return [layer.out_features for layer in self.hidden]

    def masks(self) -> list[Tensor]:
        """The neuron mask of each hidden layer, shapes (width_l,), values in {0, 1}."""
        return [getattr(self, f"mask_{index}") for index in range(len(self.hidden))]

    def set_masks(self, masks: Sequence[Tensor]) -> None:
        """Replace every hidden layer's neuron mask (copied in place, so buffers stay put)."""
        if len(masks) != len(self.hidden):
            raise ValueError(f"expected {len(self.hidden)} masks, got {len(masks)}")
        for current, new in zip(self.masks(), masks, strict=True):
            if current.shape != new.shape:
                raise ValueError(f"mask shape {tuple(new.shape)} != {tuple(current.shape)}")
            current.copy_(new)

    def features(self, noisy_action: Tensor, steps: Tensor, state: Tensor) -> list[Tensor]:
        """Masked activations of every hidden layer, shapes (batch, width_l)."""
        h = torch.cat([noisy_action, sinusoidal_embedding(steps, self.time_dim), state], dim=-1)
        activations = []
        for layer, mask in zip(self.hidden, self.masks(), strict=True):
            # Mish(0) = 0, so masking the output equals zeroing the neuron's weights and bias
            h = F.mish(layer(h)) * mask
            activations.append(h)
        return activations

    def forward(self, noisy_action: Tensor, steps: Tensor, state: Tensor) -> Tensor:
        """Predict the noise.

        Parameters
        ----------
        noisy_action : Tensor
            Shape (batch, action_dim).
        steps : Tensor
            Shape (batch,), integer steps in [0, T).
        state : Tensor
            Shape (batch, state_dim).

        Returns
        -------
        Tensor
            Shape (batch, action_dim).
        """
        return self.output(self.features(noisy_action, steps, state)[-1])
