"""Benchmark tables: re-running a subset replaces its rows and keeps the others."""

from __future__ import annotations

import pandas as pd
import pytest

from fed_agent.evaluation import provenance
from fed_agent.evaluation.report import upsert_table

KEYS = ("num_es", "strategy")
REAL_CODE_VERSION = provenance.code_version.__wrapped__


@pytest.fixture(autouse=True)
def _version(monkeypatch):
    """Rows are stamped with the code version; fix it so each write is told apart."""
    versions = iter(["v1", "v2", "v3"])
    monkeypatch.setattr(provenance, "code_version", lambda: next(versions))


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
            "code_version": ["v1", "v2", "v1", "v2"],
        }
    )
    pd.testing.assert_frame_equal(merged, expected)
    pd.testing.assert_frame_equal(pd.read_csv(path), expected)


def test_upsert_writes_a_new_table(tmp_path) -> None:
    path = tmp_path / "sub" / "table.csv"
    upsert_table([{"num_es": 20, "strategy": "static", "utility": 4.0}], path, KEYS)
    assert pd.read_csv(path).to_dict("records") == [
        {"num_es": 20, "strategy": "static", "utility": 4.0, "code_version": "v1"}
    ]


def test_a_row_that_carries_its_version_keeps_it(tmp_path) -> None:
    path = tmp_path / "table.csv"
    rows = [
        {"num_es": 20, "strategy": "static", "code_version": "abc"},
        {"num_es": 100, "strategy": "x"},
    ]
    assert list(upsert_table(rows, path, KEYS)["code_version"]) == ["abc", "v1"]


def test_code_version_names_this_checkout_commit() -> None:
    import subprocess

    head = subprocess.run(
        ["git", "-C", str(provenance.ROOT), "rev-parse", "--short=10", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if not head:
        pytest.skip("not a git checkout")
    version = REAL_CODE_VERSION()
    assert version.split("-")[0] == head


def test_plot_draws_accuracy_with_and_without_intervals(tmp_path) -> None:
    from fed_agent.evaluation.report import plot_table

    base = {"model": "m", "training": "t", "deployment": "edge-agent", "p50_ms": 1.0}
    plain = pd.DataFrame([{**base, "quality": 0.8, "p95_ms": 2.0}])
    plot_table(plain, tmp_path / "plain.png", "no intervals")
    with_ci = plain.assign(ci_low=[0.76], ci_high=[0.84])
    plot_table(with_ci, tmp_path / "ci.png", "intervals")
    assert (tmp_path / "plain.png").stat().st_size > 0 and (tmp_path / "ci.png").stat().st_size > 0
