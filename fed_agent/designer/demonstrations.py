"""Demonstrations: exact optima of training markets, for the designer to imitate.

The exact solver (``fed_agent.contracts.solvers.optimal_contract``) is too slow for a round
of a thousand ESs (docs/designer.md, "Design time"), but it can label training markets
offline. :func:`solve_demonstrations` draws markets from a designer's training ranges, solves
each exactly and turns the optimal menus into the actions that express them
(:func:`~fed_agent.designer.mdp.menus_to_actions`, exact for every optimum:
benchmarks/results/mapping_expressiveness.csv). The training loop clones them into the
actor before and while it learns from rewards (:func:`fed_agent.designer.training.train_designer`),
which is how Diffusion-QL regularises its actor and how the learned designer becomes an
amortised exact solver: one forward pass instead of one cutting-plane solve per market.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fed_agent.contracts import Market, MarketBatch, MarketRanges, named_market, sample_market
from fed_agent.contracts.solvers import optimal_contract
from fed_agent.designer.config import TRAINING_RANGES
from fed_agent.designer.mdp import designer_reward, menus_to_actions, state_features
from fed_agent.seeding import derive_seed

DEMONSTRATION_KEY = 5  # seed-stream key (training 2, held-out 3, torch 4)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Demonstrations:
    """Exactly solved training markets as (state, optimal action, reward) triples.

    Attributes
    ----------
    states, actions : Tensor
        (N, state_dim) and (N, action_dim), float32.
    rewards : Tensor
        (N,) the designer reward of each optimal menu (for a replay buffer).
    solve_s : float
        Wall time the exact solver spent on them.
    failures : int
        Markets the solver could not solve (skipped, and logged).
    """

    states: Tensor
    actions: Tensor
    rewards: Tensor
    solve_s: float
    failures: int

    def __len__(self) -> int:
        return int(self.states.shape[0])

    def sample(self, size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """A minibatch of ``size`` (states, actions), drawn with replacement."""
        index = torch.randint(0, len(self), (size,), generator=generator)
        return self.states[index], self.actions[index]

    def save(self, path: str | Path) -> Path:
        """Write to a pickle-free ``.npz`` (so that several trainings can share one solve)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            path,
            states=self.states.numpy(),
            actions=self.actions.numpy(),
            rewards=self.rewards.numpy(),
            solve_s=np.array(self.solve_s),
            failures=np.array(self.failures),
        )
        return path

    @classmethod
    def load(cls, path: str | Path) -> Demonstrations:
        """Read what :meth:`save` wrote."""
        with np.load(path, allow_pickle=False) as data:
            return cls(
                torch.from_numpy(data["states"]),
                torch.from_numpy(data["actions"]),
                torch.from_numpy(data["rewards"]),
                float(data["solve_s"]),
                int(data["failures"]),
            )


def demonstration_markets(
    market: str, num_types: int, count: int, seed: int, ranges: MarketRanges | None = None
) -> list[Market]:
    """``count`` markets drawn like the training markets, from their own seed stream."""
    if market not in TRAINING_RANGES:
        return [named_market(market)] * count
    rng = np.random.default_rng(derive_seed(seed, DEMONSTRATION_KEY))
    ranges = ranges if ranges is not None else TRAINING_RANGES[market]
    return [sample_market(rng, ranges, num_types) for _ in range(count)]


def solve_demonstrations(
    markets: Iterable[Market], reward_scale_frac: float, violation_penalty: float
) -> Demonstrations:
    """Solve every market exactly and keep (state, optimal action, reward).

    ``markets`` may be any iterable (a progress bar). A market object that appears more than
    once (a fixed task's market, repeated) is solved once. A market the solver fails on is
    skipped and counted (logged once at the end); if it fails on every market, a ValueError
    says so.
    """
    start = time.perf_counter()
    solved, optima, failures = [], [], 0
    known: dict[int, object] = {}  # id of a market object seen -> its optimum (None: failed)
    for market in markets:
        if id(market) in known:
            if known[id(market)] is None:
                failures += 1
            else:
                optima.append(known[id(market)])
                solved.append(market)
            continue
        try:
            optimum = optimal_contract(market)
        except RuntimeError as error:  # a cutting-plane LP that HiGHS could not finish
            log.debug("demonstration market skipped: %s", error)
            failures += 1
            known[id(market)] = None
            continue
        known[id(market)] = optimum
        optima.append(optimum)
        solved.append(market)
    if failures:
        total = failures + len(solved)
        log.warning("exact solver failed on %d of %d demonstration markets", failures, total)
    if not solved:
        raise ValueError("the exact solver failed on every demonstration market")
    batch = MarketBatch.from_markets(solved)
    f1 = np.stack([o.contract.f1 for o in optima])
    f2 = np.stack([o.contract.f2 for o in optima])
    utility = np.array([o.cloud_utility for o in optima])
    rewards = designer_reward(
        utility, np.zeros(len(solved)), batch, reward_scale_frac, violation_penalty
    )
    return Demonstrations(
        torch.from_numpy(state_features(batch)),
        torch.from_numpy(menus_to_actions(f1, f2, batch).astype(np.float32)),
        torch.from_numpy(rewards.astype(np.float32)),
        time.perf_counter() - start,
        failures,
    )
