"""Atomic per-round checkpoints of the cloud, and resuming a new run from the newest one.

A checkpoint is a folder ``checkpoints/round-NNNNN`` holding the global module
(``adapter.safetensors``), the ledger as it stood after that round (``ledger.csv``) and the
strategy's state (``state.json``: beliefs, public facts and current contracts by node id), and
a manifest (``checkpoint.json``: the round and the SHA-256 of the adapter and of every file,
the ledger included). It is written under a temporary name and renamed, and ``LATEST.json`` is
replaced atomically afterwards, so a crash at any point leaves the previous checkpoint intact.

Resuming takes the newest *intact* checkpoint: one whose files are readable and match their
hashes; a truncated or altered newer one is skipped with a warning. Every error names the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fed_agent.modules.adapter import AdapterError, load_adapter_file, save_adapter
from fed_agent.outputs import write_json_atomic
from fed_agent.protocol import AdapterState

LATEST = "LATEST.json"
MANIFEST = "checkpoint.json"
HASHED_FILES = ("adapter.safetensors", "state.json", "ledger.csv")
log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what is wrong."""


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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
    files = {n: _file_sha256(tmp / n) for n in HASHED_FILES if (tmp / n).is_file()}
    manifest = {"round": server_round, "adapter_sha256": adapter_sha256(adapter), "files": files}
    (tmp / MANIFEST).write_text(json.dumps(manifest, sort_keys=True))
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


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise CheckpointError(f"{path} is missing") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path} is corrupt or truncated (not valid JSON: {err})") from err
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} does not hold a JSON object")
    return value


def _load_folder(folder: Path, pointer: dict | None) -> tuple[int, AdapterState, dict, str]:
    """One checkpoint folder, verified: its round, adapter, state and ledger CSV text.

    Checked against its manifest (every file's hash, the ledger's too) and, for the folder
    LATEST.json points at, against the pointer's adapter hash.
    """
    manifest_path = folder / MANIFEST
    manifest = _read_json(manifest_path) if manifest_path.is_file() else None
    if manifest is None and pointer is None:
        raise CheckpointError(f"{manifest_path} is missing (nothing to verify the folder by)")
    if manifest is not None:
        for name, digest in dict(manifest.get("files", {})).items():
            path = folder / name
            if not path.is_file():
                raise CheckpointError(f"{path} is missing")
            if _file_sha256(path) != digest:
                raise CheckpointError(f"{path} does not match its hash in {manifest_path}")
    try:
        adapter = load_adapter_file(folder / "adapter.safetensors")
    except AdapterError as err:
        raise CheckpointError(str(err)) from err
    expected = [(m, manifest_path) for m in [manifest] if m is not None]
    expected += [(p, folder.parent / LATEST) for p in [pointer] if p is not None]
    for source, path in expected:
        if adapter_sha256(adapter) != source.get("adapter_sha256"):
            raise CheckpointError(f"checkpoint {folder} does not match its hash in {path}")
    state = _read_json(folder / "state.json")
    server_round = int((manifest or pointer or {})["round"])
    ledger = folder / "ledger.csv"
    ledger_csv = ledger.read_text() if ledger.is_file() else ""
    return server_round, adapter, state, ledger_csv


def load_latest(path: Path) -> Checkpoint:
    """The newest intact checkpoint under ``path`` (a run folder or its ``checkpoints`` folder).

    The one LATEST.json points at is tried first, then the older ones, newest first; a
    checkpoint that is truncated, corrupt or does not match its hashes is skipped with a
    warning naming the file.

    Raises
    ------
    FileNotFoundError
        When there is no checkpoint there, naming the folder.
    CheckpointError
        When no checkpoint there is intact (a ValueError), naming each file and its fault.
    """
    root = path if (path / LATEST).is_file() else checkpoint_root(path)
    latest = root / LATEST
    if not latest.is_file():
        raise FileNotFoundError(f"no checkpoint to resume from under {path} ({LATEST} missing)")
    errors: list[str] = []
    try:
        pointer: dict | None = _read_json(latest)
        first = root / str(pointer["dir"])
    except (CheckpointError, KeyError) as err:
        errors.append(str(err) if isinstance(err, CheckpointError) else f"{latest} has no dir")
        pointer, first = None, None
    folders = sorted(root.glob("round-*"), reverse=True)
    candidates = [first] if first is not None else []
    candidates += [f for f in folders if f != first]
    for folder in candidates:
        try:
            loaded = _load_folder(folder, pointer if folder == first else None)
        except CheckpointError as err:
            errors.append(str(err))
            log.warning("checkpoint %s is not usable (%s); trying an older one", folder, err)
            continue
        server_round, adapter, state, ledger_csv = loaded
        metrics_path = root.parent / "metrics.csv"
        metrics = []
        if metrics_path.is_file():
            rows = pd.read_csv(metrics_path).to_dict("records")
            metrics = [row for row in rows if row["round"] <= server_round]
        return Checkpoint(server_round, adapter, state, ledger_csv, metrics)
    raise CheckpointError(f"no intact checkpoint under {root}: " + "; ".join(errors))
