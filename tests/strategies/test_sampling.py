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


def test_a_draw_picks_the_same_positions_whatever_ids_the_nodes_have():
    # node i holds partition i in both runs; Flower drew other ids, in another numeric order
    run_a = [18092599130111578175, 7111317006720038323, 12345, 2**64 - 1, 99]
    run_b = [5, 2**63 + 7, 3, 1, 2**62]
    picked_a = sample_nodes(run_a, 3, np.random.default_rng(11))
    picked_b = sample_nodes(run_b, 3, np.random.default_rng(11))
    assert [run_a.index(n) for n in picked_a] == [run_b.index(n) for n in picked_b]
    assert [run_a.index(n) for n in picked_a] == sorted(run_a.index(n) for n in picked_a)
