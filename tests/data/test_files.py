"""Data folders: reading records into examples, and every check naming file and line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fed_agent.config.schema import DataConfig
from fed_agent.data.files import (
    DataFileError,
    DatasetMeta,
    find_problems,
    image_array,
    load_examples,
)
from fed_agent.data.writing import OutRecord, array_image, write_folder


def _folder(tmp_path: Path, lines: list[str], meta: dict | None = None) -> Path:
    folder = tmp_path / "es"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data.jsonl").write_text("\n".join(lines) + "\n")
    if meta is not None:
        (folder / "dataset.json").write_text(json.dumps(meta))
    return folder


def _image(folder: Path, name: str, size: tuple[int, int], mode: str = "L") -> str:
    (folder / "img").mkdir(exist_ok=True)
    Image.new(mode, size, color=128 if mode == "L" else (10, 20, 30)).save(folder / "img" / name)
    return f"img/{name}"


def test_jsonl_records_become_examples_with_the_closed_set(tmp_path):
    folder = _folder(
        tmp_path,
        [
            json.dumps({"prompt": "2+2?", "answer": "4"}),
            json.dumps({"prompt": "1+2?", "answer": "3"}),
        ],
        {"task": "sum", "answers": ["3", "4"]},
    )

    examples = load_examples(folder, None)

    assert [(e.task, e.prompt, e.answer, e.choices) for e in examples] == [
        ("sum", "2+2?", " 4", (" 3", " 4")),
        ("sum", "1+2?", " 3", (" 3", " 4")),
    ]


def test_images_are_read_relative_to_the_file_and_resized(tmp_path):
    folder = _folder(tmp_path, [])
    path = _image(folder, "a.png", (8, 8))
    (folder / "data.jsonl").write_text(json.dumps({"prompt": "p", "answer": "a", "image": path}))
    (folder / "dataset.json").write_text(
        json.dumps({"image": {"width": 8, "height": 8, "mode": "L"}})
    )

    (example,) = load_examples(folder, 32)

    assert example.image.shape == (3, 32, 32)
    assert example.image.dtype == np.float32
    assert np.allclose(example.image, 128 / 127.5 - 1.0, atol=1e-6)


def test_an_image_survives_the_round_trip_through_png(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (3, 16, 16)).astype(np.float32)
    image = pixels / 127.5 - 1.0
    array_image(image).save(tmp_path / "x.png")

    assert np.array_equal(image_array(Image.open(tmp_path / "x.png"), 16), image)


@pytest.mark.parametrize(
    ("line", "meta", "expected"),
    [
        ("{not json", None, "data.jsonl:2: unreadable line"),
        ('{"prompt": "p"}', None, "data.jsonl:2: missing field 'answer'"),
        ('{"prompt": 3, "answer": "a"}', None, "data.jsonl:2: field 'prompt' must be text"),
        (
            '{"prompt": "p", "answer": "z"}',
            {"answers": ["a"]},
            "data.jsonl:2: answer 'z' is outside",
        ),
        ('{"prompt": "p", "answer": "a", "image": "i.png"}', None, "'image' set, unlike line 1"),
    ],
)
def test_a_broken_record_is_named_by_file_and_line(tmp_path, line, meta, expected):
    good = json.dumps({"prompt": "p", "answer": "a"})
    folder = _folder(tmp_path, [good, line], meta)

    count, problems = find_problems(folder)

    assert len(problems) == 1
    assert expected in str(problems[0])
    assert str(problems[0]).startswith(str(folder))
    with pytest.raises(DataFileError, match="data.jsonl:2"):
        load_examples(folder, None)


def test_an_image_that_does_not_open_is_named(tmp_path):
    folder = _folder(tmp_path, [])
    (folder / "bad.png").write_bytes(b"not a png")
    rows = [{"prompt": "p", "answer": "a", "image": p} for p in ("bad.png", "gone.png")]
    (folder / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")

    _, problems = find_problems(folder)

    assert [(p.line, "does not open" in p.reason) for p in problems] == [(1, True), (2, True)]


def test_a_wrong_image_size_or_mode_is_refused(tmp_path):
    folder = _folder(tmp_path, [])
    small, rgb = _image(folder, "s.png", (4, 4)), _image(folder, "c.png", (8, 8), "RGB")
    rows = [{"prompt": "p", "answer": "a", "image": p} for p in (small, rgb)]
    (folder / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (folder / "dataset.json").write_text(
        json.dumps({"image": {"width": 8, "height": 8, "mode": "L"}})
    )

    _, problems = find_problems(folder)

    assert [p.line for p in problems] == [1, 2]
    assert "is 4x4, dataset.json says 8x8" in problems[0].reason
    assert "has mode RGB, dataset.json says L" in problems[1].reason


def test_an_empty_data_set_and_a_missing_folder_are_problems(tmp_path):
    empty = _folder(tmp_path, [""])

    assert "empty data set" in str(find_problems(empty)[1][0])
    assert "no such data folder" in str(find_problems(tmp_path / "nowhere")[1][0])


def test_a_folder_named_dataset_json_is_a_problem_not_missing_metadata(tmp_path):
    folder = _folder(tmp_path, ['{"prompt": "a", "answer": "b"}'])
    (folder / "dataset.json").mkdir()
    count, problems = find_problems(folder)
    assert len(problems) == 1
    assert str(problems[0]).startswith(f"{folder}/dataset.json: [Errno 21] Is a directory")


def test_local_reason_holds_no_folder_path(tmp_path):
    folder = _folder(tmp_path, ['{"prompt": "p"}'])

    (problem,) = find_problems(folder)[1]

    assert problem.local_reason == "data.jsonl:1: missing field 'answer'"
    assert str(tmp_path) not in problem.local_reason


def test_a_text_model_refuses_image_records(tmp_path):
    folder = _folder(tmp_path, [])
    path = _image(folder, "a.png", (8, 8))
    (folder / "data.jsonl").write_text(json.dumps({"prompt": "p", "answer": "a", "image": path}))

    with pytest.raises(DataFileError, match="reads text only"):
        load_examples(folder, None)


def test_parquet_and_save_to_disk_folders_read_like_jsonl(tmp_path):
    from datasets import Dataset

    rows = {"prompt": ["a?", "b?"], "answer": ["x", "y"]}
    parquet = tmp_path / "pq"
    parquet.mkdir()
    Dataset.from_dict(rows).to_parquet(str(parquet / "data.parquet"))
    saved = tmp_path / "hf"
    Dataset.from_dict(rows).save_to_disk(str(saved))

    for folder in (parquet, saved):
        examples = load_examples(folder, None)
        assert [(e.prompt, e.answer) for e in examples] == [("a?", " x"), ("b?", " y")]


def test_write_folder_then_load_gives_the_records_back(tmp_path):
    records = [OutRecord("p1", "a", None, Image.new("L", (8, 8), 255)), OutRecord("p2", "b")]
    meta = DatasetMeta("t", ("a", "b"), (8, 8), "L")

    write_folder(tmp_path / "f", records[:1], meta)

    (example,) = load_examples(tmp_path / "f", 8)
    assert (example.task, example.prompt, example.answer) == ("t", "p1", " a")
    assert np.allclose(example.image, 1.0)
    with pytest.raises(FileExistsError):
        write_folder(tmp_path / "f", records, meta)


def test_unknown_data_source_lists_the_choices():
    with pytest.raises(ValueError, match=r"data.source.*\['files', 'synthetic'\]"):
        DataConfig(source="csv")


def test_files_source_needs_the_clouds_own_folders():
    with pytest.raises(ValueError, match="data.eval_path and data.cloud_path"):
        DataConfig(source="files", path="x")
