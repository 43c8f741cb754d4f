"""Evaluation tables and plots: one CSV and one PNG per evaluation."""

from __future__ import annotations

import fcntl
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from fed_agent.evaluation.provenance import stamp
from fed_agent.outputs import write_table_atomic


def write_table(rows: Sequence[dict], path: Path) -> pd.DataFrame:
    """Write ``rows`` (see ``deployment.table_row``) as a CSV, each stamped with the
    ``code_version`` that produced it; returns the frame."""
    frame = pd.DataFrame(stamp(list(rows)))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_table_atomic(frame, path)
    return frame


def upsert_table(rows: Sequence[dict], path: Path, keys: Sequence[str]) -> pd.DataFrame:
    """Merge ``rows`` into the CSV at ``path``: a row replaces the one with its ``keys``,
    other rows stay in place and new ones are appended. Returns the merged frame.

    Benchmarks re-run a subset (one model, a few policies) without losing the other rows of
    the table the docs cite; every new row is stamped with the ``code_version`` that produced
    it, so rows of different code stay distinguishable. Several invocations may share a table (one per group of cases):
    the read-merge-write holds an exclusive lock beside the system's temp files.
    """
    lock_path = Path(tempfile.gettempdir()) / f"fed-agent-{path.name}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _merge_rows(rows, path, keys)


def _merge_rows(rows: Sequence[dict], path: Path, keys: Sequence[str]) -> pd.DataFrame:
    new = pd.DataFrame(stamp(list(rows)))
    if path.is_file():
        old = pd.read_csv(path)
        index = {tuple(r): i for i, r in enumerate(new[list(keys)].itertuples(index=False))}
        kept = [
            new.iloc[[index.pop(tuple(r))]] if tuple(r) in index else old.iloc[[i]]
            for i, r in enumerate(old[list(keys)].itertuples(index=False))
        ]
        new = pd.concat([*kept, new.iloc[sorted(index.values())]], ignore_index=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_table_atomic(new, path)
    return new


def plot_table(frame: pd.DataFrame, path: Path, title: str) -> None:
    """Two panels: held-out decision accuracy, and p50/p95 request latency, per row."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in CI
    import matplotlib.pyplot as plt

    labels = [
        " / ".join(str(r[k]) for k in ("model", "training", "deployment"))
        for _, r in frame.iterrows()
    ]
    positions = range(len(frame))
    fig, (acc, lat) = plt.subplots(1, 2, figsize=(max(8.0, 0.9 * len(frame)), 6.0))
    quality = frame["quality"].fillna(0.0)
    error = None
    if {"ci_low", "ci_high"} <= set(frame.columns):  # the 95 % interval as an error bar
        error = [
            (quality - frame["ci_low"].fillna(quality)).clip(lower=0),
            (frame["ci_high"].fillna(quality) - quality).clip(lower=0),
        ]
    acc.bar(positions, quality, color="tab:green", yerr=error, capsize=2)
    acc.set_ylabel("held-out decision accuracy (95 % CI)")
    acc.set_ylim(0, 1)
    width = 0.4
    lat.bar([p - width / 2 for p in positions], frame["p50_ms"].fillna(0.0), width, label="p50")
    lat.bar([p + width / 2 for p in positions], frame["p95_ms"].fillna(0.0), width, label="p95")
    lat.set_ylabel("latency per request (ms, log scale)")
    lat.set_yscale("log")  # tiny and real models differ by ~40x
    lat.legend()
    for axis in (acc, lat):
        axis.set_xticks(list(positions), labels, fontsize=7, rotation=60, ha="right")
    for p, value in zip(positions, frame["quality"], strict=True):
        if not math.isnan(value):
            acc.text(p, value + 0.02, f"{value:.2f}", ha="center", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
