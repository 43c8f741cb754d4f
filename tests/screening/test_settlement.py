"""A round settled as a set: copies and lazy updates are paid for the work they deliver, honest
updates in full, whatever the order of arrival (which updates depend on others:
``tests/screening/test_dependence.py``).

Synthetic updates (pure numpy) shaped like the smoke model's round 1
(``tests/screening/test_dependence.py``'s honest ESs).
"""

from __future__ import annotations

import numpy as np
import pytest

from fed_agent.screening.config import ScreeningConfig
from fed_agent.screening.settlement import effort_fractions, quality_of, settle
from tests.screening.test_dependence import DIM, honest, honest_round

CFG = ScreeningConfig(quality_clause=True)


def settled(deltas, gains=None):
    gains = [1.0] * len(deltas) if gains is None else gains
    return settle(deltas, gains, [1.0] * len(deltas), CFG)


def test_honest_updates_are_paid_in_full():
    assert [s.pay_fraction for s in settled(honest_round())] == [1.0] * 8


def test_a_copy_and_its_original_share_one_update_in_either_order():
    updates = honest_round()
    copy = 1.3 * updates[2]  # scaled: inside the norm band
    forward = settled([*updates, copy])
    backward = settled([copy, *updates])
    assert [s.pay_fraction for s in forward] == [1, 1, 0.5, 1, 1, 1, 1, 1, 0.5]
    assert [s.pay_fraction for s in backward] == [0.5, 1, 1, 0.5, 1, 1, 1, 1, 1]
    assert "dependent group" in forward[2].detail and forward[0].detail == ""


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


def _curved_path(dim: int = 256) -> list[tuple[float, np.ndarray]]:
    """A reference whose direction turns as it trains: (effort, unit direction) after 1, 2,
    4, 8 and 16 steps of a constant learning rate."""
    rng = np.random.default_rng(11)
    e1, e2 = np.linalg.qr(rng.normal(size=(dim, 2)))[0].T
    angles = {1: 0.0, 2: 0.5, 4: 0.8, 8: 1.0, 16: 1.1}
    return [(float(k), np.cos(a) * e1 + np.sin(a) * e2) for k, a in angles.items()]


def _own(direction: np.ndarray, seed: int, noise: float = 0.8) -> np.ndarray:
    """``direction`` plus an ES's own part orthogonal to the path's plane."""
    rng = np.random.default_rng(seed)
    other = rng.normal(size=direction.size)
    path = np.stack([d for _, d in _curved_path(direction.size)])
    basis = np.linalg.qr(path.T)[0]
    other -= basis @ (basis.T @ other)
    return direction + noise * other / np.linalg.norm(other)


def test_the_effort_clause_pays_stretched_early_work_its_effort_and_honest_work_in_full():
    path = _curved_path()
    at = dict(path)
    cfg = ScreeningConfig(effort_clause=True)
    honest_updates = [3.0 * _own(at[16], seed) for seed in range(4)]
    stretched_1 = 3.0 * _own(at[1], 10)  # 1 of 16 steps, stretched to the honest norm
    stretched_2 = 3.0 * _own(at[2], 11)
    four_of_four = _own(at[4], 12)  # an ES contracted to 4 steps that did them
    deltas = [*honest_updates, stretched_1, stretched_2, four_of_four]
    efforts = [16.0] * 6 + [4.0]
    fractions = effort_fractions(deltas, efforts, path, cfg)
    assert fractions.tolist() == [1.0, 1.0, 1.0, 1.0, 1 / 16, 2 / 16, 1.0]
    # the same updates in another order: the same fractions, update by update
    order = [6, 4, 0, 5, 3, 1, 2]
    shuffled = effort_fractions([deltas[i] for i in order], [efforts[i] for i in order], path, cfg)
    assert shuffled.tolist() == fractions[order].tolist()
    result = settle(deltas, [1.0] * 7, [1.0] * 7, cfg, efforts, path)
    assert [s.pay_fraction for s in result] == pytest.approx(fractions.tolist())
    assert "0.0625 of its contracted effort" in result[4].detail and result[0].detail == ""


def test_the_effort_clause_is_void_when_off_without_a_path_or_outside_its_points():
    path = _curved_path()
    stretched = _own(dict(path)[1], 3)
    on = ScreeningConfig(effort_clause=True)
    assert effort_fractions([stretched], [16.0], path, ScreeningConfig()).tolist() == [1.0]
    assert effort_fractions([stretched], [16.0], path[:1], on).tolist() == [1.0]
    assert effort_fractions([stretched], [1.5], path, on).tolist() == [1.0]
    assert effort_fractions([stretched], [64.0], path, on).tolist() == [1.0]  # past the end
    assert effort_fractions([stretched], [16.0], path, on).tolist() == [1 / 16]
    assert settle([stretched], [1.0], [1.0], on)[0].pay_fraction == 1.0  # no efforts given
    with pytest.raises(ValueError, match="one positive effort per update"):
        effort_fractions([stretched], [0.0], path, on)
    with pytest.raises(ValueError, match="effort_tolerance"):
        ScreeningConfig(effort_tolerance=1.0)
