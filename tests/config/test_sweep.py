"""Hydra sweeps expand to one job per combination, in Hydra's order."""

from __future__ import annotations

import pytest

from fed_agent.config import ConfigError
from fed_agent.config.sweep import expand_sweep


def test_a_sweep_is_the_product_of_its_lists_the_last_key_varying_fastest():
    jobs = expand_sweep(["seed=0,1", "federation.num_es=6", "model=tiny-llm,tiny-vlm"])
    assert jobs == [
        ["seed=0", "federation.num_es=6", "model=tiny-llm"],
        ["seed=0", "federation.num_es=6", "model=tiny-vlm"],
        ["seed=1", "federation.num_es=6", "model=tiny-llm"],
        ["seed=1", "federation.num_es=6", "model=tiny-vlm"],
    ]


def test_range_and_choice_sweep_and_other_overrides_pass_unchanged():
    quoted = "output_dir='/runs/a b,c'"  # a comma inside quotes is not a sweep
    assert expand_sweep(["seed=range(2,5)", quoted]) == [
        ["seed=2", quoted],
        ["seed=3", quoted],
        ["seed=4", quoted],
    ]
    assert expand_sweep(["seed=choice(7,9)"]) == [["seed=7"], ["seed=9"]]
    assert expand_sweep([]) == [[]]


def test_a_key_given_twice_or_an_interval_is_refused():
    with pytest.raises(ConfigError, match="seed is given twice"):
        expand_sweep(["seed=0,1", "seed=2"])
    with pytest.raises(ConfigError, match="not a list of values"):
        expand_sweep(["training.learning_rate=interval(0.1,0.2)"])
    with pytest.raises(ConfigError):
        expand_sweep(["seed=0,"])
