"""Target-network updates."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def polyak_update(online: nn.Module, target: nn.Module, tau: float) -> None:
    """Move every target parameter towards its online twin: p_t <- (1 - tau) p_t + tau p_o.

    Buffers (e.g. pruning masks) are copied, not averaged, since a blended mask means nothing.

    Parameters
    ----------
    online, target : nn.Module
        Modules of identical structure.
    tau : float
        Step size in [0, 1]; 1 copies the online network.
    """
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau must be in [0, 1], got {tau}")
    for p_online, p_target in zip(online.parameters(), target.parameters(), strict=True):
        p_target.mul_(1 - tau).add_(p_online, alpha=tau)
    for b_online, b_target in zip(online.buffers(), target.buffers(), strict=True):
        b_target.copy_(b_online)
