"""``model=hf``: any Hugging Face causal LM or image-text-to-text model by id or local folder.

The kind comes from the model's config: one with a ``vision_config`` loads as
``AutoModelForImageTextToText`` with its ``AutoProcessor`` (or, when the processor cannot be
built here, its ``AutoImageProcessor`` and ``AutoTokenizer``); any other as
``AutoModelForCausalLM`` with its tokenizer. A VLM's prompts hold each image as its processor
writes it (``hf_vision.image_prompt_ids``) where its chat template puts it
(``fed_agent.models.prompts``). Offline (``HF_HUB_OFFLINE=1``, the project
default) only local folders and ids already in the local Hugging Face cache load; the
pre-flight (``fed_agent.models.preflight``) says so before a run starts.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
)

from fed_agent.config.schema import DataConfig, ModelConfig
from fed_agent.models.base import BaseModel, ModelLoadError, weights_fingerprint
from fed_agent.models.devices import resolve_dtype
from fed_agent.models.hf_vision import (
    ImageInputs,
    count_image_tokens,
    image_processor_wants_nested,
    image_prompt_ids,
    vision_layout,
)
from fed_agent.models.preflight import check_hf_model_available, hub_offline, looks_local
from fed_agent.models.prompts import chat_text
from fed_agent.text import one_line

log = logging.getLogger(__name__)


def hf_source(cfg: ModelConfig) -> tuple[str, bool]:
    """(what to pass to ``from_pretrained``, whether only local files may be read)."""
    check_hf_model_available(cfg.path)
    if looks_local(cfg.path):
        return str(Path(cfg.path).expanduser().resolve()), True
    return cfg.path, hub_offline()


def _load_kwargs(cfg: ModelConfig, local_only: bool) -> dict:
    """float32 on the CPU (fingerprinted there, placed later); a quantised base on its GPU."""
    kwargs: dict = {"local_files_only": local_only, "dtype": torch.float32}
    if cfg.quantization != "none":
        from transformers import BitsAndBytesConfig

        compute = resolve_dtype("auto", torch.device("cuda"))
        bits = (
            BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=compute)
            if cfg.quantization == "4bit"
            else BitsAndBytesConfig(load_in_8bit=True)
        )
        kwargs |= {"quantization_config": bits, "device_map": {"": 0}, "dtype": compute}
    return kwargs


def _tokenizer(source: str, local_only: bool):
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
    if tokenizer.pad_token_id is None:  # batches are padded; the pad positions are masked
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _processor_parts(source: str, local_only: bool):
    """(processor or None, tokenizer, image processor) of a VLM folder, from its AutoProcessor
    when it builds; the processor's chat template becomes the tokenizer's."""
    try:
        processor = AutoProcessor.from_pretrained(source, local_files_only=local_only)
        image_processor = getattr(processor, "image_processor", None)
        tokenizer = getattr(processor, "tokenizer", None)
    except (ImportError, OSError, ValueError, TypeError, AttributeError) as err:
        # e.g. Qwen2-VL's, whose video processor needs torchvision
        log.warning(
            "%s: its processor cannot be built here (%s: %s); each image is written as its "
            "image tokens alone, without the marker tokens a processor may add around them",
            source,
            type(err).__name__,
            str(err).strip().split(". ")[0].split("\n")[0],  # its first sentence
        )
        processor = image_processor = tokenizer = None
    if image_processor is None:
        image_processor = AutoImageProcessor.from_pretrained(source, local_files_only=local_only)
    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(processor, "chat_template", None):  # the template that places images
        tokenizer.chat_template = processor.chat_template
    return processor, tokenizer, image_processor


def _image_token_id(config) -> int:
    for key in ("image_token_id", "image_token_index"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    raise ModelLoadError(f"{config.model_type}: its config names no image token id")


def _check_chat_image(cfg: ModelConfig, tokenizer) -> None:
    """A chat template that is used must place an image part (one image placeholder)."""
    if not (cfg.use_chat_template and getattr(tokenizer, "chat_template", None)):
        return
    try:
        text = chat_text(tokenizer, "", image=True)
    except Exception as err:  # noqa: BLE001 -- a template's own error, said in one line
        raise ModelLoadError(
            f"model.path {cfg.path!r}: its chat template fails on an image part "
            f"({one_line(err)}); set model.use_chat_template=false"
        ) from err
    if text.count(tokenizer.image_token) != 1:
        raise ModelLoadError(
            f"model.path {cfg.path!r}: its chat template writes "
            f"{text.count(tokenizer.image_token)} image placeholders {tokenizer.image_token!r} "
            "for one image part (expected 1); set model.use_chat_template=false"
        )


def _load_vlm(cfg: ModelConfig, source: str, local_only: bool, config) -> BaseModel:
    model = AutoModelForImageTextToText.from_pretrained(source, **_load_kwargs(cfg, local_only))
    processor, tokenizer, image_processor = _processor_parts(source, local_only)
    image_token_id = _image_token_id(config)
    tokenizer.image_token = tokenizer.convert_ids_to_tokens(image_token_id)
    _check_chat_image(cfg, tokenizer)
    nested = image_processor_wants_nested(image_processor)
    hook = ImageInputs(image_processor, image_token_id, nested)
    image_size = DataConfig().image_size
    image_tokens = count_image_tokens(model, hook, image_size)
    image_prompt = (
        ()
        if processor is None
        else image_prompt_ids(processor, image_token_id, image_tokens, image_size, nested)
    )
    fingerprint = weights_fingerprint(model)
    model.register_forward_pre_hook(hook, with_kwargs=True)
    layout = vision_layout(model, cfg)
    return BaseModel(
        cfg.name,
        model,
        tokenizer,
        image_tokens,
        fingerprint,
        Path(source),
        lora_scope=layout.text_scope,
        trainable_modules=layout.trainable,
        image_inputs=hook.apply,
        image_prompt=image_prompt,
    )


def load_hf(cfg: ModelConfig, seed: int) -> BaseModel:
    """Any causal LM or image-text-to-text model by Hugging Face id or local directory.

    Raises
    ------
    ModelLoadError
        For a missing or unloadable ``model.path`` (one line, with what to do).
    """
    del seed  # real weights: nothing random
    source, local_only = hf_source(cfg)
    try:
        config = AutoConfig.from_pretrained(source, local_files_only=local_only)
        if hasattr(config, "vision_config"):
            return _load_vlm(cfg, source, local_only, config)
        tokenizer = _tokenizer(source, local_only)
        model = AutoModelForCausalLM.from_pretrained(source, **_load_kwargs(cfg, local_only))
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelLoadError(f"cannot load model.path {cfg.path!r}: {first}") from err
    return BaseModel(cfg.name, model, tokenizer, 0, weights_fingerprint(model), Path(source))
