"""LoRA agent modules: build one on a base model, read and write its adapter state.

Only adapter tensors travel between the cloud and the ESs. An adapter state is a plain
``dict[str, np.ndarray]`` (float32) keyed by peft's stable names, so it serialises into a
Flower ArrayRecord or a safetensors file without torch-specific types.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from fed_agent.config.schema import ModelConfig
from fed_agent.models.registry import BaseModel, load_base
from fed_agent.protocol import AdapterState


class AdapterError(ValueError):
    """An adapter state or file that does not fit the agent module."""


def lora_config(cfg: ModelConfig, base: BaseModel) -> LoraConfig:
    """peft settings for ``base``.

    LoRA goes on ``cfg.lora_targets`` inside ``base.lora_scope`` only (a VLM's vision tower has
    q_proj/v_proj too); ``base.trainable_modules`` (projector, classifier head) train in full
    and travel with the adapter, because they start from random weights.
    """
    names = list(cfg.lora_targets) or default_lora_targets(base.model)
    targets: list[str] | str = names
    if base.lora_scope:
        targets = rf".*{base.lora_scope}.*\.({'|'.join(names)})"
    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
        modules_to_save=list(base.trainable_modules) or None,
    )


def default_lora_targets(model: torch.nn.Module) -> list[str]:
    """peft's default LoRA targets for the model's architecture (a VLM: its language model's).

    Raises
    ------
    AdapterError
        When peft has none for it: ``model.lora_targets`` must then name them.
    """
    config = getattr(model, "config", None)
    types = [getattr(config, "model_type", None)]
    types.append(getattr(getattr(config, "text_config", None), "model_type", None))
    for model_type in types:
        if model_type in TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING:
            return list(TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING[model_type])
    raise AdapterError(
        f"model.lora_targets is empty and peft has no default targets for {types[0]!r}: name "
        "the layers, e.g. model.lora_targets=[q_proj,v_proj]"
    )


def _check_targets_matched(model: torch.nn.Module, targets: list[str]) -> None:
    """Refuse ``model.lora_targets`` that name a layer the base lacks (in its LoRA scope):
    peft fails only when no name matches, so a misspelt name beside a good one would train
    fewer layers than configured, silently.

    Raises
    ------
    AdapterError
        Naming the targets that matched no layer.
    """
    wrapped = [name for name, module in model.named_modules() if isinstance(module, LoraLayer)]
    unmatched = [t for t in targets if not any(n == t or n.endswith(f".{t}") for n in wrapped)]
    if unmatched:
        raise AdapterError(
            f"model.lora_targets {unmatched} name no layer of the base's language model; "
            f"its LoRA layers end in {sorted({n.rsplit('.', 1)[-1] for n in wrapped})}"
        )


class AgentModule:
    """A LoRA agent module on a frozen base: the unit an ES trains and the cloud aggregates."""

    def __init__(self, base: BaseModel, cfg: ModelConfig, seed: int) -> None:
        self.base = base
        self.cfg = cfg
        torch.manual_seed(seed)  # the initial A matrices: identical wherever the seed is
        self.model: PeftModel = get_peft_model(base.model, lora_config(cfg, base))
        _check_targets_matched(self.model, cfg.lora_targets)
        if cfg.lora_freeze_a:
            for name, parameter in self.model.named_parameters():
                if "lora_A" in name:
                    parameter.requires_grad_(False)
        self.initial_state = self.adapter_state()
        self._shapes = {k: v.shape for k, v in self.initial_state.items()}

    @property
    def adapter_keys(self) -> list[str]:
        """Adapter tensor names in a fixed order."""
        return list(self._shapes)

    @property
    def adapter_bytes(self) -> int:
        """Bytes of one adapter state (what one message carries)."""
        return int(sum(int(np.prod(s)) * 4 for s in self._shapes.values()))

    def adapter_state(self) -> AdapterState:
        """A copy of the current adapter tensors (peft returns views of live weights)."""
        state = get_peft_model_state_dict(self.model)
        return {k: v.detach().float().cpu().numpy().copy() for k, v in state.items()}

    def check_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Raise AdapterError unless ``state`` has exactly this module's keys, shapes, finite values."""
        missing = sorted(set(self._shapes) - set(state))
        extra = sorted(set(state) - set(self._shapes))
        if missing or extra:
            raise AdapterError(
                f"adapter keys differ: missing {missing[:3]}, unexpected {extra[:3]}"
            )
        for key, shape in self._shapes.items():
            value = np.asarray(state[key])
            if value.shape != shape:
                raise AdapterError(
                    f"adapter tensor {key} has shape {value.shape}, expected {shape}"
                )
            if not np.isfinite(value).all():
                raise AdapterError(f"adapter tensor {key} holds NaN or Inf")

    def load_adapter(self, state: Mapping[str, np.ndarray]) -> None:
        """Replace the adapter tensors by ``state`` (validated first; nothing changes on error)."""
        self.check_state(state)
        tensors = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in state.items()}
        result = set_peft_model_state_dict(self.model, tensors)
        if result.unexpected_keys:
            raise AdapterError(f"peft refused adapter keys {result.unexpected_keys[:3]}")

    def twin(self) -> AgentModule:
        """Another module on the same frozen base tensors, with adapter tensors of its own: it
        can train in another thread while this one is trained or evaluated (the base is
        read-only in both; the ``lora_`` tensors and the modules trained in full are copied)."""
        shared = {
            id(p): p
            for n, p in self.model.named_parameters()
            if "lora_" not in n and "modules_to_save" not in n  # a trained projector or head
        }
        twin = copy.copy(self)
        twin.model = copy.deepcopy(self.model, memo=shared)
        return twin

    def reset(self) -> None:
        """Back to the initial adapter (the same on every process with the same seed)."""
        self.load_adapter(self.initial_state)


@functools.lru_cache(maxsize=2)
def _agent_module_cached(cfg_json: str, seed: int) -> AgentModule:
    cfg = ModelConfig(**json.loads(cfg_json))
    return AgentModule(load_base(cfg, seed), cfg, seed)


def agent_module(cfg: ModelConfig, seed: int) -> AgentModule:
    """The process-wide agent module for ``cfg`` (base loaded once; adapters swapped per call)."""
    return _agent_module_cached(json.dumps(dataclasses.asdict(cfg), sort_keys=True), seed)


def save_adapter(state: Mapping[str, np.ndarray], path: Path, metadata: dict[str, str]) -> None:
    """Write an adapter as safetensors (atomic: a crash never leaves a half-written file)."""
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(tmp), metadata=metadata)
    tmp.replace(path)


def load_adapter_file(path: Path) -> AdapterState:
    """Read an adapter file; a missing or corrupt file raises AdapterError naming it."""
    if not path.is_file():
        raise AdapterError(f"adapter file {path} does not exist")
    try:
        return dict(load_file(str(path)))
    except (SafetensorError, OSError, ValueError) as err:
        raise AdapterError(f"adapter file {path} is corrupt or not safetensors: {err}") from err
