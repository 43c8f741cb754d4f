"""95 % intervals of accuracies: Wilson score intervals, checked against known values."""

from __future__ import annotations

import math

import pytest

from fed_agent.evaluation.intervals import accuracy_interval, mean_interval, wilson_interval
from fed_agent.evaluation.quality import Quality, mean_quality


def test_wilson_interval_matches_the_textbook_values():
    # 81 of 263 (Wilson 1927 as tabulated by Newcombe 1998, case 1): 0.2553-0.3662
    low, high = wilson_interval(81, 263)
    assert low == pytest.approx(0.2553, abs=1e-4)
    assert high == pytest.approx(0.3662, abs=1e-4)


def test_wilson_interval_at_the_edges_stays_in_unit_range_and_keeps_width():
    assert wilson_interval(500, 500) == pytest.approx((0.99238, 1.0), abs=1e-5)
    assert wilson_interval(0, 500) == pytest.approx((0.0, 0.00762), abs=1e-5)


def test_half_width_on_500_decisions_is_about_four_points_at_a_half():
    low, high = wilson_interval(250, 500)
    assert (high - low) / 2 == pytest.approx(0.0437, abs=1e-3)


def test_no_decisions_gives_nan_and_bad_counts_raise():
    assert all(math.isnan(x) for x in wilson_interval(0, 0))
    assert all(math.isnan(x) for x in accuracy_interval(float("nan"), 10))
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)


def test_quality_interval_uses_its_decision_count():
    q = Quality(0.95, 0.2, 1000, 500)
    assert q.accuracy_interval == pytest.approx(wilson_interval(475, 500))


def test_mean_over_modules_on_one_set_keeps_that_sets_size():
    parts = [Quality(0.6, 1.0, 500, 500), Quality(0.8, 1.0, 500, 500)]
    mean = mean_quality(parts)
    assert mean.decision_accuracy == pytest.approx(0.7)
    assert mean.num_decisions == 500


def test_mean_interval_is_the_student_t_interval_of_the_mean():
    # mean 2, sample std 1, n 3: half width t(0.975, 2) / sqrt(3) = 4.3027 / 1.7321 = 2.4841
    low, high = mean_interval([1.0, 2.0, 3.0])
    assert low == pytest.approx(2 - 2.4841, abs=1e-4)
    assert high == pytest.approx(2 + 2.4841, abs=1e-4)
    assert mean_interval([0.7]) == (0.7, 0.7)  # one seed: no spread, no interval claimed
