"""A run's output folder: per-round metrics, the resolved config, the exported agent."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from fed_agent.errors import UserError


def check_output_path(path: Path, option: str, is_file: bool = False) -> None:
    """Refuse, before any work, an output folder (or file) that cannot be created or written:
    one under a file, in a folder without write access, or a file path that is a folder.

    Raises
    ------
    UserError
        Naming ``option`` (the command-line option or setting) and ``path``.
    """
    path = Path(path)
    if is_file and path.is_dir():
        raise UserError(f"{option} {path} is a folder; name the file to write")
    existing = (path.parent if is_file else path).expanduser().absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{option} {path}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{option} {path}: {existing} is not writable")
    try:  # os.access says yes to root everywhere, /proc and read-only mounts included
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise UserError(f"{option} {path}: {existing} is not writable ({err.strerror})") from err


def write_table_atomic(frame: pd.DataFrame, path: Path) -> None:
    """Write a CSV so that a crash leaves the previous version, never a truncated one."""
    tmp = path.with_name(path.name + ".tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)


def write_text_atomic(text: str, path: Path) -> None:
    """Write text atomically (see :func:`write_table_atomic`)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json_atomic(data: dict, path: Path) -> None:
    """Write JSON atomically (see :func:`write_table_atomic`)."""
    write_text_atomic(json.dumps(data, indent=2, sort_keys=True, default=str), path)


WALL_CLOCK_COLUMNS = ("round_wall_s", "design_s", "guard_s")
"""Metrics columns timed by the wall clock: the only ones two runs of one config and seed may
differ in (everything else, ``adapter_sha256`` included, is the same bit for bit)."""


def reproducible_digest(metrics_csv: Path) -> str:
    """SHA-256 of a run's ``metrics.csv`` without its :data:`WALL_CLOCK_COLUMNS`: equal for two
    runs of one config and seed, on any load, thread count or checkout."""
    frame = pd.read_csv(metrics_csv, dtype=str, keep_default_na=False)
    kept = frame.drop(columns=[c for c in WALL_CLOCK_COLUMNS if c in frame.columns])
    return hashlib.sha256(kept.to_csv(index=False).encode()).hexdigest()


@dataclass
class RunOutputs:
    """The folder of one run and the per-round metrics written to it every round."""

    root: Path
    rows: list[dict] = field(default_factory=list)

    @classmethod
    def create(cls, output_dir: str, run_name: str) -> RunOutputs:
        """Make ``<output_dir>/<run_name>``.

        An earlier run's folder of that name is renamed to ``<run_name>-<its time stamp>``
        first, so its files are kept and never mixed with the new run's.
        """
        root = Path(output_dir).expanduser().resolve() / run_name
        if root.is_dir() and any(root.iterdir()):
            stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(root.stat().st_mtime))
            aside = root.with_name(f"{run_name}-{stamp}")
            suffix = 1
            while aside.exists():
                aside, suffix = root.with_name(f"{run_name}-{stamp}-{suffix}"), suffix + 1
            os.replace(root, aside)
        root.mkdir(parents=True, exist_ok=True)
        return cls(root)

    @property
    def metrics_path(self) -> Path:
        """Per-round metrics (CSV)."""
        return self.root / "metrics.csv"

    def record_round(self, row: dict) -> None:
        """Merge ``row`` into the metrics of its ``round`` and rewrite the table."""
        for existing in self.rows:
            if existing["round"] == row["round"]:
                existing.update(row)
                break
        else:
            self.rows.append(dict(row))
        write_table_atomic(pd.DataFrame(self.rows), self.metrics_path)
