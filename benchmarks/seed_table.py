"""Results tables with one row per seed and one ``seed = mean`` row per group.

A mean row holds the group's mean and its Student-t 95 % interval over the seeds
(``fed_agent.evaluation.intervals.mean_interval``) and ``n_seeds``. Several invocations (one
per seed, say) may write one table side by side: ``save_seed_rows`` merges, recomputes the
means and redraws under one lock, so none drops another's rows.
"""

from __future__ import annotations

import fcntl
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from fed_agent.evaluation.intervals import mean_interval
from fed_agent.evaluation.report import upsert_table, write_table

MEAN = "mean"
"""The ``seed`` of a mean row (``seed`` is a text column)."""


def with_means(
    frame: pd.DataFrame, groups: Sequence[str], value: str, averaged: Sequence[str] = ()
) -> pd.DataFrame:
    """The seed rows of ``frame`` plus one mean row per ``groups`` (old mean rows are dropped
    and recomputed). A mean row takes ``value``'s mean with its interval over the seeds
    (``ci_low``, ``ci_high``; a group of one seed keeps that seed's interval), the mean of the ``averaged`` columns, and every other column's first
    non-empty value over the group's seeds."""
    seeds = frame[frame["seed"].astype(str) != MEAN].drop(columns="code_version", errors="ignore")
    seeds = seeds.assign(n_seeds=1)  # a seed row is one seed
    means = []
    for _, group in seeds.groupby(list(groups), sort=False, dropna=False):
        first = group.bfill().iloc[0].to_dict()
        low, high = (
            mean_interval(group[value].tolist())
            if len(group) > 1  # one seed: its own interval (over its held-out examples)
            else (first.get("ci_low"), first.get("ci_high"))
        )
        means.append(
            {
                **first,
                **{column: group[column].mean() for column in averaged},
                "seed": MEAN,
                "n_seeds": len(group),
                value: group[value].mean(),
                "ci_low": low,
                "ci_high": high,
            }
        )
    columns = list(dict.fromkeys([*seeds.columns, "ci_low", "ci_high"]))
    return pd.concat([seeds, pd.DataFrame(means, columns=columns)], ignore_index=True)


def save_seed_rows(
    rows: Sequence[dict],
    table: Path,
    keys: Sequence[str],
    groups: Sequence[str],
    value: str,
    *,
    averaged: Sequence[str] = (),
    draw: Callable[[pd.DataFrame, Path], None] | None = None,
) -> pd.DataFrame:
    """Merge ``rows`` (seed rows, ``seed`` as text) into ``table`` by ``keys``, recompute the
    mean rows and redraw the plot (``draw(frame, table.with_suffix('.png'))``), all under one
    lock. Seed rows keep the ``code_version`` that wrote them; mean rows get this checkout's."""
    lock_path = Path(tempfile.gettempdir()) / f"fed-agent-{table.name}.means.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if rows:
            upsert_table([{**row, "seed": str(row["seed"])} for row in rows], table, keys)
        seeds = pd.read_csv(table, dtype={"seed": str})
        seeds = seeds[seeds["seed"] != MEAN]
        stamps = seeds.set_index(list(keys))["code_version"]
        frame = with_means(seeds, groups, value, averaged)
        frame["code_version"] = [stamps.get(tuple(r), "") for r in frame[list(keys)].values]
        frame = write_table(frame.to_dict("records"), table)
        if draw is not None:
            draw(frame, table.with_suffix(".png"))
    return frame
