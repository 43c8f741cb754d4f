"""Write data folders in the format ``fed_agent.data.files`` reads (docs/data.md)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fed_agent.data.files import JSONL_FILE, META_FILE, DatasetMeta
from fed_agent.data.tasks import Example

IMAGE_DIR = "images"


@dataclass(frozen=True)
class OutRecord:
    """One record to write: its text, its task and its image (a PIL image, a file to copy, or
    None)."""

    prompt: str
    answer: str
    task: str | None = None
    image: object = None


def write_folder(folder: Path, records: Iterable[OutRecord], meta: DatasetMeta) -> int:
    """Write ``data.jsonl``, ``dataset.json`` and ``images/`` into ``folder`` (created; it must
    not hold a data set yet); returns the number of records."""
    folder = Path(folder)
    if (folder / JSONL_FILE).exists():
        raise FileExistsError(f"{folder / JSONL_FILE} exists; choose an empty folder")
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    with (folder / JSONL_FILE).open("w", encoding="utf-8") as out:
        for index, record in enumerate(records):
            row: dict[str, object] = {"prompt": record.prompt, "answer": record.answer}
            if record.task is not None and record.task != meta.task:
                row["task"] = record.task
            if record.image is not None:
                row["image"] = _write_image(folder, index, record.image)
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    (folder / META_FILE).write_text(json.dumps(meta.to_dict(), indent=2) + "\n")
    return count


def _write_image(folder: Path, index: int, image: object) -> str:
    """Store the image under ``images/``; its path relative to the folder."""
    (folder / IMAGE_DIR).mkdir(exist_ok=True)
    if isinstance(image, str | Path):
        source = Path(image)
        name = f"{IMAGE_DIR}/{index:05d}{source.suffix.lower()}"
        shutil.copyfile(source, folder / name)
        return name
    name = f"{IMAGE_DIR}/{index:05d}.png"
    image.save(folder / name)  # type: ignore[attr-defined]
    return name


def array_image(image: np.ndarray):
    """A (3, H, W) float image in [-1, 1] (the models' input) as an RGB PIL image: the inverse
    of :func:`fed_agent.data.files.image_array`, exact for pixels on the 0-255 grid."""
    from PIL import Image

    pixels = np.rint((image.transpose(1, 2, 0) + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
    return Image.fromarray(pixels, mode="RGB")


def example_record(example: Example) -> OutRecord:
    """An example as a record: the answer without the leading space the loader puts back."""
    image = None if example.image is None else array_image(example.image)
    answer = example.answer[1:] if example.answer.startswith(" ") else example.answer
    return OutRecord(example.prompt, answer, example.task, image)
