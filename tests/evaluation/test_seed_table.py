"""Seed tables: the mean rows, their intervals over seeds, and merging invocations."""

import math

import pandas as pd
import pytest
from scipy import stats

from benchmarks.seed_table import MEAN, save_seed_rows, with_means
from fed_agent.evaluation.quality import Quality, pooled_quality

KEYS = ["model", "training", "seed"]


def _row(training: str, seed: int, quality: float, majority: float, p50: float) -> dict:
    return {
        "model": "m",
        "training": training,
        "seed": str(seed),
        "quality": quality,
        "majority": majority,
        "p50_ms": p50,
    }


def test_mean_row_holds_the_t_interval_over_seeds_and_first_latency():
    values = [0.90, 0.80, 0.95, 0.85, 0.70]
    rows = [
        _row("federated", s, v, 0.4 + 0.01 * s, 12.0 if s == 0 else math.nan)
        for s, v in enumerate(values)
    ]
    rows.append({**_row("local-only", 0, 0.5, 0.4, math.nan), "ci_low": 0.45, "ci_high": 0.55})
    frame = with_means(pd.DataFrame(rows), ["model", "training"], "quality", ("majority",))
    mean = frame[(frame["seed"] == MEAN) & (frame["training"] == "federated")].iloc[0]
    half = stats.t.ppf(0.975, 4) * pd.Series(values).std(ddof=1) / math.sqrt(5)
    assert mean["quality"] == pytest.approx(0.84)
    assert (mean["ci_low"], mean["ci_high"]) == pytest.approx((0.84 - half, 0.84 + half))
    assert mean["n_seeds"] == 5
    assert mean["majority"] == pytest.approx(0.42)  # averaged, not the first seed's 0.40
    assert mean["p50_ms"] == 12.0  # the one timed seed's latency
    local = frame[(frame["seed"] == MEAN) & (frame["training"] == "local-only")].iloc[0]
    assert local["n_seeds"] == 1 and local["quality"] == 0.5
    assert (local["ci_low"], local["ci_high"]) == (0.45, 0.55)  # one seed keeps its own
    assert (frame[frame["seed"] != MEAN]["n_seeds"] == 1).all()


def test_invocations_merge_and_old_means_are_recomputed(tmp_path):
    table = tmp_path / "t.csv"
    save_seed_rows([_row("federated", 0, 0.6, 0.4, 1.0)], table, KEYS, KEYS[:-1], "quality")
    save_seed_rows([_row("federated", 1, 0.8, 0.4, 1.0)], table, KEYS, KEYS[:-1], "quality")
    frame = save_seed_rows(  # a rerun of seed 1 replaces its row
        [_row("federated", 1, 1.0, 0.4, 1.0)], table, KEYS, KEYS[:-1], "quality"
    )
    assert len(frame) == 3  # two seeds and one mean row, no stale mean
    mean = frame[frame["seed"] == MEAN].iloc[0]
    assert mean["quality"] == pytest.approx(0.8) and mean["n_seeds"] == 2
    assert frame["code_version"].astype(bool).all()


def test_pooled_quality_weights_each_share_by_its_decisions():
    parts = [Quality(1.0, 0.1, 10, 10), Quality(0.5, 0.3, 30, 30)]
    pooled = pooled_quality(parts)
    assert pooled.decision_accuracy == pytest.approx((10 + 15) / 40)
    assert pooled.answer_loss == pytest.approx((1.0 + 9.0) / 40)
    assert (pooled.num_examples, pooled.num_decisions) == (40, 40)
