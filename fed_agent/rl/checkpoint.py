"""Pickle-free checkpoints: nested state dicts and a JSON header in one ``.npz`` file.

Keys are ``"<network>/<parameter>"``; the header (any JSON-able dict, e.g. the config and
the market ranges) is stored as a UTF-8 byte array under ``__header__``, so loading needs
neither pickle nor torch.load.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

HEADER_KEY = "__header__"


def save_checkpoint(
    path: str | Path, state: dict[str, dict[str, Tensor]], header: dict[str, Any]
) -> Path:
    """Write ``state`` (network -> name -> tensor) and a JSON header to a compressed npz.

    Tensors are stored as float32 (integer tensors keep their dtype).
    """
    arrays: dict[str, np.ndarray] = {}
    for network, tensors in state.items():
        for name, tensor in tensors.items():
            value = tensor.detach().cpu().numpy()
            arrays[f"{network}/{name}"] = (
                value.astype(np.float32) if np.issubdtype(value.dtype, np.floating) else value
            )
    arrays[HEADER_KEY] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        np.savez_compressed(handle, **arrays)
    return path


class CheckpointFileError(ValueError):
    """A file that is no checkpoint of :func:`save_checkpoint` (empty, truncated, another
    format)."""


def load_checkpoint(path: str | Path) -> tuple[dict[str, dict[str, Tensor]], dict[str, Any]]:
    """Read what :func:`save_checkpoint` wrote; returns (state, header).

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    CheckpointFileError
        When it is no such checkpoint (one line naming the file).
    """
    state: dict[str, dict[str, Tensor]] = {}
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            header = json.loads(data[HEADER_KEY].tobytes().decode("utf-8"))
            for key in data.files:
                if key == HEADER_KEY:
                    continue
                network, name = key.split("/", 1)
                state.setdefault(network, {})[name] = torch.from_numpy(data[key].copy())
    except (EOFError, ValueError, KeyError, zipfile.BadZipFile, UnicodeDecodeError) as err:
        raise CheckpointFileError(f"{path} is not a designer checkpoint (.npz): {err}") from err
    return state, header
