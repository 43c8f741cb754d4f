"""Updates judged against the cloud's own expectations: one or two participants are judged too.

Synthetic updates around a reference direction (pure numpy): honest = the reference's
direction per unit of effort plus non-IID noise; each attack is built from an honest one.
"""

from __future__ import annotations

import numpy as np
import pytest

from fed_agent.modules.expectations import (
    ExpectationConfig,
    Reference,
    UpdateExpectations,
)
from fed_agent.modules.robust import Verdict
from fed_agent.modules.training import learning_effort

DIM = 2000
RNG = np.random.default_rng(0)
REFERENCE = Reference(RNG.normal(size=DIM) * 1e-3, effort=4.0)


def honest(effort: float = 4.0, seed: int = 1) -> np.ndarray:
    """An honest update: the reference direction, scaled to ``effort``, plus 40 % noise."""
    rng = np.random.default_rng(seed)
    unit = REFERENCE.delta / REFERENCE.effort
    noise = rng.normal(size=DIM) * np.linalg.norm(unit) / np.sqrt(DIM) * 0.4
    return effort * (unit + noise) / np.sqrt(1 + 0.4**2)


def verdicts(updates, efforts=None, last_step=None, expectations=None):
    expectations = expectations or UpdateExpectations()
    efforts = efforts or [4.0] * len(updates)
    return [j.verdict for j in expectations.judge(updates, efforts, REFERENCE, last_step)]


def test_honest_updates_of_any_effort_are_kept():
    updates = [honest(e, seed) for seed, e in enumerate([1.0, 2.5, 4.0, 10.0], start=1)]
    assert verdicts(updates, [1.0, 2.5, 4.0, 10.0]) == [Verdict.KEEP] * 4


@pytest.mark.parametrize(
    ("attack", "verdict"),
    [
        (lambda h: 50 * h, Verdict.SCALED),
        (lambda h: 500 * h, Verdict.SCALED),
        (lambda h: 0 * h, Verdict.STALE),
        (lambda h: 0.15 * h, Verdict.STALE),
        (lambda h: -h, Verdict.SIGN_FLIP),
        (lambda h: np.random.default_rng(9).normal(size=DIM) * np.std(h), Verdict.NOISE),
        (lambda h: np.where(np.arange(DIM) == 0, np.nan, h), Verdict.NON_FINITE),
    ],
)
def test_a_lone_participant_is_judged_without_peers(attack, verdict):
    assert verdicts([attack(honest())]) == [verdict]
    # ... and so is one of two
    assert verdicts([honest(seed=5), attack(honest())]) == [Verdict.KEEP, verdict]


def test_a_copy_of_an_earlier_reply_is_rejected_and_the_original_kept():
    original = honest(seed=3)
    scaled_copy = 1.3 * original  # inside the norm band: only the copy test catches it
    noisy_copy = original + 1e-4 * np.linalg.norm(original) * RNG.normal(size=DIM) / np.sqrt(DIM)
    assert verdicts([original, honest(seed=4), original, scaled_copy, noisy_copy]) == [
        Verdict.KEEP,
        Verdict.KEEP,
        Verdict.COPY,
        Verdict.COPY,
        Verdict.COPY,
    ]


def test_colluders_sending_one_shared_update_keep_one_voice():
    shared = honest(seed=7)
    judged = verdicts([honest(seed=1), shared, shared, shared, honest(seed=2)])
    assert judged == [Verdict.KEEP, Verdict.KEEP, Verdict.COPY, Verdict.COPY, Verdict.KEEP]


def test_a_replay_of_the_last_global_step_is_rejected():
    last_step = honest(seed=11)
    assert verdicts([last_step.copy(), honest(seed=12)], last_step=last_step) == [
        Verdict.REPLAY,
        Verdict.KEEP,
    ]


def test_the_expected_norm_is_calibrated_by_the_rounds_accepted():
    expectations = UpdateExpectations(ExpectationConfig(history_rounds=2))
    # honest ESs whose updates run 1.6x the reference's size per effort (another data mix)
    for _ in range(3):
        judged = expectations.judge(
            [1.6 * honest(seed=s) for s in range(1, 5)], [4.0] * 4, REFERENCE
        )
        assert all(j.kept for j in judged)
        expectations.record(judged)
    assert expectations.calibration == pytest.approx(1.6, rel=0.05)
    # the band now sits around 1.6x: 3x is within it, 0.7x below it
    assert verdicts([3.0 * honest()], expectations=expectations) == [Verdict.KEEP]
    assert verdicts([0.7 * honest()], expectations=expectations) == [Verdict.STALE]
    state = expectations.state_dict()
    restored = UpdateExpectations(expectations.cfg)
    restored.load_state_dict(state)
    assert restored.calibration == expectations.calibration


def test_accepted_updates_are_clipped_to_the_expected_norm():
    expectations = UpdateExpectations()
    hugging = 1.9 * honest()  # just under the scaled limit of 2x
    assert verdicts([hugging]) == [Verdict.KEEP]
    clipped = expectations.clip(hugging, 4.0, REFERENCE)
    limit = expectations.cfg.clip_ratio * expectations.expected_norm(4.0, REFERENCE)
    assert np.linalg.norm(clipped) == pytest.approx(limit)
    small = honest()
    assert expectations.clip(small, 4.0, REFERENCE) is small


def test_effort_is_the_learning_rate_sum_of_the_steps():
    assert learning_effort("constant", 4) == 4.0
    assert learning_effort("linear", 1) == 1.0
    assert learning_effort("linear", 2) == pytest.approx(1.5)  # 1 + 1/2
    assert learning_effort("linear", 4) == pytest.approx(2.5)


def test_bad_thresholds_and_efforts_are_refused():
    with pytest.raises(ValueError, match="low_norm_ratio"):
        ExpectationConfig(low_norm_ratio=1.5)
    with pytest.raises(ValueError, match="efforts must be"):
        UpdateExpectations().judge([honest()], [0.0], REFERENCE)


def test_an_update_hugging_the_fixed_cosine_limit_falls_below_the_expected_cosine():
    # honest updates agree with the reference at ~0.93: a mostly-junk update at 0.35 passes
    # the fixed limit (0.3) but not 0.6 x the expected cosine
    junk = np.random.default_rng(21).normal(size=DIM)
    unit = REFERENCE.delta / np.linalg.norm(REFERENCE.delta)
    side = junk - (junk @ unit) * unit
    hug = np.linalg.norm(honest()) * (
        0.35 * unit + np.sqrt(1 - 0.35**2) * side / np.linalg.norm(side)
    )
    expectations = UpdateExpectations()
    judged = expectations.judge([honest(seed=s) for s in (1, 2, 3)] + [hug], [4.0] * 4, REFERENCE)
    assert [j.verdict for j in judged] == [Verdict.KEEP] * 3 + [Verdict.NOISE]
    assert "expected >=" in judged[-1].reason
    expectations.record(judged)
    # alone in a later round, the history holds it back
    assert verdicts([hug], expectations=expectations) == [Verdict.NOISE]
    assert verdicts([honest(seed=8)], expectations=expectations) == [Verdict.KEEP]
