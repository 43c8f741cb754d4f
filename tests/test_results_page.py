"""docs/results.md is generated from the committed tables and matches them."""

from __future__ import annotations

import pandas as pd

from benchmarks import results_page


def test_the_committed_results_page_matches_the_tables() -> None:
    assert results_page.main(["--check"]) == 0, "run: python -m benchmarks.results_page"


def test_a_section_shows_the_selected_rows_and_columns(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(results_page, "RESULTS", tmp_path)
    pd.DataFrame(
        {"seed": [0, 0, 1, 1], "round": [1, 2, 1, 2], "acc": [0.5, 0.91234, 0.4, float("nan")]}
    ).to_csv(tmp_path / "t.csv", index=False)
    table = results_page.Table(
        "t.csv", "T", "setup", "cmd", ("seed", "acc", "absent"), "round == round.max()"
    )
    text = results_page.section(table)
    assert "| seed | acc |" in text
    assert "| 0 | 0.9123 |" in text and "| 1 |  |" in text
    assert "Rows shown: 2 of 4" in text
    assert results_page.section(results_page.Table("missing.csv", "M", "", "", ("x",))) is None
