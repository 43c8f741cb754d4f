"""Base-model registry: ``model.name`` -> a loaded, frozen base model (``BUILDERS``).

A base is loaded at most once per process (``load_base`` is cached), and built at most once
per machine: the first process builds it (pre-trains a tiny base, converts SmolLM2's GGUF) and
stores it under the cache directory; later processes (Ray actors, deployment ClientApps, the
ServerApp) load the stored weights. The fingerprint (SHA-256 of the weights) lets the cloud and
every ES check they share one base. The real models live in ``real_models.py``, any Hugging Face folder in ``hf.py``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
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
from fed_agent.models import hf, real_models
from fed_agent.models.base import (
    BaseModel,
    ModelLoadError,
    build_lock,
    cache_root,
    freeze,
    output_head,
    weights_fingerprint,
)
from fed_agent.models.devices import place
from fed_agent.models.pretrain import pretrain_language_model
from fed_agent.models.tokenizer import train_tokenizer
from fed_agent.seeding import torch_threads

log = logging.getLogger(__name__)
BUILD_VERSION = "2"
"""Bump when the way a base is built changes, so stale caches are not reused."""
BUILD_THREADS = 1
"""Torch threads a tiny base is pre-trained on, whatever process builds it first (the
ServerApp, a ClientApp with ``federation.client_cpus`` threads, a benchmark): pre-training on 1
and on 2 threads gives different weights (measured), so a fresh clone would get another base."""


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


TINY_ARCHITECTURES: dict[str, Callable[[ModelConfig, int], tuple[PreTrainedModel, int]]] = {
    "tiny-llm": _build_tiny_llm,
    "tiny-vlm": _build_tiny_vlm,
}


NOT_IN_WEIGHTS = (
    "cache_dir",
    "use_chat_template",
    "train_projector",
    "train_vision_tower",
    "train_lm_head",
    "device",
    "dtype",
    "gradient_checkpointing",
    "quantization",
)
"""ModelConfig fields that do not change a built base's weights (nor do the ``lora_`` ones)."""


def base_key(cfg: ModelConfig, seed: int) -> str:
    """A cache key over everything that changes the base's weights (not its LoRA settings)."""
    fields = {
        k: v
        for k, v in dataclasses.asdict(cfg).items()
        if not k.startswith("lora_") and k not in NOT_IN_WEIGHTS
    }
    blob = json.dumps({"fields": fields, "seed": seed, "v": BUILD_VERSION}, sort_keys=True)
    return f"{cfg.name}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def _build_and_store(cfg: ModelConfig, seed: int, path: Path) -> None:
    log.info(
        "building base model %s (pre-training %d steps) -> %s", cfg.name, cfg.pretrain_steps, path
    )
    corpus = public_corpus(seed, cfg.pretrain_corpus_size)
    tokenizer = train_tokenizer(corpus, cfg.vocab_size)
    torch.manual_seed(seed)
    model, _ = TINY_ARCHITECTURES[cfg.name](cfg, len(tokenizer))
    with torch_threads(BUILD_THREADS):
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


def _store_tiny(cfg: ModelConfig, seed: int) -> Path:
    """The cached folder of a tiny base, built first unless some process built it already."""
    path = cache_root(cfg) / base_key(cfg, seed)
    with build_lock(path):
        if not (path / "config.json").exists():
            _build_and_store(cfg, seed, path)
    return path


def _load_tiny(cfg: ModelConfig, seed: int) -> BaseModel:
    """A tiny base built from config, pre-trained once per machine on the public corpus."""
    path = _store_tiny(cfg, seed)
    model, tokenizer = _load_stored(cfg, path)
    if cfg.name == "tiny-vlm":
        _, image_tokens = TINY_ARCHITECTURES[cfg.name](cfg, 8)
        scope = "language_model"
        trainable = ("vision_tower",) * cfg.train_vision_tower + (
            "multi_modal_projector",
        ) * cfg.train_projector
    else:
        image_tokens, scope, trainable = 0, "", ()
    return BaseModel(
        cfg.name,
        model,
        tokenizer,
        image_tokens,
        weights_fingerprint(model),
        path,
        lora_scope=scope,
        trainable_modules=trainable,
    )


BUILDERS: dict[str, Callable[[ModelConfig, int], BaseModel]] = {
    "tiny-llm": _load_tiny,
    "tiny-vlm": _load_tiny,
    "smollm2-135m": real_models.load_smollm2,
    "minilm-perception": real_models.load_minilm_perception,
    "hf": hf.load_hf,
}
"""Every ``model.name``: a loader ``(cfg, seed) -> BaseModel`` (frozen afterwards)."""

STORERS: dict[str, Callable[[ModelConfig, int], Path]] = {
    "tiny-llm": _store_tiny,
    "tiny-vlm": _store_tiny,
    "smollm2-135m": real_models.store_smollm2,
}
"""The ``model.name``s whose base is built once per machine into the cache: the step that
writes it (a no-op when it is there). The other bases load straight from their source."""


def build_base(cfg: ModelConfig, seed: int) -> float:
    """Build ``cfg``'s base into the machine's cache unless it is there already.

    Returns the seconds spent building: 0.0 (well, a lock and a stat) when the base was
    cached or needs no build. Callers that time a load call this first, so that a one-off
    build (minutes for a pre-trained tiny base) is not reported as the load time.
    """
    if cfg.name not in STORERS:
        return 0.0
    path = cache_root(cfg)
    start = time.perf_counter()
    stored = STORERS[cfg.name](cfg, seed)
    elapsed = time.perf_counter() - start
    if elapsed > 1.0:
        log.info("built base %s once in %.1f s -> %s (under %s)", cfg.name, elapsed, stored, path)
    return elapsed


@functools.lru_cache(maxsize=4)
def _load_base_cached(cfg_json: str, seed: int) -> BaseModel:
    cfg = ModelConfig(**json.loads(cfg_json))
    if cfg.name not in BUILDERS:
        raise ModelLoadError(f"unknown model.name {cfg.name!r}; valid choices: {sorted(BUILDERS)}")
    base = BUILDERS[cfg.name](cfg, seed)  # on the CPU in float32, fingerprinted there
    if cfg.train_lm_head:
        if base.task_kind != "generate":
            raise ModelLoadError(
                f"model.train_lm_head needs a generating base; {cfg.name!r} classifies"
            )
        head = output_head(base.model)
        base = dataclasses.replace(base, trainable_modules=(*base.trainable_modules, head))
    freeze(base.model)
    base.chat_template = bool(
        cfg.use_chat_template
        and base.task_kind == "generate"
        and getattr(base.tokenizer, "chat_template", None)
    )
    place(base.model, cfg, quantized=cfg.quantization != "none")
    return base


def load_base(cfg: ModelConfig, seed: int) -> BaseModel:
    """The base model for ``cfg``: built and cached on first use, then loaded once per process.

    Raises
    ------
    ModelLoadError
        For an unknown model name, stored weights that cannot be read, or (``hf``) a model
        that is neither a local directory nor in the local Hugging Face cache while offline.
    """
    return _load_base_cached(json.dumps(dataclasses.asdict(cfg), sort_keys=True), seed)


__all__ = [
    "BUILDERS",
    "BaseModel",
    "ModelLoadError",
    "base_key",
    "build_base",
    "cache_root",
    "load_base",
    "weights_fingerprint",
]
