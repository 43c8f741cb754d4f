"""Dynamic structured pruning: exact rates, masks that move, pruned == zeroed dense."""

from __future__ import annotations

import pytest
import torch

from fed_agent.rl.denoiser import Denoiser
from fed_agent.rl.pruning import (
    DynamicPruner,
    active_neuron_fraction,
    compact_denoiser,
    neuron_importance,
    structured_masks,
    zero_pruned_weights,
)
from fed_agent.seeding import torch_generator

STATE_DIM, ACTION_DIM = 6, 4


def probe(batch: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch_generator(seed)
    return (
        torch.randn(batch, ACTION_DIM, generator=gen),
        torch.randint(5, (batch,), generator=gen),
        torch.randn(batch, STATE_DIM, generator=gen),
    )


@pytest.mark.parametrize("rate", [0.0, 0.25, 0.4, 0.5])
def test_masks_prune_exactly_the_requested_rate_in_every_layer(rate: float) -> None:
    torch.manual_seed(0)
    net = Denoiser(STATE_DIM, ACTION_DIM, (40, 20))
    masks = DynamicPruner(rate).update(net, None, probe()[2], torch_generator(0))
    for mask, width in zip(masks, (40, 20), strict=True):
        assert int((mask == 0).sum()) == round(rate * width)
    assert active_neuron_fraction(net) == pytest.approx(1 - rate)


def test_lowest_scores_are_pruned_with_index_tie_break() -> None:
    masks = structured_masks([torch.tensor([3.0, 1.0, 1.0, 2.0])], 0.5)
    assert masks[0].tolist() == [1.0, 0.0, 0.0, 1.0]
    masks = structured_masks([torch.tensor([1.0, 1.0, 1.0, 1.0])], 0.25)
    assert masks[0].tolist() == [0.0, 1.0, 1.0, 1.0]


def test_importance_is_computed_on_the_dense_network() -> None:
    torch.manual_seed(0)
    net = Denoiser(STATE_DIM, ACTION_DIM, (16, 16))
    dense_scores = neuron_importance(net, *probe())
    net.set_masks([torch.zeros(16), torch.zeros(16)])
    assert all(
        torch.equal(a, b)
        for a, b in zip(dense_scores, neuron_importance(net, *probe()), strict=True)
    )
    assert all(float(m.sum()) == 0 for m in net.masks())


def test_pruned_network_equals_dense_network_with_masked_weights_zeroed() -> None:
    torch.manual_seed(1)
    net = Denoiser(STATE_DIM, ACTION_DIM, (32, 32))
    DynamicPruner(0.5).update(net, None, probe()[2], torch_generator(0))
    inputs = probe(64, seed=5)
    zeroed = zero_pruned_weights(net)
    assert active_neuron_fraction(zeroed) == 1.0
    torch.testing.assert_close(net(*inputs), zeroed(*inputs), rtol=0, atol=1e-6)
    compact = compact_denoiser(net)
    assert compact.hidden_sizes == [16, 16]
    torch.testing.assert_close(net(*inputs), compact(*inputs), rtol=0, atol=1e-6)


def test_masks_change_between_episodes_and_pruned_neurons_can_return() -> None:
    torch.manual_seed(2)
    net, target = Denoiser(STATE_DIM, ACTION_DIM, (32,)), Denoiser(STATE_DIM, ACTION_DIM, (32,))
    pruner = DynamicPruner(0.5)
    states = probe()[2]
    first = pruner.update(net, target, states, torch_generator(0))[0].clone()
    assert torch.equal(target.masks()[0], first)
    pruned = (first == 0).nonzero().flatten()
    with torch.no_grad():
        # the weights change (as training would): pruned neurons' outgoing weights grow
        net.output.weight[:, pruned] *= 100.0
    second = pruner.update(net, target, states, torch_generator(1))[0]
    assert not torch.equal(first, second)
    assert bool((second[pruned] == 1).all())
    assert int((second == 0).sum()) == 16
    assert torch.equal(target.masks()[0], second)


def test_prune_rate_outside_unit_interval_raises() -> None:
    with pytest.raises(ValueError, match="prune rate"):
        DynamicPruner(1.0)
