"""Atomic per-round checkpoints of the cloud, and resuming a new run from the newest one.

A checkpoint is a folder ``checkpoints/round-NNNNN`` holding the global module
(``adapter.safetensors``), the ledger as it stood after that round (``ledger.csv``) and the
strategy's state (``state.json``: beliefs, public facts and current contracts by node id), and
a manifest (``checkpoint.json``: the round, the SHA-256 of the adapter and of every file, the
ledger included, and the config values the checkpoint is tied to, :func:`resume_fields`: all
but :data:`RESUMABLE_CHANGES`). It
is written under a temporary name and renamed, and ``LATEST.json`` is replaced atomically
afterwards, so a crash at any point leaves the previous checkpoint intact.

A checkpoint is the commit point of a round: the strategy writes the round's ledger rows into
the checkpoint first and only then into the run's ``ledger.csv``, so payments are final only
with the round's aggregate (``ContractStrategy.commit_round``).

Resuming takes the newest *intact* checkpoint: one whose files are readable, match their
hashes and whose ledger parses; a truncated or altered newer one is skipped with a warning.
A checkpoint written under another config (:func:`check_resume_config`) is refused with the
mismatching fields. Every error names the file. This module is framework-free so that
``fed-agent run`` can refuse a bad checkpoint before it starts anything.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fed_agent.config import ExperimentConfig
from fed_agent.incentives.ledger import parse_entries
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


RESUMABLE_CHANGES = (
    "output_dir",
    "run_name",
    "federation.num_rounds",
    "federation.round_timeout_s",
    "federation.resume_from",
    "federation.checkpoint_every",
    "federation.client_cpus",
    "federation.client_gpus",
    "model.cache_dir",
    "model.device",
)
"""The only settings a resumed run may change: how long it runs, how long it waits, how often
it checkpoints, where it writes, where a base is cached and what it computes on. Every other
config value is the checkpoint's fingerprint (:func:`resume_fields`) and must match: the seed,
the market (kappa, f range, participation, types, prior, transition, ...), the incentive
policy and its settings, the training settings (local steps, learning rate, ...), the data
source and its settings, screening, privacy, the model and the federation's shape; another
value makes the saved module, beliefs, contracts or held pay mean something else."""


def _dotted(values: dict, prefix: str = "") -> dict[str, object]:
    """A nested dict flattened to dotted names (``market.kappa``)."""
    out: dict[str, object] = {}
    for name, value in values.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            out.update(_dotted(value, f"{key}."))
        else:
            out[key] = value
    return out


def resume_fields(cfg: ExperimentConfig) -> dict[str, object]:
    """The config values a checkpoint is tied to, by dotted name (JSON-ready): every field but
    :data:`RESUMABLE_CHANGES`."""
    values = _dotted(json.loads(json.dumps(dataclasses.asdict(cfg))))
    return {k: v for k, v in values.items() if k not in RESUMABLE_CHANGES}


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
    folder: Path | None = None
    """Where it was read from."""
    config: dict | None = None
    """Its :func:`resume_fields` (None: its manifest records none, and
    :func:`check_resume_config` refuses it)."""


def check_resume_config(checkpoint: Checkpoint, cfg: ExperimentConfig) -> None:
    """Refuse to resume ``checkpoint`` under a config it was not written with.

    Raises
    ------
    CheckpointError
        Naming the checkpoint's manifest and every mismatching field, both values.
    """
    manifest = (checkpoint.folder or Path(".")) / MANIFEST
    if checkpoint.config is None:
        raise CheckpointError(
            f"{manifest} records no config, so nothing shows it was written under this one; refused"
        )
    now = resume_fields(cfg)
    keys = sorted((set(now) | set(checkpoint.config)) - set(RESUMABLE_CHANGES))
    missing = "(not recorded)"
    diffs = [
        f"{k}={checkpoint.config.get(k, missing)!r} (checkpoint) vs {now.get(k, missing)!r} "
        "(config)"
        for k in keys
        if checkpoint.config.get(k, missing) != now.get(k, missing)
    ]
    if diffs:
        raise CheckpointError(
            f"{manifest} was written under another config (only "
            f"{', '.join(RESUMABLE_CHANGES)} may change on resume): " + ", ".join(diffs)
        )
    if cfg.federation.num_rounds <= checkpoint.server_round:
        raise CheckpointError(
            f"{manifest} is of round {checkpoint.server_round}, so federation.num_rounds="
            f"{cfg.federation.num_rounds} (the run's rounds in all) leaves no round to run and "
            f"no epoch's pay to settle; set it above {checkpoint.server_round}"
        )


def resume_point(cfg: ExperimentConfig) -> Checkpoint | None:
    """The checkpoint ``federation.resume_from`` names, checked against ``cfg`` (None: the run
    starts fresh). Read before anything is started, created or moved aside.

    Raises
    ------
    FileNotFoundError, CheckpointError
        As :func:`load_latest` and :func:`check_resume_config`, naming the file.
    """
    if not cfg.federation.resume_from:
        return None
    checkpoint = load_latest(Path(cfg.federation.resume_from).expanduser())
    check_resume_config(checkpoint, cfg)
    return checkpoint


def save_checkpoint(
    root: Path,
    server_round: int,
    adapter: AdapterState,
    state: dict,
    ledger_csv: str,
    config: dict | None = None,
) -> Path:
    """Write the checkpoint of ``server_round`` under ``root`` and point LATEST.json at it.

    ``ledger_csv`` is the ledger's CSV text after the round (empty: no ledger file);
    ``config`` the run's :func:`resume_fields`.
    """
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"round-{server_round:05d}"
    tmp = root / f".round-{server_round:05d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_adapter(adapter, tmp / "adapter.safetensors", {"round": str(server_round)})
    if ledger_csv:
        (tmp / "ledger.csv").write_text(ledger_csv)
    (tmp / "state.json").write_text(json.dumps(state, sort_keys=True))
    files = {n: _file_sha256(tmp / n) for n in HASHED_FILES if (tmp / n).is_file()}
    manifest = {"round": server_round, "adapter_sha256": adapter_sha256(adapter), "files": files}
    if config is not None:
        manifest["config"] = config
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


@dataclass(frozen=True)
class _Folder:
    """One checkpoint folder's verified contents."""

    server_round: int
    adapter: AdapterState
    state: dict
    ledger_csv: str
    config: dict | None


def _read_manifest(path: Path, server_round: int) -> dict:
    """The manifest of the folder of ``server_round``, checked for the shape
    :func:`save_checkpoint` writes: its round, a SHA-256 per file of :data:`HASHED_FILES`
    (the adapter's always) and, if recorded, the config as an object."""
    manifest = _read_json(path)
    recorded, files = manifest.get("round", "(not recorded)"), manifest.get("files")
    if type(recorded) is not int or recorded != server_round:
        fault = f"round {recorded!r}, not the folder's {server_round}"
    elif not isinstance(files, dict) or "adapter.safetensors" not in files:
        fault = "no hash of adapter.safetensors in its files"
    elif not set(files) <= set(HASHED_FILES) or not all(isinstance(h, str) for h in files.values()):
        fault = f"files other than a hash each of {', '.join(HASHED_FILES)}: {sorted(files)}"
    elif not isinstance(manifest.get("config", {}), dict):
        fault = "a config that is not an object"
    else:
        return manifest
    raise CheckpointError(f"{path} is not a checkpoint manifest ({fault})")


def _load_folder(folder: Path, pointer: dict | None) -> _Folder:
    """One checkpoint folder, verified: its round, adapter, state, ledger CSV text, config.

    Checked against its manifest (every file's hash, the ledger's too) and, for the folder
    LATEST.json points at, against the pointer's adapter hash.
    """
    manifest_path = folder / MANIFEST
    manifest = _read_manifest(manifest_path, int(folder.name[6:]))
    for name, digest in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{path} is missing")
        if _file_sha256(path) != digest:
            raise CheckpointError(f"{path} does not match its hash in {manifest_path}")
    try:
        adapter = load_adapter_file(folder / "adapter.safetensors")
    except AdapterError as err:
        raise CheckpointError(str(err)) from err
    expected = [(manifest, manifest_path)]
    expected += [(p, folder.parent / LATEST) for p in [pointer] if p is not None]
    for source, path in expected:
        if adapter_sha256(adapter) != source.get("adapter_sha256"):
            raise CheckpointError(f"checkpoint {folder} does not match its hash in {path}")
    state = _read_json(folder / "state.json")
    server_round = manifest["round"]
    ledger = folder / "ledger.csv"
    try:
        ledger_csv = ledger.read_text() if ledger.is_file() else ""
        parse_entries(ledger_csv, str(ledger))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CheckpointError(str(err) if str(ledger) in str(err) else f"{ledger}: {err}") from err
    return _Folder(server_round, adapter, state, ledger_csv, manifest.get("config"))


def _metrics_until(path: Path, server_round: int) -> list[dict]:
    """The earlier run's metric rows up to ``server_round`` (none if it has no metrics file)."""
    if not path.is_file():
        return []
    try:
        rows = pd.read_csv(path).to_dict("records")
        return [row for row in rows if int(row["round"]) <= server_round]
    except (OSError, UnicodeDecodeError, KeyError, ValueError, pd.errors.ParserError) as err:
        raise CheckpointError(f"{path} is not a metrics table ({err})") from err


def _check_inside(root: Path, folder: Path, what: str) -> None:
    """Refuse a checkpoint folder that is not a ``round-NNNNN`` folder inside ``root`` (a
    pointer or a link that leads elsewhere is never loaded)."""
    name = folder.name  # checked first: a name with a NUL byte cannot be resolved
    named = name.startswith("round-") and name[6:].isdigit()
    if not (named and folder.parent == root and folder.resolve().parent == root.resolve()):
        raise CheckpointError(
            f"{what}: {folder} is not a round-NNNNN checkpoint folder inside {root}; refused"
        )


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
        When no checkpoint there is intact (a ValueError), naming each file and its fault,
        or when LATEST.json or a ``round-*`` entry leads outside the checkpoints folder.
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
    if first is not None:
        _check_inside(root, first, f"{latest} names {str(pointer['dir'])!r}")
    folders = sorted(root.glob("round-*"), reverse=True)
    for folder in folders:
        _check_inside(root, folder, "checkpoint folder")
    candidates = [first] if first is not None else []
    candidates += [f for f in folders if f != first]
    for folder in candidates:
        try:
            loaded = _load_folder(folder, pointer if folder == first else None)
        except CheckpointError as err:
            errors.append(str(err))
            log.warning("checkpoint %s is not usable (%s); trying an older one", folder, err)
            continue
        metrics = _metrics_until(root.parent / "metrics.csv", loaded.server_round)
        return Checkpoint(
            loaded.server_round,
            loaded.adapter,
            loaded.state,
            loaded.ledger_csv,
            metrics,
            folder,
            loaded.config,
        )
    raise CheckpointError(f"no intact checkpoint under {root}: " + "; ".join(errors))
