"""Image-text-to-text models from Hugging Face: their image inputs and which parts train.

Every example carries its image in one form: ``pixel_values`` of shape (B, 3, H, W) in
[-1, 1] (``fed_agent.data.render``), and in ``input_ids`` the ids the model's own processor
writes for one image (:func:`image_prompt_ids`: the image tokens with the marker tokens around
them, Idefics3's ``<fake_token_around_image><global-img>``...; Qwen2-VL's
``<|vision_start|>``/``<|vision_end|>`` come from its chat template,
``fed_agent.models.prompts``). A loaded VLM base takes exactly that: :class:`ImageInputs`, a
forward pre-hook, turns the images into what the architecture reads (its own image
processor's ``pixel_values``, Idefics3's ``pixel_attention_mask``, Qwen2-VL's patch grid
``image_grid_thw`` and ``mm_token_type_ids``), so batching, training, scoring and decoding are
the same code for every base. The image-token count per image is measured once at load, from
the model's own image features on one blank image, and checked against the processor's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fed_agent.config.schema import ModelConfig
from fed_agent.models.base import ModelLoadError

TEXT_MODULES = ("language_model", "text_model")
"""Names of the language model inside a VLM's ``model`` (LLaVA and Qwen2-VL; Idefics3)."""
PROJECTORS = ("multi_modal_projector", "connector", "visual.merger")
"""The projector from vision features to text embeddings (LLaVA; Idefics3; Qwen2-VL)."""
VISION_TOWERS = ("vision_tower", "vision_model", "visual")
"""The vision encoder (LLaVA; Idefics3; Qwen2-VL, whose tower holds its merger)."""


def _find(model: torch.nn.Module, names: tuple[str, ...], what: str) -> str:
    inner = getattr(model, "model", model)
    for name in names:
        if _has(inner, name):
            return name
    raise ModelLoadError(
        f"{type(model).__name__}: no {what} among {list(names)}; this architecture is not "
        "supported by model=hf (docs/models.md lists those that are)"
    )


def _has(module: torch.nn.Module, name: str) -> bool:
    try:
        module.get_submodule(name)
    except AttributeError:
        return False
    return True


@dataclass(frozen=True)
class VisionLayout:
    """Where LoRA goes in a VLM and which parts train in full (peft ``modules_to_save``)."""

    text_scope: str
    trainable: tuple[str, ...]


def vision_layout(model: torch.nn.Module, cfg: ModelConfig) -> VisionLayout:
    """LoRA on the language model only; projector and vision tower as ``cfg`` says."""
    text = _find(model, TEXT_MODULES, "language model")
    projector = _find(model, PROJECTORS, "projector")
    tower = _find(model, VISION_TOWERS, "vision tower")
    trainable: list[str] = []
    if cfg.train_vision_tower:
        trainable.append(tower)
    if cfg.train_projector and not (cfg.train_vision_tower and projector.startswith(tower)):
        trainable.append(projector)  # a tower trained in full already holds its merger
    return VisionLayout(text, tuple(trainable))


def to_uint8_images(pixel_values: torch.Tensor) -> list[np.ndarray]:
    """(B, 3, H, W) in [-1, 1] -> B images (H, W, 3) uint8, what image processors read."""
    pixels = ((pixel_values.detach().float().cpu() + 1.0) * 127.5).round().clamp(0, 255)
    return [p.permute(1, 2, 0).numpy().astype(np.uint8) for p in pixels]


class ImageInputs:
    """Forward pre-hook of a VLM base: canonical ``pixel_values`` -> the architecture's inputs."""

    def __init__(self, image_processor, image_token_id: int, nested: bool) -> None:
        self.image_processor = image_processor
        self.image_token_id = image_token_id
        self.nested = nested
        """Whether the processor wants one list of images per example (Idefics3)."""

    def convert(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        """The processor's tensors for a batch of canonical images (one image per example)."""
        images = to_uint8_images(pixel_values)
        batch = [[image] for image in images] if self.nested else images
        out = self.image_processor(images=batch, return_tensors="pt")
        return {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}

    def apply(self, batch: dict) -> dict:
        """``batch`` (keyword arguments of a forward) as the stock architecture reads it."""
        batch = dict(batch)
        pixel_values = batch.pop("pixel_values", None)
        if pixel_values is not None:
            batch.update(self.convert(pixel_values))
            input_ids = batch.get("input_ids")
            if "image_grid_thw" in batch and input_ids is not None:  # Qwen2-VL's mrope
                batch["mm_token_type_ids"] = (input_ids == self.image_token_id).long()
        return batch

    def __call__(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        kwargs = self.apply(kwargs)
        deltas = getattr(getattr(module, "model", None), "rope_deltas", None)
        if deltas is not None and "pixel_values" not in kwargs:
            kwargs = _decode_positions(kwargs, deltas)
        return args, kwargs

    def __deepcopy__(self, memo: dict) -> ImageInputs:  # module twins share the hook
        return self


def _decode_positions(kwargs: dict, deltas: torch.Tensor) -> dict:
    """Qwen2-VL's multimodal positions of a cached decode step: the step's own positions plus
    the offset its prefill left (``rope_deltas``). Its forward derives them from the whole
    attention mask otherwise, one per cached token, which breaks a step-by-step decode."""
    cache = kwargs.get("past_key_values")
    input_ids = kwargs.get("input_ids")
    if cache is None or input_ids is None or "position_ids" in kwargs:
        return kwargs
    past = cache.get_seq_length()
    if past == 0:
        return kwargs
    batch, steps = input_ids.shape
    positions = torch.arange(past, past + steps, device=deltas.device)
    positions = positions.view(1, 1, -1).expand(3, batch, -1) + deltas.view(1, -1, 1)
    return {**kwargs, "position_ids": positions}


def image_processor_wants_nested(image_processor) -> bool:
    """Idefics3-style processors take a list of images per example (5-D ``pixel_values``)."""
    blank = np.zeros((8, 8, 3), dtype=np.uint8)
    try:
        out = image_processor(images=[blank], return_tensors="pt")
    except (ValueError, TypeError):
        return True
    return out["pixel_values"].dim() == 5


@torch.no_grad()
def count_image_tokens(model: torch.nn.Module, hook: ImageInputs, image_size: int) -> int:
    """Image tokens one image needs: the rows of the model's projected features of one image
    (over all its tiles, when the processor splits it)."""
    blank = torch.zeros((1, 3, image_size, image_size))
    inputs = hook.convert(blank)
    features = model.model.get_image_features(**inputs).pooler_output
    if isinstance(features, (list, tuple)):  # one (tokens, hidden) tensor per image
        return int(features[0].shape[0])
    return int(features.shape[0] * features.shape[1] if features.dim() == 3 else features.shape[0])


def image_prompt_ids(
    processor, image_token_id: int, image_tokens: int, image_size: int, nested: bool
) -> tuple[int, ...]:
    """The ids ``processor`` writes for one image of ``image_size`` px: it expands its image
    placeholder (the image tokens and any marker tokens around them), read back as ids.

    Raises
    ------
    ModelLoadError
        When the processor fails on one image, or writes another number of image tokens than
        the model's features have (``image_tokens``).
    """
    token = getattr(processor, "image_token", None)
    token = token or processor.tokenizer.convert_ids_to_tokens(image_token_id)
    blank = np.zeros((image_size, image_size, 3), dtype=np.uint8)
    images = [[blank]] if nested else [blank]
    try:
        out = processor(text=[token], images=images, add_special_tokens=False)
    except (ValueError, TypeError, KeyError) as err:
        raise ModelLoadError(
            f"{type(processor).__name__} cannot expand one {image_size} px image: {err}"
        ) from err
    ids = tuple(int(i) for i in out["input_ids"][0])
    if ids.count(image_token_id) != image_tokens:
        raise ModelLoadError(
            f"{type(processor).__name__} writes {ids.count(image_token_id)} image tokens for "
            f"one {image_size} px image, but the model makes {image_tokens} image features"
        )
    return ids
