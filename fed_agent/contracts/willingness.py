"""Sampling of each ES's private willingness types by the Markov chain of the market."""

from __future__ import annotations

import numpy as np

from fed_agent.contracts.market import Market


def sample_initial_types(market: Market, rng: np.random.Generator, n: int) -> np.ndarray:
    """Period-1 type indices of ``n`` ESs drawn from the prior rho, shape (n,)."""
    return rng.choice(market.num_types, size=n, p=market.prior)


def next_types(market: Market, rng: np.random.Generator, current: np.ndarray) -> np.ndarray:
    """One step of the chain for every ES: type j with probability P[current, j]."""
    current = np.asarray(current, dtype=int)
    cumulative = np.cumsum(market.transition[current], axis=1)
    draws = rng.random(current.shape)[..., None]
    # min() guards the last column against a cumulative sum that rounds below 1
    return np.minimum((draws > cumulative).sum(axis=-1), market.num_types - 1)


def willingness_path(
    market: Market,
    rng: np.random.Generator,
    num_epochs: int,
    num_es: int | None = None,
    initial: np.ndarray | None = None,
) -> np.ndarray:
    """Type indices of ESs over ``num_epochs`` epochs of two periods each.

    Period-1 types of the first epoch come from the prior (or ``initial``); every later
    period, including the next epoch's period 1, follows P from the type before it.

    Returns
    -------
    np.ndarray
        Shape (num_epochs, 2) for one ES (``num_es`` None), else (num_es, num_epochs, 2).
    """
    count = 1 if num_es is None else num_es
    types = sample_initial_types(market, rng, count) if initial is None else np.asarray(initial)
    path = np.empty((count, num_epochs, 2), dtype=int)
    for epoch in range(num_epochs):
        for period in range(2):
            if epoch or period:
                types = next_types(market, rng, types)
            path[:, epoch, period] = types
    return path[0] if num_es is None else path
