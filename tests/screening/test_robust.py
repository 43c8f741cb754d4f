"""Robust aggregation, update screening and attack generators on synthetic adapter states."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.attacks import ATTACKS, MALFORMED_ATTACKS, VALUE_ATTACKS, apply_attack
from fed_agent.screening.aggregation import aggregate, weighted_average
from fed_agent.screening.robust import (
    ScreeningConfig,
    Verdict,
    coordinate_median,
    screen,
    trimmed_mean,
)

METRICS = {"num-examples": 32, "train-loss": 1.0, "train-steps": 4, "train-wall-s": 0.5}


def _global() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "layer.lora_A.weight": rng.normal(size=(4, 64)).astype(np.float32),
        "layer.lora_B.weight": np.zeros((64, 4), np.float32),
    }


def _honest(global_state, n: int, seed: int = 1) -> list[dict[str, np.ndarray]]:
    """Non-IID-ish honest updates: a shared direction plus per-ES variation."""
    rng = np.random.default_rng(seed)
    direction = {k: rng.normal(size=v.shape) for k, v in global_state.items()}
    return [
        {
            k: (v + 0.01 * (direction[k] + 0.5 * rng.normal(size=v.shape))).astype(np.float32)
            for k, v in global_state.items()
        }
        for _ in range(n)
    ]


def test_unknown_aggregation_raises_listing_the_choices() -> None:
    states = _honest(_global(), 3)
    with pytest.raises(ValueError, match="valid choices.*median"):
        aggregate("krum", states, [1, 1, 1])


def test_median_and_trimmed_mean_match_numpy_references() -> None:
    states = _honest(_global(), 5)
    key = "layer.lora_A.weight"
    stacked = np.stack([s[key] for s in states]).astype(np.float64)
    np.testing.assert_allclose(coordinate_median(states)[key], np.median(stacked, 0), rtol=1e-6)
    trimmed = np.sort(stacked, 0)[1:4].mean(0)  # floor(0.2 * 5) = 1 from each end
    np.testing.assert_allclose(trimmed_mean(states, 0.2)[key], trimmed, rtol=1e-6)
    np.testing.assert_allclose(
        aggregate("fedavg", states, [1] * 5)[key], stacked.mean(0), rtol=1e-5
    )


def test_trimmed_mean_with_nothing_to_trim_is_the_mean() -> None:
    states = _honest(_global(), 2)
    mean = weighted_average(states, [1, 1])
    for key, value in trimmed_mean(states, 0.2).items():
        np.testing.assert_allclose(value, mean[key], rtol=1e-6)


def test_trimmed_mean_rejects_a_fraction_that_trims_everything() -> None:
    with pytest.raises(ValueError, match="trim_fraction"):
        trimmed_mean(_honest(_global(), 4), 0.5)


@pytest.mark.parametrize("name", ["trimmed_mean", "median"])
def test_robust_rules_bound_a_scaled_minority(name: str) -> None:
    global_state = _global()
    states = _honest(global_state, 10)
    clean = aggregate(name, states, [1] * 10)
    rng = np.random.default_rng(3)
    attacked = states[:8] + [
        apply_attack("scale", s, global_state, METRICS, rng)[0] for s in states[8:]
    ]
    key = "layer.lora_B.weight"
    robust_shift = np.abs(aggregate(name, attacked, [1] * 10)[key] - clean[key]).max()
    fedavg_shift = np.abs(aggregate("fedavg", attacked, [1] * 10)[key] - clean[key]).max()
    assert robust_shift < 0.2 * fedavg_shift


def test_honest_updates_are_all_kept() -> None:
    global_state = _global()
    results = screen(_honest(global_state, 8), global_state)
    assert [r.verdict for r in results] == [Verdict.KEEP] * 8
    assert all(r.reason == "" for r in results)


@pytest.mark.parametrize(
    ("attack", "verdict"),
    [
        ("stale", Verdict.STALE),
        ("sign_flip", Verdict.SIGN_FLIP),
        ("scale", Verdict.SCALED),
        ("noise", Verdict.NOISE),
    ],
)
def test_each_value_attack_is_screened_with_its_reason(attack: str, verdict: Verdict) -> None:
    global_state = _global()
    states = _honest(global_state, 10)
    rng = np.random.default_rng(7)
    states[:2] = [apply_attack(attack, s, global_state, METRICS, rng)[0] for s in states[:2]]
    results = screen(states, global_state)
    assert [r.verdict for r in results[:2]] == [verdict, verdict]
    assert all(r.kept for r in results[2:])
    assert verdict.value in results[0].reason


def test_non_finite_update_is_screened_even_alone() -> None:
    global_state = _global()
    poisoned, _ = apply_attack(
        "nan", _honest(global_state, 1)[0], global_state, METRICS, np.random.default_rng(0)
    )
    assert screen([poisoned], global_state)[0].verdict is Verdict.NON_FINITE


def test_few_updates_are_only_tested_for_staleness() -> None:
    """Two updates have no meaningful centre: a flip is not judged, a stale copy still is."""
    global_state = _global()
    honest = _honest(global_state, 2)
    rng = np.random.default_rng(0)
    flipped = apply_attack("sign_flip", honest[1], global_state, METRICS, rng)[0]
    assert [r.verdict for r in screen([honest[0], flipped], global_state)] == [Verdict.KEEP] * 2
    stale = apply_attack("stale", honest[1], global_state, METRICS, rng)[0]
    assert screen([honest[0], stale], global_state)[1].verdict is Verdict.STALE


def test_screening_config_validates_itself() -> None:
    with pytest.raises(ValueError):
        ScreeningConfig(norm_ratio=0.5)
    with pytest.raises(ValueError):
        ScreeningConfig(min_cosine=1.0)


def test_attack_lists_partition_and_unknown_attack_raises() -> None:
    assert set(ATTACKS) == set(MALFORMED_ATTACKS) | set(VALUE_ATTACKS)
    global_state = _global()
    with pytest.raises(ValueError, match="valid choices"):
        apply_attack("label_flip", global_state, global_state, METRICS, np.random.default_rng())


def test_attacks_do_not_mutate_their_inputs() -> None:
    global_state = _global()
    honest = _honest(global_state, 1)[0]
    before = {k: v.copy() for k, v in honest.items()}
    for name in ATTACKS:
        apply_attack(name, honest, global_state, dict(METRICS), np.random.default_rng(0))
    for key, value in before.items():
        np.testing.assert_array_equal(honest[key], value)


def test_effort_scales_compare_updates_per_unit_of_work() -> None:
    """Contracts ask different ESs for different effort: a 1-step ES is not a free-rider."""
    global_state = _global()
    states = _honest(global_state, 8)
    steps = [20.0] * 7 + [1.0]
    small = {k: global_state[k] + (v - global_state[k]) / 20 for k, v in states[7].items()}
    states[7] = small
    assert screen(states, global_state)[7].verdict is Verdict.STALE
    assert screen(states, global_state, scales=steps)[7].verdict is Verdict.KEEP
    with pytest.raises(ValueError, match="positive"):
        screen(states, global_state, scales=[1.0] * 7 + [0.0])
