"""One data folder of prompt/answer records: its format, its checks, its examples.

A data folder (docs/data.md) holds the records in one of three files, looked for in this
order, and an optional metadata file beside them:

``data.jsonl``
    One JSON object per line: ``prompt`` (text), ``answer`` (text), optionally ``image`` (a
    PNG/JPEG path relative to the folder) and ``task`` (a name; default the metadata's).
    The primary format: a person can read, write and diff it, and a line number says where a
    problem is.
``data.parquet``
    The same columns (``image`` a relative path or the encoded image bytes).
a Hugging Face ``datasets`` ``save_to_disk`` folder
    (``state.json`` + Arrow files), the same columns; ``image`` a path, bytes, or a
    ``datasets.Image`` feature.
``dataset.json``
    ``task`` (the name of the records' task), ``answers`` (the closed answer set: accuracy is
    the share of records whose most likely answer among these is right; absent for free-text
    answers, scored by exact match and answer loss), ``image`` (``width``, ``height``,
    ``mode``: what every image must be).

Every problem is a :class:`DataFileError` naming the file and the line (or row).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fed_agent.data.tasks import Example

JSONL_FILE = "data.jsonl"
PARQUET_FILE = "data.parquet"
SAVED_DATASET_FILE = "state.json"
"""Present in a folder written by ``datasets.Dataset.save_to_disk``."""
META_FILE = "dataset.json"
IMAGE_MODES = ("L", "RGB")
"""Image modes a metadata file may ask for (others are converted: RGBA, P, ...)."""
DEFAULT_TASK = "answer"
MAX_PROBLEMS = 20
"""``find_problems`` stops after this many (one broken column would repeat on every line)."""


class DataFileError(ValueError):
    """A problem of one data folder, located by file and line (or row)."""

    def __init__(self, folder: Path, name: str, line: int | None, reason: str) -> None:
        self.folder, self.name, self.line, self.reason = Path(folder), name, line, reason
        super().__init__(f"{self.folder / name}{self._where()}: {reason}")

    def _where(self) -> str:
        return "" if self.line is None else f":{self.line}"

    @property
    def local_reason(self) -> str:
        """The problem without the folder's path (what an ES may tell the cloud)."""
        return f"{self.name}{self._where()}: {self.reason}" if self.name else self.reason


@dataclass(frozen=True)
class DatasetMeta:
    """What ``dataset.json`` says about a folder's records."""

    task: str = DEFAULT_TASK
    answers: tuple[str, ...] = ()
    """The closed answer set (empty: free-text answers)."""
    image_size: tuple[int, int] | None = None
    """(width, height) every image must have (None: any)."""
    image_mode: str | None = None

    def to_dict(self) -> dict[str, object]:
        """The JSON content of ``dataset.json``."""
        out: dict[str, object] = {"task": self.task}
        if self.answers:
            out["answers"] = list(self.answers)
        if self.image_size is not None or self.image_mode is not None:
            image: dict[str, object] = {}
            if self.image_size is not None:
                image["width"], image["height"] = self.image_size
            if self.image_mode is not None:
                image["mode"] = self.image_mode
            out["image"] = image
        return out

    @classmethod
    def from_dict(cls, values: object) -> DatasetMeta:
        """Parse and check a ``dataset.json`` object; raise ValueError saying what is wrong."""
        if not isinstance(values, dict):
            raise ValueError(f"must hold a JSON object, got {type(values).__name__}")
        unknown = sorted(set(values) - {"task", "answers", "image"})
        if unknown:
            raise ValueError(f"unknown keys {unknown}; valid keys: ['answers', 'image', 'task']")
        task = values.get("task", DEFAULT_TASK)
        if not isinstance(task, str) or not task:
            raise ValueError(f"'task' must be a non-empty string, got {task!r}")
        answers = values.get("answers") or []
        if not isinstance(answers, list) or not all(isinstance(a, str) and a for a in answers):
            raise ValueError(f"'answers' must be a list of non-empty strings, got {answers!r}")
        if len(set(answers)) != len(answers):
            raise ValueError(f"'answers' holds a duplicate: {answers}")
        size, mode = _image_spec(values.get("image"))
        return cls(task, tuple(answers), size, mode)


def _image_spec(image: object) -> tuple[tuple[int, int] | None, str | None]:
    if image is None:
        return None, None
    if not isinstance(image, dict) or not set(image) <= {"width", "height", "mode"}:
        raise ValueError(f"'image' must be an object of width, height and mode, got {image!r}")
    width, height = image.get("width"), image.get("height")
    if (width is None) != (height is None):
        raise ValueError("'image' needs both width and height, or neither")
    size = None
    if width is not None:
        if not all(isinstance(v, int) and v > 0 for v in (width, height)):
            raise ValueError(f"image width and height must be integers > 0, got {image!r}")
        size = (int(width), int(height))  # type: ignore[arg-type]
    mode = image.get("mode")
    if mode is not None and mode not in IMAGE_MODES:
        raise ValueError(f"image mode {mode!r} unknown; valid choices: {list(IMAGE_MODES)}")
    return size, mode


@dataclass(frozen=True)
class Record:
    """One record as read: where it is, its fields, its image (a path, bytes or a PIL image)."""

    name: str
    line: int
    prompt: str
    answer: str
    image: object = None
    task: str | None = None
    extra: dict[str, object] = field(default_factory=dict)


def read_meta(folder: Path) -> DatasetMeta:
    """The folder's metadata (defaults when it has no ``dataset.json``; a folder of that name
    is a problem, not an absent file)."""
    path = Path(folder) / META_FILE
    if not path.exists():
        return DatasetMeta()
    try:
        return DatasetMeta.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, ValueError) as err:  # JSONDecodeError is a ValueError
        raise DataFileError(folder, META_FILE, None, str(err)) from err


def records_file(folder: Path) -> str:
    """Which records file the folder holds (``data.jsonl``, ``data.parquet``, ``state.json``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataFileError(folder, "", None, "no such data folder")
    for name in (JSONL_FILE, PARQUET_FILE, SAVED_DATASET_FILE):
        if (folder / name).is_file():
            return name
    raise DataFileError(
        folder,
        "",
        None,
        f"no records: expected {JSONL_FILE}, {PARQUET_FILE} or a datasets save_to_disk folder",
    )


def _record(name: str, line: int, values: object) -> Record:
    """A record from one parsed row; a missing or mistyped field raises DataFileError."""
    if not isinstance(values, dict):
        raise ValueError(f"a record must be a JSON object, got {type(values).__name__}")
    for key in ("prompt", "answer"):
        if key not in values or values[key] is None:
            raise ValueError(f"missing field {key!r}")
        if not isinstance(values[key], str):
            raise ValueError(f"field {key!r} must be text, got {values[key]!r}")
    if not values["answer"].strip():
        raise ValueError("field 'answer' is empty")
    task = values.get("task")
    if task is not None and not (isinstance(task, str) and task):
        raise ValueError(f"field 'task' must be a non-empty string, got {task!r}")
    extra = {k: v for k, v in values.items() if k not in ("prompt", "answer", "image", "task")}
    return Record(name, line, values["prompt"], values["answer"], values.get("image"), task, extra)


def _rows(folder: Path, name: str) -> Iterator[tuple[int, object]]:
    """(line or row number, parsed row) of the records file; an unreadable line raises."""
    path = folder / name
    if name == JSONL_FILE:
        with path.open("rb") as lines:
            for number, raw in enumerate(lines, start=1):
                if not raw.strip():
                    continue
                try:
                    yield number, json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, ValueError) as err:
                    raise DataFileError(folder, name, number, f"unreadable line ({err})") from err
        return
    try:
        if name == PARQUET_FILE:
            import pandas as pd

            frame = pd.read_parquet(path)
            table = (row.to_dict() for _, row in frame.iterrows())
        else:
            from datasets import load_from_disk

            table = iter(load_from_disk(str(folder)))
    except Exception as err:  # any reader failure: report the file, not a traceback
        raise DataFileError(folder, name, None, f"unreadable ({err})") from err
    yield from enumerate(table, start=1)


def iter_records(folder: Path) -> Iterator[Record]:
    """The folder's records in file order; the first unreadable or incomplete one raises."""
    folder = Path(folder)
    name = records_file(folder)
    for number, values in _rows(folder, name):
        try:
            yield _record(name, number, values)
        except ValueError as err:
            raise DataFileError(folder, name, number, str(err)) from err


def open_image(folder: Path, record: Record, meta: DatasetMeta):
    """The record's image as a loaded PIL image, checked against the metadata."""
    from PIL import Image, UnidentifiedImageError

    value = record.image
    try:
        if isinstance(value, Image.Image):
            image = value
        elif isinstance(value, dict) and value.get("bytes") is not None:
            image = Image.open(io.BytesIO(value["bytes"]))
        elif isinstance(value, bytes):
            image = Image.open(io.BytesIO(value))
        elif isinstance(value, dict | str):
            relative = value["path"] if isinstance(value, dict) else value
            path = (folder / str(relative)).resolve()
            if not path.is_relative_to(folder.resolve()):
                raise ValueError(f"image {relative!r} lies outside the data folder")
            image = Image.open(path)
        else:
            raise ValueError(f"field 'image' must be a relative path, got {value!r}")
        image.load()
    except (OSError, UnidentifiedImageError, KeyError) as err:
        raise ValueError(f"image {_shown(value)} does not open ({err})") from err
    if meta.image_size is not None and image.size != meta.image_size:
        raise ValueError(
            f"image {_shown(value)} is {image.size[0]}x{image.size[1]}, dataset.json says "
            f"{meta.image_size[0]}x{meta.image_size[1]}"
        )
    if meta.image_mode is not None and image.mode != meta.image_mode:
        raise ValueError(
            f"image {_shown(value)} has mode {image.mode}, dataset.json says {meta.image_mode}"
        )
    return image


def _shown(value: object) -> str:
    return repr(value) if isinstance(value, str) else "(embedded)"


def image_array(image, size: int) -> np.ndarray:
    """A PIL image as the models read it: (3, size, size) float32 in [-1, 1], RGB.

    The synthetic renderer's scaling (``fed_agent.data.render``); resized (bilinear) only when
    the image is not ``size`` x ``size`` already.
    """
    from PIL import Image

    rgb = image.convert("RGB")
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    pixels = np.asarray(rgb, dtype=np.float32) / 127.5 - 1.0
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def _check_record(folder: Path, record: Record, meta: DatasetMeta, with_images: bool | None):
    """The record's problem (ValueError) or its image (None when it has none)."""
    if meta.answers and record.answer.strip() not in meta.answers:
        raise ValueError(
            f"answer {record.answer.strip()!r} is outside the closed answer set "
            f"{list(meta.answers)} of dataset.json"
        )
    if record.image is None:
        if with_images:
            raise ValueError("no field 'image': the model reads an image with every prompt")
        return None
    if with_images is False:
        raise ValueError("field 'image' set, but the model reads text only")
    return open_image(folder, record, meta)


def load_examples(folder: Path, image_size: int | None) -> list[Example]:
    """Every record of ``folder`` as an :class:`Example`, checked on the way.

    Parameters
    ----------
    folder : Path
        A data folder (module docstring).
    image_size : int or None
        The model's image side: every record must carry an image, resized to it; None for a
        text model (no record may carry an image).

    Raises
    ------
    DataFileError
        The first problem, naming the file and the line.
    """
    folder = Path(folder)
    meta = read_meta(folder)
    choices = tuple(f" {a}" for a in meta.answers)
    examples = []
    for record in iter_records(folder):
        try:
            image = _check_record(folder, record, meta, image_size is not None)
        except ValueError as err:
            raise DataFileError(folder, record.name, record.line, str(err)) from err
        array = None if image is None or image_size is None else image_array(image, image_size)
        # one space between prompt and answer: the tokenisation the synthetic tasks use
        examples.append(
            Example(
                record.task or meta.task, record.prompt, f" {record.answer.strip()}", array, choices
            )
        )
    if not examples:
        raise DataFileError(folder, records_file(folder), None, "empty data set: no records")
    return examples


def find_problems(folder: Path, limit: int = MAX_PROBLEMS) -> tuple[int, list[DataFileError]]:
    """Check every record of ``folder`` (images opened, sizes and modes compared, answers in
    the closed set, all records with an image or none); the record count and the problems
    (at most ``limit``; an unreadable file or line ends the check)."""
    folder = Path(folder)
    problems: list[DataFileError] = []
    count, first = 0, None
    try:
        meta = read_meta(folder)
        for record in iter_records(folder):
            count += 1
            first = first or record
            try:
                if (record.image is None) != (first.image is None):
                    raise ValueError(
                        f"field 'image' {'missing' if record.image is None else 'set'}, unlike "
                        f"line {first.line}: every record has an image or none has"
                    )
                _check_record(folder, record, meta, None)
            except ValueError as err:
                problems.append(DataFileError(folder, record.name, record.line, str(err)))
            if len(problems) >= limit:
                break
        if count == 0:
            problems.append(
                DataFileError(folder, records_file(folder), None, "empty data set: no records")
            )
    except DataFileError as err:
        problems.append(err)
    return count, problems
