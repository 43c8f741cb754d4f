"""A round settled as a set: each kept update is paid by its contribution to the round's
aggregate on the cloud's split against what its effort promises, copies share, honest updates
are paid in full (also non-IID ones that would raise the split's loss on their own), whatever
the order of arrival.

The cloud's split is a quadratic loss ``0.5 |x - target|^2`` (pure numpy): the contribution
along the path is then exact, so the expected pay of every attacker can be worked out by hand.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fed_agent.screening.config import ScreeningConfig
from fed_agent.screening.settlement import contributions, quality_of, settle, weigh

DIM = 1792
CFG = ScreeningConfig(quality_clause=True)
_RNG = np.random.default_rng(0)
TARGET = _RNG.normal(size=DIM)
TOPICS = np.linalg.qr(_RNG.normal(size=(DIM, 8)))[0].T  # orthonormal data directions
TOPICS -= np.outer(TOPICS @ TARGET / (TARGET @ TARGET), TARGET)  # off the cloud's target


def loss(x: np.ndarray) -> float:
    return 0.5 * float((x - TARGET) @ (x - TARGET))


def gains_at(step: np.ndarray, probes: list[np.ndarray]) -> list[float]:
    return [loss(step) - loss(step + p) for p in probes]


def honest(i: int, own: float = 0.5) -> np.ndarray:
    """Half the way to the target plus ``own`` x the target's norm along the ES's own data:
    a mix of the data directions, orthogonal to the target (non-IID)."""
    mix = np.random.default_rng(100 + i).normal(size=len(TOPICS)) @ TOPICS
    return 0.5 * TARGET + own * np.linalg.norm(TARGET) * mix / np.linalg.norm(mix)


def pay(deltas, work=None, expected=None, cfg=CFG):
    work = [1.0] * len(deltas) if work is None else work
    expected = [1.0] * len(deltas) if expected is None else expected
    weighing = weigh(deltas, work, cfg)
    contributed = contributions(weighing, gains_at, cfg.quality_path_points)
    return settle(weighing, contributed, expected, cfg)


def test_contributions_add_up_to_the_aggregates_drop_of_the_loss():
    deltas = [honest(i) for i in range(5)] + [0.3 * TARGET]
    weighing = weigh(deltas, [1, 2, 1, 1, 3, 1], CFG)
    for points in (1, 4):
        total = contributions(weighing, gains_at, points).sum()
        assert total == pytest.approx(loss(np.zeros(DIM)) - loss(weighing.step), rel=1e-9)
    assert weighing.weights == pytest.approx(np.array([1, 2, 1, 1, 3, 1]) / 9)


def test_honest_non_iid_updates_that_raise_the_loss_alone_are_paid_in_full():
    deltas = [honest(i, own=0.9) for i in range(6)]
    alone = [loss(np.zeros(DIM)) - loss(d) for d in deltas]
    assert max(alone) < 0  # each alone overshoots along its own data's direction
    assert loss(np.mean(deltas, axis=0)) < loss(np.zeros(DIM))  # their average helps
    result = pay(deltas)
    assert [s.pay_fraction for s in result] == [1.0] * 6
    assert [s.detail for s in result] == [""] * 6


def test_a_hugger_is_paid_its_useful_part_and_honest_ess_in_full():
    deltas = [honest(i) for i in range(6)]
    own = honest(6)
    junk = np.random.default_rng(3).normal(size=DIM)
    junk -= (junk @ own) / (own @ own) * own
    # cosine 0.4 to its own update, 1.9x its norm (benchmarks.attacks.HugParams)
    hug = 1.9 * (
        0.4 * own + np.sqrt(1 - 0.4**2) * np.linalg.norm(own) * junk / np.linalg.norm(junk)
    )
    result = pay([*deltas, hug])
    assert [s.pay_fraction for s in result[:6]] == [1.0] * 6
    # its useful part is 0.4 x 1.9 = 0.76 of an update; its junk costs the aggregate too
    assert 0.3 < result[6].pay_fraction < 0.76
    assert "contribution" in result[6].detail


def test_colluders_sending_one_junk_update_are_paid_at_most_its_worth_in_all():
    deltas = [honest(i) for i in range(6)]
    shared = 0.4 * honest(6) + 0.9 * np.linalg.norm(honest(6)) * TOPICS[7] / np.linalg.norm(
        TOPICS[7]
    )
    result = pay([*deltas, shared, shared.copy(), 0.9 * shared])
    assert [s.pay_fraction for s in result[:6]] == [1.0] * 6
    assert sum(s.pay_fraction for s in result[6:]) <= 1 / 3 * 3 * 0.85
    assert {round(s.share, 9) for s in result[6:]} == {round(1 / 3, 9)}


def test_a_harmful_update_earns_nothing():
    deltas = [honest(i) for i in range(5)]
    result = pay([*deltas, -0.5 * TARGET])
    assert result[5].pay_fraction == 0.0
    assert [s.pay_fraction for s in result[:5]] == [1.0] * 5


def test_settling_does_not_depend_on_the_order_of_arrival():
    deltas = [honest(i) for i in range(6)]
    sent = [*deltas, deltas[2].copy(), 0.2 * TARGET, 0.5 * (deltas[0] + deltas[1])]
    base = [s.pay_fraction for s in pay(sent)]
    assert base[6] == base[2] == pytest.approx(0.5)
    for order in itertools.islice(itertools.permutations(range(len(sent))), 0, 40000, 4111):
        fractions = [s.pay_fraction for s in pay([sent[i] for i in order])]
        np.testing.assert_allclose(fractions, [base[i] for i in order], rtol=1e-9, atol=1e-12)


def test_the_expected_contribution_scales_with_the_expected_norm_of_the_effort():
    quality = quality_of([0.2, 0.4, 0.4, 0.4], [0.25] * 4, [0.5, 1.0, 1.0, 1.0], CFG)
    np.testing.assert_allclose(quality, [1.0, 1.0, 1.0, 1.0])
    # per unit of weight: half the weight and half the contribution is full value
    quality = quality_of([0.1, 0.4, 0.4, 0.4], [0.5 / 3.5, 1 / 3.5, 1 / 3.5, 1 / 3.5], [1] * 4, CFG)
    np.testing.assert_allclose(quality, [0.5, 1.0, 1.0, 1.0])


def test_the_quality_clause_is_void_without_peers_or_without_gain():
    assert np.isnan(quality_of([0.1, 0.3], [0.5, 0.5], [1.0, 1.0], CFG)).all()
    assert np.isnan(quality_of([-0.01, 0.0, -0.02], [1 / 3] * 3, [1.0] * 3, CFG)).all()
    result = pay([honest(0), 0.01 * TARGET])
    assert [s.pay_fraction for s in result] == [1.0, 1.0]


def test_without_the_quality_clause_only_dependent_groups_share() -> None:
    """The default: a lazy update is paid in full (nothing is measured); a copy still shares."""
    off = ScreeningConfig()
    deltas = [honest(i) for i in range(4)]
    deltas.append(deltas[0].copy())
    weighing = weigh(deltas, [1.0] * 5, off)
    result = settle(weighing, np.full(5, np.nan), [1.0] * 5, off)
    assert [s.pay_fraction for s in result] == pytest.approx([0.5, 1.0, 1.0, 1.0, 0.5])


def test_bad_input_is_refused_with_one_line():
    weighing = weigh([honest(i) for i in range(3)], [1.0] * 3, CFG)
    with pytest.raises(ValueError, match="one contribution, one positive weight"):
        settle(weighing, [1.0], [1.0] * 3, CFG)
    with pytest.raises(ValueError, match="positive expected norm"):
        quality_of([1.0, 1.0, 1.0], [1 / 3] * 3, [1.0, 0.0, 1.0], CFG)
    with pytest.raises(ValueError, match="one positive work per update"):
        weigh([honest(0), honest(1)], [1.0, 0.0], CFG)
    with pytest.raises(ValueError, match="quality_path_points"):
        ScreeningConfig(quality_path_points=0)
