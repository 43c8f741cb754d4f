"""Sampling ESs keeps their exact 64-bit node ids and is seeded."""

from __future__ import annotations

import numpy as np

from strategies.sampling import sample_nodes

# Flower node ids are random unsigned 64-bit integers, many above 2**63 and 2**53
IDS = [18092599130111578175, 14969620706033243712, 7111317006720038323, 2**64 - 1, 12345]


def test_sampled_ids_are_exactly_the_connected_ids():
    picked = sample_nodes(IDS, 3, np.random.default_rng(0))
    assert len(picked) == 3 and set(picked) <= set(IDS)
    assert all(isinstance(n, int) for n in picked)


def test_sampling_is_seeded_and_takes_everyone_when_k_is_large():
    assert sample_nodes(IDS, 2, np.random.default_rng(5)) == sample_nodes(
        IDS, 2, np.random.default_rng(5)
    )
    assert sample_nodes(IDS, 10, np.random.default_rng(0)) == IDS
