"""A real data set that installs with no download: scikit-learn's handwritten digits.

1,797 grey 8x8 images of the digits 0-9 (16 intensity levels). Two forms of the same task:
``image`` (a VLM sees the picture and is asked which digit it is) and ``text`` (an LLM reads
the 64 intensities, row by row, as hex digits).
"""

from __future__ import annotations

import numpy as np

from fed_agent.data.files import DatasetMeta
from fed_agent.data.writing import OutRecord

DIGIT_TASK = "digit"
DIGIT_ANSWERS = tuple(str(d) for d in range(10))
IMAGE_PROMPT = "Handwritten digit.\nWhich digit?"
TEXT_PROMPT = "Digit pixels {rows}\nWhich digit?"
FORMS = ("image", "text")


def digits_records(form: str) -> tuple[list[OutRecord], DatasetMeta]:
    """Every digit as a record in ``form`` (image or text) and the folder's metadata."""
    from sklearn.datasets import load_digits

    if form not in FORMS:
        raise ValueError(f"unknown digits form {form!r}; valid choices: {list(FORMS)}")
    digits = load_digits()
    levels = digits.images.astype(np.int64)  # (n, 8, 8), 0-16
    labels = [str(int(t)) for t in digits.target]
    if form == "image":
        from PIL import Image

        pixels = np.rint(levels * 255 / 16).astype(np.uint8)
        records = [
            OutRecord(IMAGE_PROMPT, label, None, Image.fromarray(image, mode="L"))
            for image, label in zip(pixels, labels, strict=True)
        ]
        return records, DatasetMeta(DIGIT_TASK, DIGIT_ANSWERS, (8, 8), "L")
    records = [
        OutRecord(TEXT_PROMPT.format(rows=_hex_rows(image)), label)
        for image, label in zip(levels, labels, strict=True)
    ]
    return records, DatasetMeta(DIGIT_TASK, DIGIT_ANSWERS)


def _hex_rows(image: np.ndarray) -> str:
    """8 rows of 8 intensities, each level 0-16 halved to one hex digit (0-8)."""
    return " ".join("".join(f"{int(v) // 2:x}" for v in row) for row in image)
