"""Benchmark tables: re-running a subset replaces its rows and keeps the others."""

from __future__ import annotations

import pandas as pd

from fed_agent.evaluation.report import upsert_table

KEYS = ("num_es", "strategy")


def test_upsert_replaces_rows_by_key_keeps_the_rest_in_place_and_appends_new(tmp_path) -> None:
    path = tmp_path / "table.csv"
    upsert_table(
        [
            {"num_es": 20, "strategy": "uniform", "utility": 1.0},
            {"num_es": 20, "strategy": "edmsac", "utility": 2.0},
            {"num_es": 100, "strategy": "edmsac", "utility": 3.0},
        ],
        path,
        KEYS,
    )
    merged = upsert_table(
        [
            {"num_es": 100, "strategy": "optimal", "utility": 9.0},
            {"num_es": 20, "strategy": "edmsac", "utility": 5.0},
        ],
        path,
        KEYS,
    )
    expected = pd.DataFrame(
        {
            "num_es": [20, 20, 100, 100],
            "strategy": ["uniform", "edmsac", "edmsac", "optimal"],
            "utility": [1.0, 5.0, 3.0, 9.0],
        }
    )
    pd.testing.assert_frame_equal(merged, expected)
    pd.testing.assert_frame_equal(pd.read_csv(path), expected)


def test_upsert_writes_a_new_table(tmp_path) -> None:
    path = tmp_path / "sub" / "table.csv"
    upsert_table([{"num_es": 20, "strategy": "static", "utility": 4.0}], path, KEYS)
    assert pd.read_csv(path).to_dict("records") == [
        {"num_es": 20, "strategy": "static", "utility": 4.0}
    ]


def test_plot_draws_accuracy_with_and_without_intervals(tmp_path) -> None:
    from fed_agent.evaluation.report import plot_table

    base = {"model": "m", "training": "t", "deployment": "edge-agent", "p50_ms": 1.0}
    plain = pd.DataFrame([{**base, "quality": 0.8, "p95_ms": 2.0}])
    plot_table(plain, tmp_path / "plain.png", "no intervals")
    with_ci = plain.assign(ci_low=[0.76], ci_high=[0.84])
    plot_table(with_ci, tmp_path / "ci.png", "intervals")
    assert (tmp_path / "plain.png").stat().st_size > 0 and (tmp_path / "ci.png").stat().st_size > 0
