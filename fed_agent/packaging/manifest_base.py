"""What a manifest's base entry may name: nothing outside the agent folder and the model cache.

An agent folder is data from elsewhere. Its ``base.model_config`` must not choose where this
machine builds and caches bases (``cache_dir``), and a ``model=hf`` base comes from a Hugging
Face model id (the local Hugging Face cache), the agent's own copy (``base.folder``, confined
by :func:`fed_agent.packaging.export.confined_path`) or one folder of this machine's model
cache (``base.cache_folder``), never from a path the manifest picks.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from fed_agent.config.schema import ModelConfig
from fed_agent.modules.adapter import AdapterError


def check_base_entry(base: dict, what: str) -> None:
    """Refuse a manifest base entry that names a path or cache outside the agent and cache.

    Parameters
    ----------
    base : dict
        The entry (``manifest["base"]`` or ``manifest["modules"][name]["base"]``).
    what : str
        Where it is, for the message (``<manifest path>: base``).

    Raises
    ------
    AdapterError
        One line naming the key (``base.model_config.cache_dir``, ``base.model_config.path``,
        ``base.cache_folder``) and the rule, or saying why the config is no model config.
    """
    values = base["model_config"]
    if not isinstance(values, dict):
        raise AdapterError(f"{what}.model_config must be an object, got {values!r}")
    if values.get("cache_dir"):
        raise AdapterError(
            f"{what}.model_config.cache_dir {values['cache_dir']!r}: an agent may not choose "
            "where this machine builds and caches bases (remove the key)"
        )
    path = values.get("path")
    if values.get("name") == "hf" and path:
        _check_hub_id(path, f"{what}.model_config.path")
    folder = base.get("cache_folder")
    if folder is not None and not _is_one_folder_name(folder):
        raise AdapterError(
            f"{what}.cache_folder must be one folder name in the model cache (no separators, "
            f"not '.' or '..'), got {folder!r}"
        )
    try:
        ModelConfig(**values)
    except (TypeError, ValueError) as err:
        raise AdapterError(f"{what}.model_config is not a valid model config: {err}") from err


def _check_hub_id(path: object, what: str) -> None:
    """A ``model=hf`` path in a manifest is a Hugging Face model id, and no local folder."""
    rule = (
        "a manifest names a model=hf base by its Hugging Face model id; a folder comes from "
        "base.folder (inside the agent) or base.cache_folder (the model cache)"
    )
    if not isinstance(path, str):
        raise AdapterError(f"{what} must be a Hugging Face model id, got {path!r}")
    try:
        validate_repo_id(path)
    except HFValidationError as err:
        raise AdapterError(f"{what} {path!r} is not a model id: {rule}") from err
    if Path(path).exists():  # the loader would read this folder of the current directory
        raise AdapterError(f"{what} {path!r} names a folder of the current directory: {rule}")


def _is_one_folder_name(name: object) -> bool:
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and not any(c in name for c in ("/", "\\", "\0"))
    )
