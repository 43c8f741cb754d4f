"""Participant selection: the latency-priced and deadline rules are exact, with reasons."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from fed_agent.incentives.config import IncentiveConfig
from fed_agent.incentives.selection import (
    Candidate,
    select_participants,
    selection_surplus,
    subset_value,
)


def random_candidates(rng: np.random.Generator, n: int) -> list[Candidate]:
    """Surpluses of both signs, latencies with repeats (ties are where exactness breaks)."""
    surplus = np.round(rng.normal(20.0, 25.0, size=n), 1)
    latency = rng.choice([3.0, 5.0, 5.0, 8.0, 12.0, 20.0], size=n) + rng.integers(0, 3, size=n)
    return [
        Candidate(100 + i, float(s), float(t))
        for i, (s, t) in enumerate(zip(surplus, latency, strict=True))
    ]


def brute_force_priced(candidates: list[Candidate], limit: int, price: float) -> float:
    """The best value of any subset of at most ``limit`` candidates (the empty set is 0)."""
    best = 0.0
    for size in range(1, limit + 1):
        for subset in itertools.combinations(candidates, size):
            best = max(best, subset_value(subset, price))
    return best


def brute_force_deadline(candidates: list[Candidate], limit: int, deadline: float) -> float:
    """The largest total surplus of at most ``limit`` candidates within ``deadline``."""
    best = 0.0
    for size in range(1, limit + 1):
        for subset in itertools.combinations(candidates, size):
            if all(c.latency_s <= deadline for c in subset):
                best = max(best, sum(c.surplus for c in subset))
    return best


def chosen(selection, candidates):
    by_id = {c.node_id: c for c in candidates}
    return [by_id[n] for n in selection.chosen]


@pytest.mark.parametrize("seed", range(40))
def test_latency_priced_selection_equals_brute_force_over_subsets(seed):
    rng = np.random.default_rng(seed)
    candidates = random_candidates(rng, int(rng.integers(1, 9)))
    limit = int(rng.integers(1, 5))
    price = float(rng.choice([0.0, 0.5, 2.0, 5.0, 20.0]))
    cfg = IncentiveConfig(selection="latency_priced", latency_price=price)
    selection = select_participants(candidates, limit, cfg, np.random.default_rng(seed))
    picked = chosen(selection, candidates)
    assert len(picked) <= limit
    assert subset_value(picked, price) == pytest.approx(
        brute_force_priced(candidates, limit, price)
    )
    assert selection.deadline_s == max((c.latency_s for c in picked), default=0.0)


@pytest.mark.parametrize("seed", range(40))
def test_deadline_selection_equals_brute_force_and_keeps_the_deadline(seed):
    rng = np.random.default_rng(1000 + seed)
    candidates = random_candidates(rng, int(rng.integers(1, 9)))
    limit = int(rng.integers(1, 5))
    deadline = float(rng.choice([4.0, 7.0, 10.0, 30.0]))
    cfg = IncentiveConfig(selection="deadline", deadline_s=deadline)
    selection = select_participants(candidates, limit, cfg, np.random.default_rng(seed))
    picked = chosen(selection, candidates)
    assert len(picked) <= limit
    assert all(c.latency_s <= deadline and c.surplus > 0 for c in picked)
    assert sum(c.surplus for c in picked) == pytest.approx(
        brute_force_deadline(candidates, limit, deadline)
    )
    assert selection.deadline_s == deadline


def test_a_straggler_is_dropped_when_waiting_for_it_costs_more_than_its_surplus():
    fast = [Candidate(1, 50.0, 5.0), Candidate(2, 40.0, 6.0)]
    straggler = Candidate(3, 60.0, 20.0)
    cfg = IncentiveConfig(selection="latency_priced", latency_price=5.0)
    selection = select_participants([*fast, straggler], 3, cfg, np.random.default_rng(0))
    # all three: 150 - 5 * 20 = 50; the two fast ones: 90 - 5 * 6 = 60
    assert sorted(selection.chosen) == [1, 2]
    assert selection.deadline_s == 6.0
    assert "misses the deadline 6.00 s" in selection.reasons[3]
    assert selection.reasons[1].startswith("chosen:")
    # a lower price makes the straggler worth waiting for: 150 - 1 * 20 = 130 > 90 - 6 = 84
    cheap = dataclasses.replace(cfg, latency_price=1.0)
    assert sorted(
        select_participants([*fast, straggler], 3, cheap, np.random.default_rng(0)).chosen
    ) == [1, 2, 3]


def test_every_candidate_gets_a_reason_naming_why_it_is_in_or_out():
    candidates = [
        Candidate(1, 30.0, 4.0),
        Candidate(2, 20.0, 4.0),
        Candidate(3, 10.0, 4.0),
        Candidate(4, -5.0, 2.0),
        Candidate(5, 90.0, 15.0),
    ]
    cfg = IncentiveConfig(selection="deadline", deadline_s=10.0)
    selection = select_participants(candidates, 2, cfg, np.random.default_rng(0))
    assert selection.chosen == [1, 2]
    reasons = selection.reasons
    assert set(reasons) == {1, 2, 3, 4, 5}
    assert "ranked higher" in reasons[3]
    assert "no surplus" in reasons[4]
    assert "misses the deadline 10.00 s" in reasons[5]


def test_surplus_rule_keeps_the_largest_surpluses_whatever_their_latency():
    candidates = [Candidate(1, 30.0, 25.0), Candidate(2, 20.0, 3.0), Candidate(3, 10.0, 3.0)]
    cfg = IncentiveConfig(selection="surplus")
    selection = select_participants(candidates, 2, cfg, np.random.default_rng(0))
    assert selection.chosen == [1, 2]
    assert selection.deadline_s == 25.0  # the round waits for its slowest participant


def test_nobody_is_chosen_when_no_set_pays_for_its_latency():
    cfg = IncentiveConfig(selection="latency_priced", latency_price=10.0)
    selection = select_participants([Candidate(1, 30.0, 5.0)], 3, cfg, np.random.default_rng(0))
    assert selection.chosen == [] and selection.deadline_s == 0.0


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("latency_price", -1.0, "incentive.latency_price must be a finite number >= 0"),
        ("latency_price", float("nan"), "incentive.latency_price must be a finite number >= 0"),
        ("deadline_s", 0.0, "incentive.deadline_s must be a finite number > 0"),
        ("deadline_s", float("inf"), "incentive.deadline_s must be a finite number > 0"),
        ("selection", "fastest", "incentive.selection: unknown value 'fastest'"),
        ("repeat_value", 0.0, r"incentive.repeat_value must be a finite number in \(0, 1\]"),
        ("repeat_value", 1.2, r"incentive.repeat_value must be a finite number in \(0, 1\]"),
        (
            "repeat_value",
            float("nan"),
            r"incentive.repeat_value must be a finite number in \(0, 1\]",
        ),
    ],
)
def test_bad_selection_settings_are_refused_when_the_config_loads(field, value, message):
    with pytest.raises(ValueError, match=message):
        IncentiveConfig(**{field: value})


def test_repeat_value_discounts_the_value_of_work_per_earlier_round_not_the_reward():
    assert selection_surplus(80.0, 20.0, 0, 0.8) == pytest.approx(60.0)
    assert selection_surplus(80.0, 20.0, 2, 0.8) == pytest.approx(80.0 * 0.64 - 20.0)
    assert selection_surplus(80.0, 20.0, 5, 1.0) == pytest.approx(60.0)


def test_an_es_that_trained_before_gives_way_to_a_slightly_cheaper_newcomer():
    """Surplus 60 (value 80, trained once) vs 50 (value 70, new): with repeat_value 0.8 the
    newcomer ranks first (44 < 50); with 1 the repeat ES stays first; reasons say why."""
    cfg = IncentiveConfig(selection="surplus", repeat_value=0.8)
    repeat = Candidate(1, selection_surplus(80.0, 20.0, 1, 0.8), 5.0, trained_before=1)
    newcomer = Candidate(2, selection_surplus(70.0, 20.0, 0, 0.8), 5.0)
    chosen = select_participants([repeat, newcomer], 1, cfg, np.random.default_rng(0))
    assert chosen.chosen == [2]
    assert "trained in 1 earlier rounds" in chosen.reasons[1]
    plain = IncentiveConfig(selection="surplus")
    old = Candidate(1, selection_surplus(80.0, 20.0, 1, 1.0), 5.0, trained_before=1)
    assert select_participants([old, newcomer], 1, plain, np.random.default_rng(0)).chosen == [1]
