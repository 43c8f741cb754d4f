"""Split one data folder into per-ES folders plus the cloud's held-out and reference folders.

The records become a Hugging Face ``datasets.Dataset`` (one row per record: its index and its
``--by`` value); the held-out and the cloud's rows are drawn first with
``Dataset.train_test_split``, the rest is divided over the ESs by a flwr-datasets partitioner
(IID, Dirichlet over the ``--by`` values, or pathological: a few values per ES). Nothing here
partitions by hand; this module only writes the folders the partitioners choose.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from fed_agent.data.files import DataFileError, Record, iter_records, open_image, read_meta
from fed_agent.data.writing import OutRecord, write_folder
from fed_agent.validation import check_number

PARTITIONERS = ("iid", "dirichlet", "pathological")
SPLIT_SUMMARY = "split.json"
"""Per-folder record counts by ``--by`` value, written beside the folders."""


@dataclass(frozen=True)
class SplitSpec:
    """How to split: into how many ESs, with which partitioner, over which column."""

    num_es: int
    partitioner: str = "dirichlet"
    alpha: float = 0.5
    by: str = "answer"
    eval_size: int = 300
    cloud_size: int = 64
    classes_per_es: int = 2
    """``pathological``: distinct ``by`` values per ES."""
    min_es_size: int = 10
    """``dirichlet``: resample until every ES holds at least this many records."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.partitioner not in PARTITIONERS:
            raise ValueError(
                f"unknown partitioner {self.partitioner!r}; valid choices: {list(PARTITIONERS)}"
            )
        if self.by not in ("answer", "task"):
            raise ValueError(f"unknown --by column {self.by!r}; valid choices: ['answer', 'task']")
        for name in ("num_es", "eval_size", "cloud_size", "classes_per_es", "min_es_size"):
            check_number(f"--{name.replace('_', '-')}", getattr(self, name), 1, integer=True)
        check_number("--seed", self.seed, 0, integer=True)
        check_number("--alpha", self.alpha, 0, ends="()")


def _partitioner(spec: SplitSpec):
    from flwr_datasets.partitioner import (
        DirichletPartitioner,
        IidPartitioner,
        PathologicalPartitioner,
    )

    makers: dict[str, Callable[[], object]] = {
        "iid": lambda: IidPartitioner(spec.num_es),
        "dirichlet": lambda: DirichletPartitioner(
            spec.num_es, spec.by, spec.alpha, spec.min_es_size, seed=spec.seed
        ),
        "pathological": lambda: PathologicalPartitioner(
            spec.num_es, spec.by, spec.classes_per_es, seed=spec.seed
        ),
    }
    if spec.partitioner not in makers:
        raise ValueError(f"unknown partitioner {spec.partitioner!r}; valid choices: {PARTITIONERS}")
    return makers[spec.partitioner]()


def split_rows(values: list[str], spec: SplitSpec) -> dict[str, list[int]]:
    """Row indices per output folder (``eval``, ``cloud``, ``es/0`` ...) for rows whose
    ``spec.by`` values are ``values``."""
    from datasets import Dataset, disable_progress_bars

    disable_progress_bars()
    if len(values) < spec.eval_size + spec.cloud_size + spec.num_es:
        raise ValueError(
            f"{len(values)} records cannot fill eval ({spec.eval_size}), cloud "
            f"({spec.cloud_size}) and {spec.num_es} ESs"
        )
    table = Dataset.from_dict({"row": list(range(len(values))), spec.by: values})
    held = table.train_test_split(test_size=spec.eval_size, seed=spec.seed)
    cloud = held["train"].train_test_split(test_size=spec.cloud_size, seed=spec.seed + 1)
    rows = {"eval": list(held["test"]["row"]), "cloud": list(cloud["test"]["row"])}
    partitioner = _partitioner(spec)
    partitioner.dataset = cloud["train"]
    for es in range(spec.num_es):
        rows[f"es/{es}"] = list(partitioner.load_partition(es)["row"])
    return rows


def split_folder(source: Path, out: Path, spec: SplitSpec) -> dict[str, dict[str, int]]:
    """Split the records of ``source`` into ``out/es/<i>/``, ``out/eval/`` and ``out/cloud/``.

    The closed answer set written to every folder's ``dataset.json`` is the source's, or, when
    it has none and ``spec.by`` is ``answer``, every answer the source holds (from the data).
    Every record is checked first (a broken source raises :class:`DataFileError`).

    Returns
    -------
    dict
        Per folder, its record count by ``spec.by`` value (also written to ``split.json``).
    """
    source, out = Path(source), Path(out)
    meta = read_meta(source)
    records = list(iter_records(source))
    for record in records:  # the images open and fit before any folder is written
        if record.image is not None:
            try:
                open_image(source, record, meta)
            except ValueError as err:
                raise DataFileError(source, record.name, record.line, str(err)) from err
    values = [_value(r, spec.by, meta.task) for r in records]
    if not meta.answers and spec.by == "answer":
        meta = replace(meta, answers=tuple(sorted(set(values), key=_natural)))
    summary: dict[str, dict[str, int]] = {}
    for name, rows in split_rows(values, spec).items():
        write_folder(out / name, (_out_record(source, records[i], meta) for i in rows), meta)
        summary[name] = dict(sorted(Counter(values[i] for i in rows).items()))
    (out / SPLIT_SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _value(record: Record, by: str, default_task: str) -> str:
    return record.answer.strip() if by == "answer" else (record.task or default_task)


def _natural(value: str) -> tuple[int, float | str]:
    """Numbers in numeric order, then text."""
    try:
        return 0, float(value)
    except ValueError:
        return 1, value


def _out_record(source: Path, record: Record, meta) -> OutRecord:
    image = record.image
    if isinstance(image, str):
        image = source / image  # copied as is
    elif image is not None:
        image = open_image(source, record, meta)
    return OutRecord(record.prompt, record.answer.strip(), record.task, image)
