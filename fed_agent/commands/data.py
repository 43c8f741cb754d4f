"""``fed-agent data``: prepare, split and check data folders (docs/data.md).

- ``check PATH``: check a data folder, or every data folder below PATH (every line, every
  image); exit 2 when any has a problem, each named by file and line;
- ``split INPUT``: one folder -> ``es/<i>/`` per ES plus ``eval/`` and ``cloud/``, with a
  flwr-datasets partitioner;
- ``digits``: scikit-learn's bundled handwritten digits as one data folder (image or text);
- ``export-synthetic``: an experiment's synthetic scenes as data folders.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fed_agent.config import experiment_names


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``data`` and its sub-commands."""
    parser = subparsers.add_parser("data", help="prepare, split and check data folders")
    commands = parser.add_subparsers(dest="data_command", required=True, metavar="COMMAND")

    check = commands.add_parser("check", help="check data folders (file and line of problems)")
    check.add_argument("path", type=Path, help="a data folder or a folder of data folders")
    check.set_defaults(handler=_check)

    split = commands.add_parser("split", help="split a data folder over ESs (flwr-datasets)")
    split.add_argument("input", type=Path, help="the data folder to split")
    split.add_argument("--num-es", type=int, required=True)
    split.add_argument(
        "--partitioner", default="dirichlet", choices=["iid", "dirichlet", "pathological"]
    )
    split.add_argument("--alpha", type=float, default=0.5, help="dirichlet concentration")
    split.add_argument("--by", default="answer", choices=["answer", "task"])
    split.add_argument("--classes-per-es", type=int, default=2, help="pathological")
    split.add_argument("--eval-size", type=int, default=300, help="held-out records")
    split.add_argument("--cloud-size", type=int, default=64, help="cloud reference records")
    split.add_argument("--seed", type=int, default=0)
    split.add_argument("--out", type=Path, required=True)
    split.set_defaults(handler=_split)

    digits = commands.add_parser("digits", help="scikit-learn's digits as one data folder")
    digits.add_argument("--form", default="image", choices=["image", "text"])
    digits.add_argument("--out", type=Path, required=True)
    digits.set_defaults(handler=_digits)

    export = commands.add_parser("export-synthetic", help="synthetic scenes as data folders")
    export.add_argument("--experiment", default="default", choices=experiment_names())
    export.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. seed=1")
    export.add_argument("--images", action="store_true", help="rendered images (VLM runs)")
    export.add_argument("--out", type=Path, required=True)
    export.set_defaults(handler=_export)


def _fail(message: str) -> int:
    print(f"fed-agent data: {message}", file=sys.stderr)
    return 2


def data_folders(path: Path) -> list[Path]:
    """``path`` if it is a data folder, else every data folder below it (sorted)."""
    from fed_agent.data.files import JSONL_FILE, PARQUET_FILE, SAVED_DATASET_FILE

    names = (JSONL_FILE, PARQUET_FILE, SAVED_DATASET_FILE)
    if any((path / n).is_file() for n in names):
        return [path]
    found = {p.parent for n in names for p in path.rglob(n)}
    return sorted(found, key=lambda p: [int(s) if s.isdigit() else s for s in p.parts])


def _check(args: argparse.Namespace) -> int:
    from fed_agent.data.files import find_problems

    if not args.path.is_dir():
        return _fail(f"{args.path}: no such folder")
    folders = data_folders(args.path)
    if not folders:
        return _fail(f"{args.path}: no data folder (data.jsonl, data.parquet, save_to_disk)")
    broken = 0
    for folder in folders:
        count, problems = find_problems(folder)
        if problems:
            broken += 1
            for problem in problems:
                print(f"error: {problem}", file=sys.stderr)
        else:
            print(f"ok: {folder}: {count} records")
    if broken:
        return _fail(f"{broken} of {len(folders)} data folders have problems")
    return 0


def _split(args: argparse.Namespace) -> int:
    from fed_agent.data.split import SplitSpec, split_folder

    try:
        spec = SplitSpec(
            args.num_es,
            args.partitioner,
            args.alpha,
            args.by,
            args.eval_size,
            args.cloud_size,
            args.classes_per_es,
            seed=args.seed,
        )
        summary = split_folder(args.input, args.out, spec)
    except (ValueError, FileExistsError) as err:  # DataFileError is a ValueError
        return _fail(str(err))
    for name, counts in summary.items():
        print(f"{name}: {sum(counts.values())} records {json.dumps(counts)}")
    print(
        f"data.path={args.out / 'es'} data.eval_path={args.out / 'eval'} "
        f"data.cloud_path={args.out / 'cloud'}"
    )
    return 0


def _digits(args: argparse.Namespace) -> int:
    from fed_agent.data.digits import digits_records
    from fed_agent.data.writing import write_folder

    records, meta = digits_records(args.form)
    try:
        count = write_folder(args.out, records, meta)
    except FileExistsError as err:
        return _fail(str(err))
    print(f"wrote {count} digits ({args.form}) to {args.out}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from fed_agent.config import ConfigError, load_config
    from fed_agent.data.synthetic_export import export_synthetic

    try:
        cfg = load_config(args.experiment, args.overrides)
        counts = export_synthetic(
            cfg.data,
            cfg.seed,
            cfg.federation.num_es,
            cfg.screening.reference_samples,
            args.images,
            args.out,
        )
    except (ConfigError, ValueError, FileExistsError) as err:
        return _fail(str(err))
    print(f"wrote {sum(counts.values())} records in {len(counts)} folders under {args.out}")
    print(
        f"data.source=files data.path={args.out / 'es'} data.eval_path={args.out / 'eval'} "
        f"data.cloud_path={args.out / 'cloud'}"
    )
    return 0
