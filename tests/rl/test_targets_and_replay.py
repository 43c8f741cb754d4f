"""Polyak update, replay buffer and pickle-free checkpoints."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from fed_agent.rl.checkpoint import load_checkpoint, save_checkpoint
from fed_agent.rl.denoiser import Denoiser
from fed_agent.rl.replay import ReplayBuffer, one_step_batch
from fed_agent.rl.targets import polyak_update
from fed_agent.seeding import torch_generator


def test_polyak_update_equals_the_formula_and_copies_buffers() -> None:
    torch.manual_seed(0)
    online, target = Denoiser(3, 2, (8,)), Denoiser(3, 2, (8,))
    online.set_masks([torch.tensor([0.0, 1, 1, 0, 1, 1, 1, 1])])
    old_target = copy.deepcopy(target)
    polyak_update(online, target, tau=0.1)
    for p_new, p_old, p_online in zip(
        target.parameters(), old_target.parameters(), online.parameters(), strict=True
    ):
        assert torch.allclose(p_new, 0.9 * p_old + 0.1 * p_online, atol=1e-7)
    assert torch.equal(target.masks()[0], online.masks()[0])


def test_polyak_update_rejects_tau_outside_unit_interval() -> None:
    with pytest.raises(ValueError, match="tau"):
        polyak_update(nn.Linear(1, 1), nn.Linear(1, 1), tau=1.5)


def test_replay_buffer_wraps_and_samples_stored_transitions() -> None:
    buffer = ReplayBuffer(capacity=5, state_dim=2, action_dim=1)
    for start in (0, 3):
        states = torch.arange(start, start + 3, dtype=torch.float32)[:, None].repeat(1, 2)
        buffer.add(one_step_batch(states, torch.zeros(3, 1), states[:, 0]))
    assert len(buffer) == 5
    # transitions 0 was overwritten by 5; the stored rewards are {1, 2, 3, 4, 5}
    assert sorted(buffer.rewards.tolist()) == [1.0, 2.0, 3.0, 4.0, 5.0]
    batch = buffer.sample(64, torch_generator(0))
    assert set(batch.rewards.tolist()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert torch.equal(batch.dones, torch.ones(64))
    assert buffer.recent_states(2)[:, 0].tolist() == [5.0, 4.0]


def test_checkpoint_round_trips_tensors_and_header(tmp_path) -> None:
    net = Denoiser(3, 2, (8,))
    path = save_checkpoint(tmp_path / "x.npz", {"actor": net.state_dict()}, {"k": [1, 2]})
    state, header = load_checkpoint(path)
    assert header == {"k": [1, 2]}
    for name, tensor in net.state_dict().items():
        assert torch.equal(state["actor"][name], tensor)
