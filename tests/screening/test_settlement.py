"""A round settled as a set: copies, means of peers and lazy updates are paid for the work they
deliver, honest updates in full, whatever the order of arrival.

Synthetic updates (pure numpy) shaped like the smoke model's round 1: honest ESs share one
learning direction (pairwise cosines up to ~0.98) plus their own data's part.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fed_agent.screening.config import ScreeningConfig
from fed_agent.screening.settlement import dependence_shares, dependent_groups, quality_of, settle

DIM = 1792  # the smoke model's LoRA parameters
CFG = ScreeningConfig(quality_clause=True)
COMMON = np.random.default_rng(0).normal(size=DIM)


def honest(seed: int, own: float = 0.2) -> np.ndarray:
    """The common direction plus ``own`` x an ES's own direction (cosines ~1 / (1 + own^2))."""
    return COMMON + own * np.random.default_rng(seed).normal(size=DIM)


def honest_round(n: int = 8) -> list[np.ndarray]:
    return [honest(s) for s in range(1, n + 1)]


def settled(deltas, gains=None):
    gains = [1.0] * len(deltas) if gains is None else gains
    return settle(deltas, gains, [1.0] * len(deltas), CFG)


def test_honest_updates_as_close_as_measured_share_nothing():
    updates = honest_round()
    units = np.stack([u / np.linalg.norm(u) for u in updates])
    closest = max(abs(units[i] @ units[j]) for i, j in itertools.combinations(range(8), 2))
    assert 0.95 < closest < 0.99  # as close as honest smoke-model ESs (up to 0.983-0.989)
    assert dependent_groups(updates, CFG.dependence_tolerance) == []
    assert [s.pay_fraction for s in settled(updates)] == [1.0] * 8


def test_a_copy_and_its_original_share_one_update_in_either_order():
    updates = honest_round()
    copy = 1.3 * updates[2]  # scaled: inside the norm band
    forward = settled([*updates, copy])
    backward = settled([copy, *updates])
    assert [s.pay_fraction for s in forward] == [1, 1, 0.5, 1, 1, 1, 1, 1, 0.5]
    assert [s.pay_fraction for s in backward] == [0.5, 1, 1, 0.5, 1, 1, 1, 1, 1]
    assert "dependent group" in forward[2].detail and forward[0].detail == ""


def test_shares_do_not_depend_on_the_order_of_arrival():
    updates = honest_round(6)
    sent = [*updates, (updates[0] + updates[1]) / 2, updates[3].copy(), updates[3].copy()]
    base = dependence_shares(sent, CFG.dependence_tolerance)
    for order in itertools.islice(itertools.permutations(range(len(sent))), 0, 200, 7):
        shares = dependence_shares([sent[i] for i in order], CFG.dependence_tolerance)
        np.testing.assert_allclose(shares, base[list(order)])
    # the mean of two peers: 3 updates of rank 2; three copies of one: rank 1
    np.testing.assert_allclose(base, [2 / 3, 2 / 3, 1, 1 / 3, 1, 1, 2 / 3, 1 / 3, 1 / 3])


def test_colluders_sending_one_update_are_paid_one_update_in_all():
    updates = honest_round(5)
    shared = honest(99)
    shares = dependence_shares([*updates, shared, 0.9 * shared, shared], CFG.dependence_tolerance)
    np.testing.assert_allclose(shares, [1] * 5 + [1 / 3] * 3)


def test_a_near_copy_with_noise_is_not_a_copy():
    """The documented limit: 1 % noise (cosine 0.995) already reads as an update of its own."""
    updates = honest_round(5)
    rng = np.random.default_rng(7)
    noise = rng.normal(size=DIM)
    noise -= (noise @ updates[0]) / (updates[0] @ updates[0]) * updates[0]
    near = updates[0] + 0.1 * np.linalg.norm(updates[0]) * noise / np.linalg.norm(noise)
    assert np.cos(np.arctan(0.1)) == pytest.approx(0.995, abs=1e-3)
    assert list(dependence_shares([*updates, near], CFG.dependence_tolerance)) == [1.0] * 6


def test_the_quality_clause_pays_lazy_work_by_its_gain_and_honest_work_in_full():
    updates = honest_round(6)
    # honest gains within 0.91-1.04x the median (measured), a stretched 1-step update 0.5x
    gains = [0.34, 0.32, 0.36, 0.35, 0.33, 0.17]
    result = settled(updates, gains)
    median = np.median(gains)
    assert [s.pay_fraction for s in result[:5]] == [1.0] * 5
    assert result[5].pay_fraction == pytest.approx(0.17 / median)
    assert result[5].quality == pytest.approx(0.17 / median)
    assert "gain" in result[5].detail
    # a harmful update is paid nothing
    assert settled(updates, [0.34, 0.32, 0.36, 0.35, 0.33, -0.1])[5].pay_fraction == 0.0


def test_the_expected_gain_scales_with_the_expected_norm_of_the_effort():
    gains = [0.2, 0.4, 0.4, 0.4]
    quality = quality_of(gains, [0.5, 1.0, 1.0, 1.0], CFG)
    np.testing.assert_allclose(quality, [1.0, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(quality_of([0.1, 0.4, 0.4, 0.4], [0.5, 1, 1, 1], CFG)[0], 0.5)


def test_the_quality_clause_is_void_without_peers_or_without_gain():
    assert np.isnan(quality_of([0.1, 0.3], [1.0, 1.0], CFG)).all()
    assert np.isnan(quality_of([-0.01, 0.0, -0.02], [1.0] * 3, CFG)).all()
    result = settled(honest_round(2), [0.01, 0.3])
    assert [s.pay_fraction for s in result] == [1.0, 1.0]


def test_bad_input_is_refused_with_one_line():
    with pytest.raises(ValueError, match="one gain and one expected norm per update"):
        settle(honest_round(3), [1.0], [1.0] * 3, CFG)
    with pytest.raises(ValueError, match="finite and non-zero"):
        settled([honest(1), np.zeros(DIM)])
    with pytest.raises(ValueError, match="positive expected norm"):
        quality_of([1.0, 1.0, 1.0], [1.0, 0.0, 1.0], CFG)
    with pytest.raises(ValueError, match="dependence_tolerance"):
        ScreeningConfig(dependence_tolerance=1.5)


def test_without_the_quality_clause_only_dependent_groups_share() -> None:
    """The default: a lazy update is paid in full (no gain is measured); a copy still shares."""
    rng = np.random.default_rng(5)
    updates = [rng.normal(size=64) for _ in range(4)]
    updates.append(updates[0].copy())
    result = settle(updates, [1.0, 1.0, 1.0, 0.05, 1.0], [1.0] * 5, ScreeningConfig())
    assert [s.pay_fraction for s in result] == pytest.approx([0.5, 1.0, 1.0, 1.0, 0.5])
