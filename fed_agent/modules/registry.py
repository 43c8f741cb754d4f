"""Base-model registry: ``model.name`` -> a built, pre-trained and cached base model.

A base is loaded at most once per process (``load_base`` is cached), and built at most once
per machine: the first process pre-trains it and stores it under the cache directory; later
processes (Ray actors, deployment ClientApps, the ServerApp) load the stored weights. The
fingerprint (SHA-256 of the weights) lets the cloud and every ES check they share one base.
"""

from __future__ import annotations

import dataclasses
import fcntl
import functools
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    PreTrainedModel,
)

from fed_agent.config.schema import ModelConfig
from fed_agent.data.partition import public_corpus
from fed_agent.modules.pretrain import pretrain_language_model
from fed_agent.modules.tokenizer import train_tokenizer

log = logging.getLogger(__name__)
BUILD_VERSION = "1"
"""Bump when the way a base is built changes, so stale caches are not reused."""


class ModelLoadError(RuntimeError):
    """A base model that cannot be found, built or loaded."""


@dataclass
class BaseModel:
    """A frozen base model with its tokenizer."""

    name: str
    model: PreTrainedModel
    tokenizer: object
    image_tokens: int
    """``<image>`` placeholders per example (0 for a text-only model)."""
    fingerprint: str
    path: Path

    @property
    def is_vision(self) -> bool:
        """True for a VLM (examples carry images)."""
        return self.image_tokens > 0

    @property
    def num_parameters(self) -> int:
        """Parameters of the base alone (LoRA not included)."""
        return sum(p.numel() for n, p in self.model.named_parameters() if "lora_" not in n)

    @property
    def num_bytes(self) -> int:
        """Bytes of the base's weights: what sending the full model would cost."""
        return sum(
            p.numel() * p.element_size()
            for n, p in self.model.named_parameters()
            if "lora_" not in n
        )


def _llama_config(cfg: ModelConfig, vocab_size: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_seq_len,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )


def _build_tiny_llm(cfg: ModelConfig, vocab_size: int) -> tuple[PreTrainedModel, int]:
    return AutoModelForCausalLM.from_config(_llama_config(cfg, vocab_size)), 0


def _build_tiny_vlm(cfg: ModelConfig, vocab_size: int) -> tuple[PreTrainedModel, int]:
    from fed_agent.config.schema import DataConfig

    image_size = DataConfig().image_size
    vision = CLIPVisionConfig(
        image_size=image_size,
        patch_size=cfg.patch_size,
        hidden_size=cfg.vision_hidden_size,
        intermediate_size=2 * cfg.vision_hidden_size,
        num_hidden_layers=cfg.vision_layers,
        num_attention_heads=4,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=_llama_config(cfg, vocab_size),
        image_token_index=3,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    # "default" drops the CLS token: one feature per patch.
    return LlavaForConditionalGeneration(config), (image_size // cfg.patch_size) ** 2


BUILDERS: dict[str, Callable[[ModelConfig, int], tuple[PreTrainedModel, int]]] = {
    "tiny-llm": _build_tiny_llm,
    "tiny-vlm": _build_tiny_vlm,
}


def cache_root(cfg: ModelConfig) -> Path:
    """The directory that holds built bases."""
    if cfg.cache_dir:
        return Path(cfg.cache_dir).expanduser().resolve()
    return Path(os.environ.get("FED_AGENT_CACHE", "~/.cache/fed_agent")).expanduser().resolve()


def base_key(cfg: ModelConfig, seed: int) -> str:
    """A cache key over everything that changes the base's weights (not its LoRA settings)."""
    fields = {
        k: v
        for k, v in dataclasses.asdict(cfg).items()
        if not k.startswith("lora_") and k != "cache_dir"
    }
    blob = json.dumps({"fields": fields, "seed": seed, "v": BUILD_VERSION}, sort_keys=True)
    return f"{cfg.name}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def weights_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 over the names and bytes of every parameter and buffer, in order."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def _build_and_store(cfg: ModelConfig, seed: int, path: Path) -> None:
    log.info(
        "building base model %s (pre-training %d steps) -> %s", cfg.name, cfg.pretrain_steps, path
    )
    corpus = public_corpus(seed, cfg.pretrain_corpus_size)
    tokenizer = train_tokenizer(corpus, cfg.vocab_size)
    torch.manual_seed(seed)
    model, _ = BUILDERS[cfg.name](cfg, len(tokenizer))
    pretrain_language_model(model, tokenizer, corpus, cfg, seed)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, path)


def _load_stored(cfg: ModelConfig, path: Path) -> tuple[PreTrainedModel, object]:
    model_cls = LlavaForConditionalGeneration if cfg.name == "tiny-vlm" else AutoModelForCausalLM
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = model_cls.from_pretrained(path, dtype=torch.float32)
    except (OSError, ValueError) as err:
        raise ModelLoadError(
            f"base model {cfg.name!r} at {path} cannot be loaded ({err}); delete that folder "
            "to rebuild it"
        ) from err
    return model, tokenizer


@functools.lru_cache(maxsize=4)
def _load_base_cached(cfg_json: str, seed: int) -> BaseModel:
    cfg = ModelConfig(**json.loads(cfg_json))
    if cfg.name not in BUILDERS:
        raise ModelLoadError(f"unknown model.name {cfg.name!r}; valid choices: {sorted(BUILDERS)}")
    root = cache_root(cfg)
    root.mkdir(parents=True, exist_ok=True)
    path = root / base_key(cfg, seed)
    with open(root / f"{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder per machine; the others wait and load
        if not (path / "config.json").exists():
            _build_and_store(cfg, seed, path)
    model, tokenizer = _load_stored(cfg, path)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    _, image_tokens = BUILDERS[cfg.name](cfg, 8) if cfg.name == "tiny-vlm" else (None, 0)
    return BaseModel(cfg.name, model, tokenizer, image_tokens, weights_fingerprint(model), path)


def load_base(cfg: ModelConfig, seed: int) -> BaseModel:
    """The base model for ``cfg``: built and cached on first use, then loaded once per process.

    Raises
    ------
    ModelLoadError
        For an unknown model name or stored weights that cannot be read.
    """
    return _load_base_cached(json.dumps(dataclasses.asdict(cfg), sort_keys=True), seed)
