"""Pre-flight of a run's base model: what must hold on this machine before anything is written.

The config schema validates values only; whether ``model.path`` exists, is in the local
Hugging Face cache, or the device and bitsandbytes are there is this machine's business,
checked here when a run starts (``fed-agent run``, the ServerApp, the in-process runner)
before any SuperLink or output folder exists. Torch-free unless a GPU device is named.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from fed_agent.config.schema import ModelConfig
from fed_agent.models.base import ModelLoadError


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` is set (the project default): no hub look-ups at all."""
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def looks_local(path: str) -> bool:
    """A ``model.path`` that names a directory rather than a hub id."""
    return path.startswith(("/", ".", "~")) or Path(path).expanduser().exists()


def check_hf_model_available(path: str) -> None:
    """``model=hf``: refuse a ``model.path`` that cannot load here.

    A local directory must hold a Hugging Face model (``config.json``); offline a hub id must
    already be in the local Hugging Face cache. Only the cache is looked at (no network, no
    weights read).

    Raises
    ------
    ModelLoadError
        One line naming ``model.path`` and the rule.
    """
    if not path:
        raise ModelLoadError("model.path must name a Hugging Face model id or a local directory")
    if looks_local(path):
        if not (Path(path).expanduser() / "config.json").is_file():
            raise ModelLoadError(
                f"model.path {path!r} must be a directory holding a Hugging Face model "
                "(config.json)"
            )
        return
    if not hub_offline():
        return
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(path, "config.json")
    except ValueError as err:  # HFValidationError: not a valid repo id
        raise ModelLoadError(f"model.path {path!r} is neither a model id nor a directory") from err
    if not isinstance(cached, str):
        raise ModelLoadError(
            f"model.path {path!r} must be available offline (HF_HUB_OFFLINE=1): it is not in the "
            "local Hugging Face cache; download it where there is network (`hf download <id>`) "
            "or set model.path to a local directory"
        )


def check_model(cfg: ModelConfig) -> None:
    """Everything about ``cfg``'s base that this machine must provide (see module docstring).

    Raises
    ------
    ModelLoadError
        One line: a missing or unloadable ``model.path``, a device this machine lacks, or a
        quantised base without bitsandbytes.
    """
    if cfg.name == "hf":
        check_hf_model_available(cfg.path)
    if cfg.quantization != "none" and importlib.util.find_spec("bitsandbytes") is None:
        raise ModelLoadError(
            f"model.quantization={cfg.quantization} needs bitsandbytes: pip install bitsandbytes"
        )
    if cfg.device in ("cuda", "mps"):
        from fed_agent.models.devices import resolve_device  # torch: only for a GPU device

        resolve_device(cfg.device)
