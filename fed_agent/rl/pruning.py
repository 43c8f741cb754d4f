"""Dynamic structured pruning of the diffusion actor's hidden neurons.

Structured = whole neurons (a row of a layer's weight matrix, its bias and the matching
column of the next layer) are switched off, so a pruned actor can be rebuilt as a smaller
dense network (:func:`compact_denoiser`) and really runs faster.

Dynamic = the masks are recomputed at the start of every episode (every batch of one-step
episodes in the designer) from the *dense* network: the weights of a pruned neuron are kept,
its score is recomputed like any other, and it comes back as soon as it outranks an active
neuron. Both the actor and its target copy get the same masks.

Importance criterion (activation-weighted outgoing norm)::

    score_j = E_probe[ |h_j| ] * || W_next[:, j] ||_2

where h_j is the neuron's post-activation output in the dense network (all masks lifted) on
a probe batch of (noisy action, step, state) inputs, and W_next is the weight matrix of the
layer it feeds. The product is the expected size of the neuron's contribution to the next
layer's pre-activation, a first-order estimate of how much the network output moves when
the neuron is removed; it needs one dense forward pass and no gradients. In each hidden
layer exactly round(rate * width) lowest-scoring neurons are masked (ties broken by index).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from fed_agent.rl.denoiser import Denoiser


@torch.no_grad()
def neuron_importance(
    denoiser: Denoiser, noisy_actions: Tensor, steps: Tensor, states: Tensor
) -> list[Tensor]:
    """Score every hidden neuron of the dense network (all masks lifted) on a probe batch.

    Parameters
    ----------
    denoiser : Denoiser
        The network to score; its masks are restored before returning.
    noisy_actions : Tensor
        Probe inputs, shape (batch, action_dim).
    steps : Tensor
        Shape (batch,), integer denoising steps.
    states : Tensor
        Shape (batch, state_dim).

    Returns
    -------
    list[Tensor]
        One score vector per hidden layer, shape (width_l,), non-negative.
    """
    saved = [mask.clone() for mask in denoiser.masks()]
    denoiser.set_masks([torch.ones_like(mask) for mask in saved])
    try:
        activations = denoiser.features(noisy_actions, steps, states)
    finally:
        denoiser.set_masks(saved)
    next_layers: list[nn.Linear] = [*list(denoiser.hidden)[1:], denoiser.output]
    return [
        h.abs().mean(dim=0) * layer.weight.norm(dim=0)
        for h, layer in zip(activations, next_layers, strict=True)
    ]


def structured_masks(scores: Sequence[Tensor], rate: float) -> list[Tensor]:
    """Mask the round(rate * width) lowest-scoring neurons of each layer.

    Parameters
    ----------
    scores : Sequence[Tensor]
        One score vector per layer, shape (width_l,).
    rate : float
        Fraction of each layer's neurons to prune, in [0, 1).

    Returns
    -------
    list[Tensor]
        Float masks of shape (width_l,) with exactly width_l - round(rate * width_l) ones.
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"prune rate must be in [0, 1), got {rate}")
    masks = []
    for score in scores:
        num_pruned = round(rate * score.numel())
        # a stable sort makes the tie-break (lower index pruned first) deterministic
        order = torch.sort(score, stable=True).indices
        mask = torch.ones_like(score)
        mask[order[:num_pruned]] = 0.0
        masks.append(mask)
    return masks


def active_neuron_fraction(denoiser: Denoiser) -> float:
    """Fraction of the denoiser's hidden neurons whose mask is 1."""
    masks = denoiser.masks()
    return float(sum(m.sum() for m in masks) / sum(m.numel() for m in masks))


class DynamicPruner:
    """Recompute neuron masks from the dense actor and apply them to actor and target.

    Parameters
    ----------
    rate : float
        Fraction rho of each hidden layer's neurons to mask, in [0, 1).
    """

    def __init__(self, rate: float) -> None:
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"prune rate must be in [0, 1), got {rate}")
        self.rate = rate

    @torch.no_grad()
    def update(
        self,
        actor: Denoiser,
        target: Denoiser | None,
        states: Tensor,
        generator: torch.Generator | None = None,
        num_steps: int = 1,
    ) -> list[Tensor]:
        """Score ``actor`` on probe states and install the new masks on actor and target.

        Parameters
        ----------
        actor : Denoiser
            The online denoiser, scored densely.
        target : Denoiser or None
            The target copy, which receives the same masks.
        states : Tensor
            Probe states, shape (batch, state_dim); paired with N(0, I) noisy actions and
            uniformly drawn steps in [0, num_steps).
        generator : torch.Generator, optional
            Source of the probe's noise and steps.
        num_steps : int
            Number of denoising steps T of the actor.

        Returns
        -------
        list[Tensor]
            The installed masks, one per hidden layer.
        """
        batch = states.shape[0]
        noisy = torch.randn(batch, actor.action_dim, generator=generator)
        steps = torch.randint(num_steps, (batch,), generator=generator)
        masks = structured_masks(neuron_importance(actor, noisy, steps, states), self.rate)
        actor.set_masks(masks)
        if target is not None:
            target.set_masks(masks)
        return masks


@torch.no_grad()
def zero_pruned_weights(denoiser: Denoiser) -> Denoiser:
    """A copy whose masked neurons have zero incoming weights, bias and outgoing weights.

    Its masks are all ones, so it is the dense network with the pruned weights zeroed; it
    must compute exactly what the masked network computes (tested).
    """
    dense = copy.deepcopy(denoiser)
    next_layers: list[nn.Linear] = [*list(dense.hidden)[1:], dense.output]
    for layer, next_layer, mask in zip(dense.hidden, next_layers, dense.masks(), strict=True):
        off = mask == 0
        layer.weight[off] = 0.0
        layer.bias[off] = 0.0
        next_layer.weight[:, off] = 0.0
    dense.set_masks([torch.ones_like(mask) for mask in dense.masks()])
    return dense


@torch.no_grad()
def compact_denoiser(denoiser: Denoiser) -> Denoiser:
    """A smaller dense denoiser holding only the active neurons (same outputs, less compute).

    Returns
    -------
    Denoiser
        Hidden widths equal the number of active neurons per layer; masks all ones.
    """
    keep = [mask.bool() for mask in denoiser.masks()]
    sizes = [int(k.sum()) for k in keep]
    small = Denoiser(denoiser.state_dim, denoiser.action_dim, sizes, denoiser.time_dim)
    previous = torch.ones(denoiser.hidden[0].in_features, dtype=torch.bool)
    for big, little, rows in zip(denoiser.hidden, small.hidden, keep, strict=True):
        little.weight.copy_(big.weight[rows][:, previous])
        little.bias.copy_(big.bias[rows])
        previous = rows
    small.output.weight.copy_(denoiser.output.weight[:, previous])
    small.output.bias.copy_(denoiser.output.bias)
    return small
