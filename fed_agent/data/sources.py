"""Where each party's examples come from: ``data.source`` = synthetic or files.

``synthetic``: every ES generates its scenes from (seed, partition id); the held-out and the
cloud's splits come from seed streams of their own (``fed_agent.data.partition``).
``files``: every ES reads its own data folder, the folder its SuperNode names in node config
(``data-path``) or, in a simulation, ``<data.path>/<partition-id>/``; the cloud reads its
held-out split from ``data.eval_path`` and its reference split from ``data.cloud_path``. A
folder's path never leaves the ES: what it tells the cloud about broken data is the problem
with the file's name and line only (:attr:`DataFileError.local_reason`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from pathlib import Path

from fed_agent.config.schema import DATA_SOURCES, DataConfig
from fed_agent.data.files import DataFileError, find_problems, load_examples
from fed_agent.data.partition import cloud_examples, es_examples, heldout_examples
from fed_agent.data.tasks import Example

DATA_PATH = "data-path"
"""Node-config key: the ES's own data folder (``data.source=files`` in a deployment)."""


def es_folder(cfg: DataConfig, partition_id: int, node_config: Mapping[str, object]) -> Path:
    """The data folder of the ES: its node config's ``data-path``, else
    ``<data.path>/<partition-id>`` (the simulation layout)."""
    if node_config.get(DATA_PATH):
        return Path(str(node_config[DATA_PATH])).expanduser()
    if not cfg.path:
        raise ValueError(
            f"data.source=files: set data.path (simulation: <path>/<partition-id>/) or the "
            f"node config's {DATA_PATH!r} (deployment: fed-agent deploy supernode --data-path)"
        )
    return Path(cfg.path).expanduser() / str(partition_id)


def es_data(
    cfg: DataConfig, seed: int, partition_id: int, image_size: int | None, folder: Path | None
) -> list[Example]:
    """The ES's training examples (``folder``: its data folder when ``source=files``)."""
    if cfg.source == "synthetic":
        return es_examples(cfg, seed, partition_id, image_size is not None)
    if cfg.source == "files":
        if folder is None:
            raise ValueError("data.source=files: the ES's data folder is needed")
        return _folder_examples(str(folder), image_size)
    raise ValueError(f"unknown data.source {cfg.source!r}; valid choices: {list(DATA_SOURCES)}")


def heldout_data(cfg: DataConfig, seed: int, with_images: bool) -> list[Example]:
    """The cloud's held-out evaluation examples."""
    if cfg.source == "synthetic":
        return heldout_examples(cfg, seed, with_images)
    if cfg.source == "files":
        return _folder_examples(cfg.eval_path, cfg.image_size if with_images else None)
    raise ValueError(f"unknown data.source {cfg.source!r}; valid choices: {list(DATA_SOURCES)}")


def cloud_data(cfg: DataConfig, seed: int, size: int, with_images: bool) -> list[Example]:
    """The cloud's own reference split (``size`` scenes when synthetic; a folder's all)."""
    if cfg.source == "synthetic":
        return cloud_examples(cfg, seed, size, with_images)
    if cfg.source == "files":
        return _folder_examples(cfg.cloud_path, cfg.image_size if with_images else None)
    raise ValueError(f"unknown data.source {cfg.source!r}; valid choices: {list(DATA_SOURCES)}")


def _folder_examples(folder: str, image_size: int | None) -> list[Example]:
    """Examples of a folder, read once per process (keyed by the files' sizes and times)."""
    return list(_cached_examples(folder, image_size, _stamp(Path(folder))))


def _stamp(folder: Path) -> str:
    """Sizes and modification times of the folder's top-level files: a changed file re-reads."""
    if not folder.is_dir():
        return ""
    stats = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir())
    return json.dumps(stats)


@functools.lru_cache(maxsize=8)
def _cached_examples(folder: str, image_size: int | None, stamp: str) -> tuple[Example, ...]:
    return tuple(load_examples(Path(folder).expanduser(), image_size))


def run_folders(cfg: DataConfig, num_es: int | None) -> dict[str, Path]:
    """The folders a ``source=files`` run reads, by role: ``es <i>`` for the first ``num_es``
    partitions under ``data.path`` (none when ``num_es`` is None or ``data.path`` unset: a
    deployment's ESs name their own), ``eval`` and ``cloud``."""
    folders: dict[str, Path] = {}
    if num_es is not None and cfg.path:
        folders.update({f"es {i}": Path(cfg.path).expanduser() / str(i) for i in range(num_es)})
    folders["eval"] = Path(cfg.eval_path).expanduser()
    folders["cloud"] = Path(cfg.cloud_path).expanduser()
    return folders


def check_run_data(cfg: DataConfig, num_es: int | None) -> None:
    """Refuse, before anything starts, a ``source=files`` run with a broken folder.

    Every folder of :func:`run_folders` is checked in full (every line, every image).

    Raises
    ------
    DataFileError
        The first problem found, naming the file and the line.
    """
    if cfg.source != "files":
        return
    for folder in run_folders(cfg, num_es).values():
        _, problems = find_problems(folder, limit=1)
        if problems:
            raise problems[0]


__all__ = [
    "DATA_PATH",
    "DataFileError",
    "check_run_data",
    "cloud_data",
    "es_data",
    "es_folder",
    "heldout_data",
    "run_folders",
]
