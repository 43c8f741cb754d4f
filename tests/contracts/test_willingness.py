"""Willingness paths follow the Markov chain of the market."""

from __future__ import annotations

import numpy as np

from fed_agent.contracts import named_market, sample_initial_types, willingness_path


def test_identity_chain_keeps_every_type() -> None:
    market = named_market("default").replace(transition=np.eye(3))
    path = willingness_path(market, np.random.default_rng(0), 5, num_es=20)
    assert path.shape == (20, 5, 2)
    assert np.all(path == path[:, :1, :1])


def test_empirical_transitions_match_the_matrix() -> None:
    market = named_market("persistent")
    rng = np.random.default_rng(1)
    path = willingness_path(market, rng, 50, num_es=400).reshape(400, -1)
    counts = np.zeros((3, 3))
    np.add.at(counts, (path[:, :-1].ravel(), path[:, 1:].ravel()), 1)
    empirical = counts / counts.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(empirical, market.transition, atol=0.02)
    assert np.all(counts[0, 2] == 0)  # no jump over a neighbour in the default chain


def test_initial_types_follow_the_prior_and_single_path_shape() -> None:
    market = named_market("paper").replace(prior=np.array([0.0, 0.0, 1.0, 0.0, 0.0]))
    assert np.all(sample_initial_types(market, np.random.default_rng(2), 50) == 2)
    assert willingness_path(market, np.random.default_rng(3), 4).shape == (4, 2)
