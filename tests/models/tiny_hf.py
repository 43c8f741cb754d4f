"""Tiny random-weight Hugging Face models built from config and saved as standard folders.

Each builder writes a ``save_pretrained`` folder (model + tokenizer, and for a VLM its image
processor or full processor) that ``model=hf model.path=<folder>`` loads like any downloaded
model. Text side: 2 layers, hidden 32; vision side: 1 layer, hidden 32, 32 px images in
8 px patches. A few hundred thousand parameters: a federated round takes seconds.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import transformers as T

from fed_agent.data.partition import public_corpus
from fed_agent.models.tokenizer import train_tokenizer

IMAGE_PX = 32
PATCH_PX = 8
IDEFICS3_TOKENS = ["<fake_token_around_image>", "<global-img>", "<end_of_utterance>"]
QWEN2_VL_TOKENS = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>"]
QWEN2_VL_IMAGE = "<|image_pad|>"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|bos|>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|bos|>assistant:{% endif %}"
)
"""A minimal chat template (the Qwen2 builder's tokenizer has it: the chat-template path)."""

VLM_CHAT_TEMPLATES = {
    "llava": (
        "{% for message in messages %}{{ message['role'].upper() + ': ' }}"
        "{% for part in message['content'] | selectattr('type', 'equalto', 'image') %}"
        "{{ '<image>\n' }}{% endfor %}"
        "{% for part in message['content'] | selectattr('type', 'equalto', 'text') %}"
        "{{ part['text'] + ' ' }}{% endfor %}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
    ),
    "idefics3": (
        "<|bos|>{% for message in messages %}{{ message['role'] | capitalize }}"
        "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
        "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}"
        "{% elif part['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}"
        "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
    ),
    "qwen2-vl": (
        "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
        "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
        "{{ message['content'] }}<|im_end|>\n{% else %}{% for part in message['content'] %}"
        "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
        "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}"
        "<|im_end|>\n{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    ),
}
"""Chat templates written like the released models' own (llava-1.5, SmolVLM, Qwen2-VL):
where each puts the image of a user turn, and Qwen2-VL's vision markers around it."""


def _tokenizer(extra: list[str] = ()):
    tokenizer = train_tokenizer(public_corpus(0, 400), 400)
    if extra:
        tokenizer.add_special_tokens({"additional_special_tokens": list(extra)})
    return tokenizer


def _text(tokenizer, **extra) -> dict:
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        **extra,
    )


def _vision(**extra) -> dict:
    return dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=IMAGE_PX,
        patch_size=PATCH_PX,
        **extra,
    )


def build_llama(out: Path) -> Path:
    tokenizer = _tokenizer()
    T.LlamaForCausalLM(T.LlamaConfig(**_text(tokenizer))).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_qwen2(out: Path) -> Path:
    tokenizer = _tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    T.Qwen2ForCausalLM(T.Qwen2Config(**_text(tokenizer))).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_llava(out: Path) -> Path:
    tokenizer = _tokenizer()
    config = T.LlavaConfig(
        vision_config=T.CLIPVisionConfig(**_vision()),
        text_config=T.LlamaConfig(**_text(tokenizer)),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )
    T.LlavaForConditionalGeneration(config).save_pretrained(out)
    image_processor = T.CLIPImageProcessor(
        size={"shortest_edge": IMAGE_PX}, crop_size={"height": IMAGE_PX, "width": IMAGE_PX}
    )
    T.LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_PX,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        image_token="<image>",
        chat_template=VLM_CHAT_TEMPLATES["llava"],
    ).save_pretrained(out)
    return out


def build_idefics3(out: Path, tile_px: int = 0) -> Path:
    """Idefics3 (SmolVLM): one 32 px image as 4 image tokens; with ``tile_px`` its processor
    splits the image into ``tile_px`` tiles plus the whole image scaled to one tile (1 image
    token each, between SmolVLM's ``<row_r_col_c>`` and ``<global-img>`` markers)."""
    tile = tile_px or IMAGE_PX
    grid = [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)] if tile_px else []
    tokenizer = _tokenizer([*IDEFICS3_TOKENS, *grid])
    vision = {**_vision(), "image_size": tile}
    config = T.Idefics3Config(
        vision_config=vision,
        text_config=T.LlamaConfig(**_text(tokenizer)),
        scale_factor=2,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
    )
    T.Idefics3ForConditionalGeneration(config).save_pretrained(out)
    image_processor = T.Idefics3ImageProcessor(
        do_image_splitting=bool(tile_px),
        size={"longest_edge": IMAGE_PX},
        max_image_size={"longest_edge": tile},
    )
    T.Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=(tile // PATCH_PX) ** 2 // 4,
        chat_template=VLM_CHAT_TEMPLATES["idefics3"],
    ).save_pretrained(out)
    return out


def build_qwen2_vl(out: Path) -> Path:
    """Qwen2-VL: its processor needs torchvision (for video) here, so the folder holds the
    image processor and the tokenizer (with the chat template), which the loader falls back
    to. Its image token is ``<|image_pad|>``, between the template's vision markers."""
    tokenizer = _tokenizer([*QWEN2_VL_TOKENS, QWEN2_VL_IMAGE])
    tokenizer.image_token = QWEN2_VL_IMAGE
    tokenizer.chat_template = VLM_CHAT_TEMPLATES["qwen2-vl"]
    ids = tokenizer.convert_tokens_to_ids
    rope = {"rope_type": "default", "mrope_section": [1, 1, 2], "rope_theta": 1e4}
    config = T.Qwen2VLConfig(
        vision_config=dict(
            depth=1,
            embed_dim=32,
            hidden_size=32,
            num_heads=2,
            patch_size=PATCH_PX,
            spatial_merge_size=2,
            temporal_patch_size=2,
        ),
        text_config=T.Qwen2Config(**_text(tokenizer), rope_parameters=rope),
        image_token_id=ids(QWEN2_VL_IMAGE),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )
    T.Qwen2VLForConditionalGeneration(config).save_pretrained(out)
    T.Qwen2VLImageProcessor(
        min_pixels=IMAGE_PX**2,
        max_pixels=IMAGE_PX**2,
        patch_size=PATCH_PX,
        merge_size=2,
        temporal_patch_size=2,
    ).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


BUILDERS: dict[str, tuple[str, Callable[[Path], Path]]] = {
    "llama": ("llm", build_llama),
    "qwen2": ("llm", build_qwen2),
    "llava": ("vlm", build_llava),
    "idefics3": ("vlm", build_idefics3),
    "idefics3-split": ("vlm", functools.partial(build_idefics3, tile_px=16)),
    "qwen2-vl": ("vlm", build_qwen2_vl),
}
"""Architecture -> (kind, builder)."""
