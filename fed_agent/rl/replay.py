"""A fixed-size FIFO replay buffer of transitions, stored as preallocated tensors."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Batch:
    """A batch of transitions; every tensor's first dimension is the batch.

    Attributes
    ----------
    states : Tensor
        (batch, state_dim).
    actions : Tensor
        (batch, action_dim), in [-1, 1].
    rewards : Tensor
        (batch,).
    next_states : Tensor
        (batch, state_dim).
    dones : Tensor
        (batch,), 1.0 where the episode ended (always, for one-step episodes).
    """

    states: Tensor
    actions: Tensor
    rewards: Tensor
    next_states: Tensor
    dones: Tensor


class ReplayBuffer:
    """Ring buffer of transitions with uniform sampling from an explicit generator.

    Parameters
    ----------
    capacity : int
        Maximum number of transitions kept; the oldest are overwritten.
    state_dim, action_dim : int
        Widths of states and actions.
    """

    def __init__(self, capacity: int, state_dim: int, action_dim: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.states = torch.zeros(capacity, state_dim)
        self.actions = torch.zeros(capacity, action_dim)
        self.rewards = torch.zeros(capacity)
        self.next_states = torch.zeros(capacity, state_dim)
        self.dones = torch.zeros(capacity)
        self._cursor = 0
        self._size = 0

    def __len__(self) -> int:
        """Number of transitions stored."""
        return self._size

    def add(self, batch: Batch) -> None:
        """Append a batch of transitions (wrapping around when full)."""
        count = batch.states.shape[0]
        index = (self._cursor + torch.arange(count)) % self.capacity
        self.states[index] = batch.states
        self.actions[index] = batch.actions
        self.rewards[index] = batch.rewards
        self.next_states[index] = batch.next_states
        self.dones[index] = batch.dones
        self._cursor = int((self._cursor + count) % self.capacity)
        self._size = min(self._size + count, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Batch:
        """Draw ``batch_size`` transitions uniformly with replacement."""
        if self._size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        index = torch.randint(self._size, (batch_size,), generator=generator)
        return Batch(
            self.states[index],
            self.actions[index],
            self.rewards[index],
            self.next_states[index],
            self.dones[index],
        )

    def recent_states(self, count: int) -> Tensor:
        """Up to ``count`` most recently stored states, shape (<= count, state_dim)."""
        count = min(count, self._size)
        index = (self._cursor - 1 - torch.arange(count)) % self.capacity
        return self.states[index]


def one_step_batch(states: Tensor, actions: Tensor, rewards: Tensor) -> Batch:
    """Transitions of one-step episodes: next state = state (unused), done = 1."""
    return Batch(states, actions, rewards, states.clone(), torch.ones_like(rewards))
