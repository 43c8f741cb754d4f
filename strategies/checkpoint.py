"""Atomic per-round checkpoints of the cloud, and resuming a new run from the newest one.

A checkpoint is a folder ``checkpoints/round-NNNNN`` holding the global module
(``adapter.safetensors``), the ledger as it stood after that round (``ledger.csv``) and the
strategy's state (``state.json``: beliefs, public facts and current contracts by node id). It is written under a temporary name and renamed, and
``LATEST.json`` is replaced atomically afterwards, so a crash at any point leaves the previous
checkpoint intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fed_agent.modules.adapter import load_adapter_file, save_adapter
from fed_agent.outputs import write_json_atomic
from fed_agent.protocol import AdapterState

LATEST = "LATEST.json"
KEEP = 2
"""Checkpoints kept (the newest and the one before, in case the newest is being replaced)."""


def adapter_sha256(state: AdapterState) -> str:
    """Hash of an adapter's names and bytes: equal hashes = identical modules."""
    digest = hashlib.sha256()
    for key in state:
        digest.update(key.encode())
        digest.update(state[key].tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint."""

    server_round: int
    adapter: AdapterState
    state: dict
    ledger_csv: str
    """The ledger as it stood after ``server_round`` (CSV text; empty if none)."""
    metrics: list[dict]
    """The earlier run's per-round metrics up to ``server_round``."""


def save_checkpoint(
    root: Path, server_round: int, adapter: AdapterState, state: dict, ledger_csv: Path
) -> Path:
    """Write the checkpoint of ``server_round`` under ``root`` and point LATEST.json at it."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"round-{server_round:05d}"
    tmp = root / f".round-{server_round:05d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_adapter(adapter, tmp / "adapter.safetensors", {"round": str(server_round)})
    if ledger_csv.is_file():
        shutil.copy2(ledger_csv, tmp / "ledger.csv")
    (tmp / "state.json").write_text(json.dumps(state, sort_keys=True))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    write_json_atomic(
        {"round": server_round, "dir": final.name, "adapter_sha256": adapter_sha256(adapter)},
        root / LATEST,
    )
    for old in sorted(root.glob("round-*"))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def checkpoint_root(run_dir: Path) -> Path:
    """Where a run keeps its checkpoints."""
    return run_dir / "checkpoints"


def load_latest(path: Path) -> Checkpoint:
    """The newest checkpoint under ``path`` (a run folder or its ``checkpoints`` folder).

    Raises
    ------
    FileNotFoundError
        When there is no checkpoint there, naming the folder.
    """
    root = path if (path / LATEST).is_file() else checkpoint_root(path)
    latest = root / LATEST
    if not latest.is_file():
        raise FileNotFoundError(f"no checkpoint to resume from under {path} ({LATEST} missing)")
    pointer = json.loads(latest.read_text())
    folder = root / pointer["dir"]
    adapter = load_adapter_file(folder / "adapter.safetensors")
    if adapter_sha256(adapter) != pointer["adapter_sha256"]:
        raise ValueError(f"checkpoint {folder} does not match its hash in {latest}")
    state = json.loads((folder / "state.json").read_text())
    server_round = int(pointer["round"])
    ledger = folder / "ledger.csv"
    metrics_path = root.parent / "metrics.csv"
    metrics = []
    if metrics_path.is_file():
        rows = pd.read_csv(metrics_path).to_dict("records")
        metrics = [row for row in rows if row["round"] <= server_round]
    ledger_csv = ledger.read_text() if ledger.is_file() else ""
    return Checkpoint(server_round, adapter, state, ledger_csv, metrics)
