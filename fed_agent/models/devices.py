"""Where a base runs and in which precision: ``model.device``, ``model.dtype`` resolved here.

A base is always built or loaded on the CPU in float32 first and fingerprinted there, so the
cloud and an ES agree on its fingerprint whatever device or precision each one runs it in;
:func:`place` then moves it. Batches are made on the CPU; a forward pre-hook moves a call's
tensors onto the base's device, so training, scoring and decoding need no device code.
"""

from __future__ import annotations

import torch

from fed_agent.choices import check_choice
from fed_agent.config.schema import DEVICES, DTYPES, ModelConfig
from fed_agent.models.base import ModelLoadError

DTYPE_BY_NAME = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda, else mps, else cpu; an explicit device must exist on this machine.

    Raises
    ------
    ModelLoadError
        One line, for ``cuda`` or ``mps`` on a machine without it.
    """
    check_choice("model.device", name, DEVICES)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("model.device=cuda but this machine has no CUDA GPU; use auto or cpu")
    if name == "mps" and not _mps_available():
        raise ModelLoadError("model.device=mps but this machine has no MPS device; use auto or cpu")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto``: bfloat16 on a CUDA device that supports it, else float32 (CPU, MPS, old GPUs).

    Raises
    ------
    ModelLoadError
        For float16 or bfloat16 on the CPU, where training in them is slow or unsupported.
    """
    check_choice("model.dtype", name, DTYPES)
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if device.type == "cpu" and name != "float32":
        raise ModelLoadError(f"model.dtype={name} on the CPU is not supported; use auto or float32")
    return DTYPE_BY_NAME[name]


def _to_device(value: object, device: torch.device) -> object:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(v, device) for v in value)
    return value


def inputs_to(device: torch.device):
    """A forward pre-hook (``with_kwargs=True``) that moves a call's tensors to ``device``."""

    def hook(_module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        moved = {k: _to_device(v, device) for k, v in kwargs.items()}
        return tuple(_to_device(a, device) for a in args), moved

    return hook


def place(model: torch.nn.Module, cfg: ModelConfig, quantized: bool = False) -> torch.device:
    """Move a (frozen, fingerprinted) base to ``cfg.device`` in ``cfg.dtype``; returns the device.

    A bitsandbytes-quantised base is on its GPU already (``quantized``) and keeps its dtypes.
    With ``cfg.gradient_checkpointing`` the base recomputes activations in the backward pass.
    """
    device = resolve_device(cfg.device)
    if not quantized:
        model.to(device=device, dtype=resolve_dtype(cfg.dtype, device))
    else:
        device = next(model.parameters()).device
    if device.type != "cpu":
        model.register_forward_pre_hook(inputs_to(device), with_kwargs=True)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return device


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Checkpoint a transformers base; inputs require grad so a frozen base's LoRA still learns.

    Raises
    ------
    ModelLoadError
        For a base without gradient checkpointing (the assembled and classifier bases).
    """
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ModelLoadError(
            f"model.gradient_checkpointing: {type(model).__name__} does not support it"
        )
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's first parameter (the CPU for a model without any)."""
    first = next(model.parameters(), None)
    return torch.device("cpu") if first is None else first.device
