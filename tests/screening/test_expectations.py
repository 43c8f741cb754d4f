"""Updates judged against the cloud's own expectations: one or two participants are judged too.

Synthetic updates around a reference direction (pure numpy): honest = the reference's
direction per unit of effort plus non-IID noise; each attack is built from an honest one.
"""

from __future__ import annotations

import numpy as np
import pytest

from fed_agent.modules.training import learning_effort
from fed_agent.screening.judge import (
    Reference,
    ScreeningConfig,
    UpdateScreen,
)
from fed_agent.screening.robust import Verdict

DIM = 2000
RNG = np.random.default_rng(0)
REFERENCE = Reference(RNG.normal(size=DIM) * 1e-3, effort=4.0)


def honest(effort: float = 4.0, seed: int = 1) -> np.ndarray:
    """An honest update: the reference direction plus 40 % noise, its norm grown from the
    reference's as effort ** norm_effort_exponent (Adam updates grow far less than linearly)."""
    rng = np.random.default_rng(seed)
    scale = (effort / REFERENCE.effort) ** ScreeningConfig().norm_effort_exponent
    noise = rng.normal(size=DIM) * np.linalg.norm(REFERENCE.delta) / np.sqrt(DIM) * 0.4
    return scale * (REFERENCE.delta + noise) / np.sqrt(1 + 0.4**2)


def verdicts(updates, efforts=None, last_step=None, expectations=None):
    expectations = expectations or UpdateScreen()
    efforts = efforts or [4.0] * len(updates)
    return [j.verdict for j in expectations.judge(updates, efforts, REFERENCE, last_step)]


def test_updates_of_the_measured_norm_growth_are_kept_at_any_contracted_steps():
    """Norms of the default module's updates after 25-400 fresh steps at lr 1e-3 (ES 0, the
    global module of round 4 of a make run, accuracy 0.94): 1.09-1.21x per doubling. A norm
    linear in effort called the 100-step ES of that run `scaled` (2.17x) against a ~200-step
    reference."""
    steps = [25, 50, 100, 200, 400]
    norms = [1.9675, 2.381, 2.8363, 3.3971, 3.6917]
    direction = REFERENCE.delta / np.linalg.norm(REFERENCE.delta)
    reference = Reference(direction * norms[3], learning_effort("constant", 200) * 1e-3)
    noise = [np.random.default_rng(s).normal(size=DIM) / np.sqrt(DIM) for s in range(5)]
    updates = [n * (direction + 0.4 * e) / np.sqrt(1.16) for n, e in zip(norms, noise, strict=True)]
    efforts = [learning_effort("constant", k) * 1e-3 for k in steps]
    judged = UpdateScreen().judge(updates, efforts, reference)
    assert [j.verdict for j in judged] == [Verdict.KEEP] * 5
    linear = UpdateScreen(ScreeningConfig(norm_effort_exponent=1.0))
    assert [j.verdict for j in linear.judge(updates, efforts, reference)][:2] == [
        Verdict.SCALED
    ] * 2


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


def test_the_verdicts_do_not_depend_on_the_order_of_arrival():
    """A copy is no longer judged against earlier arrivals: the original and its copies get one
    verdict whichever came first (the round's settlement shares their pay,
    ``tests/screening/test_settlement.py``)."""
    original = honest(seed=3)
    replies = [original, honest(seed=4), 1.3 * original, 50 * honest(seed=5), 0 * original]
    forward = verdicts(replies)
    assert forward == [Verdict.KEEP] * 3 + [Verdict.SCALED, Verdict.STALE]
    order = [4, 2, 3, 0, 1]
    assert verdicts([replies[i] for i in order]) == [forward[i] for i in order]


def test_a_replay_of_the_last_global_step_is_rejected():
    last_step = honest(seed=11)
    assert verdicts([last_step.copy(), honest(seed=12)], last_step=last_step) == [
        Verdict.REPLAY,
        Verdict.KEEP,
    ]


def test_the_expected_norm_is_calibrated_by_the_rounds_accepted():
    expectations = UpdateScreen(ScreeningConfig(history_rounds=2))
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
    restored = UpdateScreen(expectations.cfg)
    restored.load_state_dict(state)
    assert restored.calibration == expectations.calibration


def test_accepted_updates_are_clipped_to_the_expected_norm():
    expectations = UpdateScreen()
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
        ScreeningConfig(low_norm_ratio=1.5)
    with pytest.raises(ValueError, match="efforts must be"):
        UpdateScreen().judge([honest()], [0.0], REFERENCE)


def test_a_mostly_junk_update_falls_below_the_expected_cosine():
    # honest updates agree with the reference at ~0.93: a mostly-junk update at 0.25 passes
    # the fixed floor (0.134 at D = 2000) but not 0.3 x the expected cosine
    junk = np.random.default_rng(21).normal(size=DIM)
    unit = REFERENCE.delta / np.linalg.norm(REFERENCE.delta)
    side = junk - (junk @ unit) * unit
    hug = np.linalg.norm(honest()) * (
        0.25 * unit + np.sqrt(1 - 0.25**2) * side / np.linalg.norm(side)
    )
    expectations = UpdateScreen()
    judged = expectations.judge([honest(seed=s) for s in (1, 2, 3)] + [hug], [4.0] * 4, REFERENCE)
    assert [j.verdict for j in judged] == [Verdict.KEEP] * 3 + [Verdict.NOISE]
    assert "expected >=" in judged[-1].reason
    expectations.record(judged)
    # alone in a later round only the fixed floor and the norm judge it: it is paid (the
    # weakness docs/deployment.md names; earlier rounds' agreement rejected honest ESs)
    assert verdicts([hug], expectations=expectations) == [Verdict.KEEP]
    # one of two: the relative limit applies to the pair's median
    assert verdicts([honest(seed=8), 0.3 * hug], expectations=expectations)[0] == Verdict.KEEP


def converged(seed: int, agreement: float = 0.2) -> np.ndarray:
    """An honest update of a converged module: mostly its own data's direction, at cosine
    ``agreement`` to the reference (the default run measured 0.11-0.33 from round 3 on)."""
    unit = REFERENCE.delta / np.linalg.norm(REFERENCE.delta)
    side = np.random.default_rng(seed).normal(size=DIM)
    side -= (side @ unit) * unit
    side /= np.linalg.norm(side)
    norm = np.linalg.norm(honest())
    return norm * (agreement * unit + np.sqrt(1 - agreement**2) * side)


def test_honest_updates_of_a_converging_module_are_kept_after_rounds_of_high_agreement():
    """A fixed 0.3 floor and a 5-round median of early cosines
    rejected every honest reply of the default run from round 3 on; then the last round's
    median rejected both honest replies of a 2-ES round."""
    expectations = UpdateScreen()
    for _ in range(3):  # early rounds: honest updates agree with the reference at ~0.93
        expectations.record(
            expectations.judge([honest(seed=s) for s in (1, 2, 3)], [4.0] * 3, REFERENCE)
        )
    late = [converged(s, a) for s, a in zip((11, 12, 13, 14), (0.22, 0.3, 0.5, 0.6), strict=True)]
    judged = expectations.judge(late, [4.0] * 4, REFERENCE)
    assert [j.verdict for j in judged] == [Verdict.KEEP] * 4
    expectations.record(judged)
    # a lone ES or a pair of the next round is not held to earlier rounds' agreement
    # (0.3 x 0.93 = 0.28 or 0.3 x 0.4 = 0.12 would reject the pair's first)
    assert verdicts([converged(15, 0.2)], expectations=expectations) == [Verdict.KEEP]
    pair = [converged(18, 0.135), converged(19, 0.16)]
    assert verdicts(pair, expectations=expectations) == [Verdict.KEEP] * 2
    # ... and one within chance of a random direction (the fixed floor, 0.134 here) is noise
    assert verdicts([converged(16, 0.1)], expectations=expectations) == [Verdict.NOISE]


def test_the_fixed_floor_rises_to_the_spread_of_a_random_direction_in_small_modules():
    expectations = UpdateScreen()
    assert expectations.cosine_floor(2000) == pytest.approx(6 / np.sqrt(2000))
    assert expectations.cosine_floor(155_648) == pytest.approx(0.0152, abs=1e-4)
    # 0.1 is within 4.5 sd of chance at D = 2000
    assert verdicts([converged(17, 0.1)]) == [Verdict.NOISE]
    assert verdicts([converged(17, 0.2)]) == [Verdict.KEEP]


def test_the_expected_norm_follows_the_references_own_growth():
    # a reference that grew in proportion for 4 steps, then by 1.2x per doubling up to 64
    growth = ((1.0, 1.0), (2.0, 2.0), (4.0, 4.0), (8.0, 4.8), (16.0, 5.76), (32.0, 6.912))
    growth += ((64.0, 8.2944),)
    reference = Reference(REFERENCE.delta / np.linalg.norm(REFERENCE.delta) * 8.2944, 64.0, growth)
    assert reference.norm_at(2.0, 0.3) == pytest.approx(2.0)
    assert reference.norm_at(16.0, 0.3) == pytest.approx(5.76)
    assert reference.norm_at(5.657, 0.3) == pytest.approx(np.sqrt(4.0 * 4.8), rel=1e-3)
    # past the end: the slope of the last two doublings (log2 1.2 = 0.263), not the 0.3 given
    assert reference.norm_at(256.0, 0.3) == pytest.approx(8.2944 * 1.2**2, rel=1e-6)
    assert reference.norm_at(0.5, 0.3) == pytest.approx(0.5)
    # without a record the exponent carries the end point both ways
    bare = Reference(reference.delta, 64.0)
    assert bare.norm_at(8.0, 0.5) == pytest.approx(8.2944 / np.sqrt(8))


def test_the_reference_update_records_its_norm_after_each_doubling(smoke_cfg, smoke_module):
    from fed_agent.data.partition import cloud_examples
    from fed_agent.modules.reference import reference_update

    split = cloud_examples(smoke_cfg.data, smoke_cfg.seed, 16)
    global_state = smoke_module.initial_state
    reference = reference_update(smoke_module, global_state, split, smoke_cfg.training, 6, seed=3)
    efforts = [e for e, _ in reference.growth]
    assert efforts == pytest.approx(
        [learning_effort(smoke_cfg.training.lr_schedule, k) for k in (1, 2, 4, 6)]
    )
    assert reference.growth[-1][1] == pytest.approx(reference.norm)
    norms = [n for _, n in reference.growth]
    assert all(a < b for a, b in zip(norms, norms[1:], strict=False))


def test_a_cosine_floor_of_one_or_more_is_refused_for_the_module() -> None:
    """``random_cosine_sigmas`` / sqrt(D) >= 1 would reject every update of the module as noise."""
    cfg = ScreeningConfig(random_cosine_sigmas=40.0)
    cfg.check_module(1_792)  # floor 0.945: strict, but a parallel enough update can pass
    with pytest.raises(ValueError, match=r"floor at 1\.03 for this module's 1500 parameters"):
        cfg.check_module(1_500)
    ScreeningConfig().check_module(37)  # the default 6 sigmas: a floor of 1 at 36 parameters
    with pytest.raises(ValueError, match="every update would be rejected"):
        ScreeningConfig().check_module(36)
