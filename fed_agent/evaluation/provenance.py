"""Which code produced a result row: the commit of the checkout, marked when its source differs.

Every results table carries a ``code_version`` column, so rows written by different code can be
told apart (and re-run or dropped) instead of being read as one setup.
"""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE_PATHS = ("fed_agent", "strategies", "clients", "configs", "benchmarks", "pyproject.toml")
"""What a result depends on: uncommitted changes here mark the version ``-dirty``."""
UNKNOWN = "unknown"


def _git(*args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False, timeout=30
    )
    if done.returncode != 0:
        raise OSError(done.stderr.strip() or f"git {' '.join(args)} failed")
    return done.stdout.strip()


@cache
def code_version() -> str:
    """``<short commit>`` of the checkout, ``<short commit>-dirty`` when its source has
    uncommitted changes, ``unknown`` outside a git checkout."""
    try:
        commit = _git("rev-parse", "--short=10", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no", "--", *SOURCE_PATHS)
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN
    return f"{commit}-dirty" if dirty else commit


def stamp(rows: list[dict], version: str | None = None) -> list[dict]:
    """``rows`` with ``code_version`` set where a row does not carry one already."""
    version = version or code_version()
    return [{**row, "code_version": row.get("code_version") or version} for row in rows]
