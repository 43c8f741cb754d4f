"""Time to quality: rounds, modelled seconds and payments until the target is first reached."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from benchmarks.time_to_quality_bench import time_to_target


def metrics(accuracies: list[float]) -> pd.DataFrame:
    """Round 0 (the starting module, no latency or payments) and one row per later round."""
    rounds = range(len(accuracies))
    return pd.DataFrame(
        {
            "round": list(rounds),
            "decision_accuracy": accuracies,
            "round_latency_model_s": [float("nan")] + [10.0 * r for r in rounds][1:],
            "payments": [float("nan")] + [100.0] * (len(accuracies) - 1),
        }
    )


def test_time_to_target_sums_latency_and_payments_up_to_the_first_round_that_reaches_it():
    result = time_to_target(metrics([0.5, 0.6, 0.82, 0.79, 0.9]), target=0.8)
    assert result == {
        "rounds_to_target": 2,
        "modelled_s_to_target": pytest.approx(10.0 + 20.0),
        "payments_to_target": pytest.approx(200.0),
    }


def test_a_run_that_never_reaches_the_target_has_no_time_to_it():
    result = time_to_target(metrics([0.5, 0.6, 0.7]), target=0.8)
    assert all(math.isnan(v) for v in result.values())
