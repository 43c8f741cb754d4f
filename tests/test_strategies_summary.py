"""The strategies benchmark's summary over seeds: paired ratios and time to quality."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from benchmarks.strategies_bench import derived_columns, summary


def run_row(strategy: str, seed: int, utility: float, to_target: float) -> dict:
    """One run's row with only the columns the summary reads."""
    return {
        "num_es": 20,
        "strategy": strategy,
        "selection": "surplus",
        "runner": "in_process",
        "seed": seed,
        "cloud_utility": utility,
        "cloud_utility_discounted": 0.75 * utility + (10.0 if strategy == "edmsac" else 0.0),
        "agent_quality": 0.9 + 0.01 * seed,
        "payments": 50.0,
        "participation_rate": 1.0,
        "round_latency_model_s": 5.0 if strategy == "fedavg_flat_fee" else 10.0 + seed,
        **{
            f"{metric}_{target}": to_target
            for target in (0.8, 0.9)
            for metric in ("rounds_to_target", "modelled_s_to_target", "payments_to_target")
        },
    }


def test_ratios_to_the_static_menu_are_paired_by_seed_and_unreached_targets_are_left_out():
    frame = pd.DataFrame(
        [
            run_row("static", 0, 100.0, 20.0),
            run_row("static", 1, 200.0, 40.0),
            run_row("fedavg_flat_fee", 0, 50.0, 10.0),
            run_row("fedavg_flat_fee", 1, 100.0, 10.0),
            # seed 1 pays better in absolute terms, but the ratio is paired seed by seed
            run_row("edmsac", 1, 260.0, math.nan),
            run_row("edmsac", 0, 110.0, 30.0),
        ]
    )
    rows = summary(frame).set_index("strategy")
    edmsac = rows.loc["edmsac"]
    assert edmsac["seeds"] == 2
    assert edmsac["vs_static"] == pytest.approx(1.2)  # mean of 1.1 and 1.3
    # t(0.975, 1 dof) = 12.706; sample std of (1.1, 1.3) = 0.1414; / sqrt(2) = 0.1
    assert edmsac["vs_static_ci_low"] == pytest.approx(1.2 - 1.27062, abs=1e-4)
    assert edmsac["vs_static_ci_high"] == pytest.approx(1.2 + 1.27062, abs=1e-4)
    assert edmsac["vs_flat_fee"] == pytest.approx((2.2 + 2.6) / 2)
    # the same pairing on the discounted objective: (82.5 + 10) / 75 and (195 + 10) / 150
    assert edmsac["vs_static_discounted"] == pytest.approx((92.5 / 75 + 205 / 150) / 2)
    assert edmsac["reached_0.9"] == 1
    # time to 0.9 over the flat fee's only where both reached it (seed 0: 30 / 10)
    assert edmsac["s_to_0.9_vs_flat_fee"] == pytest.approx(3.0)
    assert edmsac["latency_vs_flat_fee"] == pytest.approx((10 / 5 + 11 / 5) / 2)
    assert edmsac["modelled_s_to_target_0.9"] == pytest.approx(30.0)
    assert rows.loc["static", "vs_static"] == pytest.approx(1.0)
    assert rows.loc["static", "modelled_s_to_target_0.8"] == pytest.approx(30.0)
    assert rows.loc["static", "agent_quality"] == pytest.approx(0.905)


def test_the_discounted_cloud_utility_weighs_period_two_rounds_at_the_discount():
    metrics = pd.DataFrame(
        {
            "round": [0, 1, 2, 3, 4],
            "period": [math.nan, 1, 2, 1, 2],
            "cloud_utility": [math.nan, 100.0, 40.0, 80.0, 20.0],
            "decision_accuracy": [0.1, 0.5, 0.85, 0.88, 0.93],
            "round_latency_model_s": [math.nan, 10.0, 5.0, 10.0, 5.0],
            "payments": [math.nan, 1.0, 2.0, 3.0, 4.0],
        }
    )
    derived = derived_columns(metrics, discount=0.5)
    assert derived["cloud_utility_discounted"] == pytest.approx((100 + 20 + 80 + 10) / 4)
    assert derived["rounds_to_target_0.8"] == 2 and derived["modelled_s_to_target_0.8"] == 15
    assert derived["rounds_to_target_0.9"] == 4 and derived["payments_to_target_0.9"] == 10
