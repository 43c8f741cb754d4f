"""A prompt's token ids before its answer: the chat template and where the image goes.

Training, scoring, generation, export and serving all build prompts here (through
``fed_agent.modules.batching``), so a base reads the same layout everywhere. A VLM's image
takes ``image_ids``: the ids its own processor writes for one image (its image tokens and any
marker tokens around them, ``fed_agent.models.hf_vision.image_prompt_ids``). With the chat
template the image is an image part of the user turn, placed where the template puts it
(inside Qwen2-VL's ``<|vision_start|>`` ... ``<|vision_end|>``, after SmolVLM's ``User:``);
without it the image comes first, then the prompt.
"""

from __future__ import annotations

from collections.abc import Sequence

IMAGE_PART = {"type": "image"}
"""The content part a chat template renders as the image placeholder."""


def chat_text(tokenizer, prompt: str, image: bool) -> str:
    """``prompt`` as one user turn of the tokenizer's chat template, with the generation
    prompt; with ``image``, an image part comes before the text (structured content)."""
    content = [IMAGE_PART, {"type": "text", "text": prompt}] if image else prompt
    turn = [{"role": "user", "content": content}]
    return tokenizer.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)


def prompt_parts(
    tokenizer, prompt: str, chat: bool, image_ids: Sequence[int] = ()
) -> tuple[list[int], list[int]]:
    """(head, text) of a prompt: ``head`` ends with the image (empty without one) and is kept
    whole when a long prompt is cut; ``text`` is what follows, cut from its left.

    Raises
    ------
    ValueError
        When the chat template does not write exactly one image placeholder
        (``tokenizer.image_token``) for the image part.
    """
    encode = tokenizer.encode
    if not chat:
        return list(image_ids), encode(prompt, add_special_tokens=False)
    ids = encode(chat_text(tokenizer, prompt, bool(image_ids)), add_special_tokens=False)
    if not image_ids:
        return [], ids
    placeholder = tokenizer.convert_tokens_to_ids(tokenizer.image_token)
    where = [i for i, token in enumerate(ids) if token == placeholder]
    if len(where) != 1:
        raise ValueError(
            f"the chat template writes {len(where)} image placeholders "
            f"{tokenizer.image_token!r} for one image part (expected 1); set "
            "model.use_chat_template=false to put the image before the plain prompt"
        )
    return [*ids[: where[0]], *image_ids], ids[where[0] + 1 :]
