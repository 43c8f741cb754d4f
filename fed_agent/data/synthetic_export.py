"""The synthetic scenes written as data folders: what ``data.source=files`` reads.

A run on the written folders (``data.path=<out>/es``, ``data.eval_path=<out>/eval``,
``data.cloud_path=<out>/cloud``) trains and evaluates on the very examples the generated run
with the same seed uses: the ES folders hold each partition's examples, ``eval`` the held-out
split, ``cloud`` the cloud's reference split of ``reference_samples`` scenes.
"""

from __future__ import annotations

from pathlib import Path

from fed_agent.config.schema import DataConfig
from fed_agent.data.files import DatasetMeta
from fed_agent.data.partition import cloud_examples, es_examples, heldout_examples
from fed_agent.data.scenes import ACTIONS
from fed_agent.data.writing import example_record, write_folder


def synthetic_meta(cfg: DataConfig, images: bool) -> DatasetMeta:
    """The metadata of exported scenes: the decision's closed set when it is the only task."""
    answers = ACTIONS if list(cfg.tasks) == ["decide"] else ()
    size = (cfg.image_size, cfg.image_size) if images else None
    return DatasetMeta("decide", answers, size, "RGB" if images else None)


def export_synthetic(
    cfg: DataConfig, seed: int, num_es: int, reference_samples: int, images: bool, out: Path
) -> dict[str, int]:
    """Write ``out/es/<i>/`` (i < ``num_es``), ``out/eval/`` and ``out/cloud/``; the record
    count of each folder."""
    out = Path(out)
    meta = synthetic_meta(cfg, images)
    splits = {f"es/{pid}": es_examples(cfg, seed, pid, images) for pid in range(num_es)}
    splits["eval"] = heldout_examples(cfg, seed, images)
    splits["cloud"] = cloud_examples(cfg, seed, reference_samples, images)
    return {
        name: write_folder(out / name, map(example_record, examples), meta)
        for name, examples in splits.items()
    }
