"""Examples -> padded tensors for training and scoring.

A ``generate`` base gets prompt + answer tokens with the loss on the answer only; a ``classify``
base gets the prompt and the index of the answer among the decision classes. :func:`encode_for`
is the one place that picks between them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from fed_agent.data.scenes import ACTIONS
from fed_agent.data.tasks import Example
from fed_agent.models.base import TASK_KINDS, BaseModel
from fed_agent.models.prompts import prompt_parts

IGNORE_INDEX = -100


def encode_batch(
    examples: Sequence[Example],
    tokenizer,
    max_len: int,
    image_ids: Sequence[int] = (),
    answers: Sequence[str] | None = None,
    chat: bool = False,
) -> dict[str, torch.Tensor]:
    """Tokenise prompt + answer (+ EOS) per example, right-padded, prompt masked out of labels.

    Parameters
    ----------
    examples : sequence of Example
        Prompts (and images when ``image_ids`` is not empty).
    tokenizer : PreTrainedTokenizerFast
    max_len : int
        Sequences are cut from the left of the prompt text so that the answer and the image
        always survive.
    image_ids : sequence of int
        The token ids of one image as the model's processor writes them (vision models;
        :attr:`BaseModel.image_ids`): before the prompt, or where the chat template puts the
        image part of the user turn (``fed_agent.models.prompts``).
    answers : sequence of str, optional
        Score these answers instead of the examples' own (decision candidates).
    chat : bool
        Wrap each prompt in the tokenizer's chat template as a user turn with the generation
        prompt (the template brings its own start tokens: no BOS is prepended).

    Returns
    -------
    dict
        ``input_ids``, ``attention_mask``, ``labels`` of shape (B, L) and, for vision models,
        ``pixel_values`` of shape (B, 3, H, W).
    """
    answers = [e.answer for e in examples] if answers is None else answers
    rows, label_rows = [], []
    for example, answer in zip(examples, answers, strict=True):
        head, prompt = prompt_parts(tokenizer, example.prompt, chat, image_ids)
        target = tokenizer.encode(answer, add_special_tokens=False) + [tokenizer.eos_token_id]
        budget = max_len - len(target) - len(head) - 1
        prompt = prompt[-budget:] if budget > 0 else []
        # some real tokenizers (SmolLM2's) have no BOS token: then nothing is prepended
        bos = [] if tokenizer.bos_token_id is None or chat else [tokenizer.bos_token_id]
        ids = [*bos, *head, *prompt, *target][:max_len]
        labels = [IGNORE_INDEX] * (len(ids) - len(target)) + target
        rows.append(ids)
        label_rows.append(labels[: len(ids)])
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, lab) in enumerate(zip(rows, label_rows, strict=True)):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(lab)] = torch.tensor(lab)
        mask[i, : len(ids)] = 1
    batch = {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
    if image_ids:
        batch["pixel_values"] = torch.from_numpy(np.stack([e.image for e in examples]))
    return batch


def encode_answers(
    base: BaseModel,
    examples: Sequence[Example],
    max_len: int,
    answers: Sequence[str] | None = None,
) -> dict[str, torch.Tensor]:
    """:func:`encode_batch` with ``base``'s image layout and prompt format."""
    return encode_batch(
        examples, base.tokenizer, max_len, base.image_ids, answers, base.chat_template
    )


def encode_classification(
    examples: Sequence[Example], tokenizer, max_len: int
) -> dict[str, torch.Tensor]:
    """Tokenise the prompts; ``labels`` (B,) are the answers' indices in ACTIONS.

    Raises
    ------
    ValueError
        For an example whose answer is not a decision class (e.g. a ``describe`` example).
    """
    labels = []
    for example in examples:
        answer = example.answer.strip()
        if answer not in ACTIONS:
            raise ValueError(
                f"a classifier scores decisions only; answer {answer!r} of a {example.task!r} "
                f"example is not one of {list(ACTIONS)}"
            )
        labels.append(ACTIONS.index(answer))
    batch = dict(
        tokenizer(
            [e.prompt for e in examples],
            padding=True,
            truncation=True,
            max_length=max_len,
            return_tensors="pt",
        )
    )
    batch.pop("token_type_ids", None)
    batch["labels"] = torch.tensor(labels, dtype=torch.long)
    return batch


def prompt_tokens_read(base: BaseModel, prompt: str) -> int:
    """The tokens of ``prompt`` that ``base`` reads before the answer, as the encoders above
    lay it out: with the chat template's own tokens around it (a ``generate`` base that wraps
    prompts), without BOS, a classifier's special tokens and the image's tokens (the context
    windows that serving checks leave those out)."""
    if base.task_kind == "classify" or not base.chat_template:
        return len(base.tokenizer.encode(prompt, add_special_tokens=False))
    head, text = prompt_parts(base.tokenizer, prompt, True, base.image_ids)
    return len(head) - len(base.image_ids) + len(text)


def prompt_window(base: BaseModel, max_len: int) -> int:
    """The most prompt tokens (as :func:`prompt_tokens_read` counts them) that ``base`` reads in
    a context of ``max_len``: less BOS, the image's tokens and the first answer token's place
    (a classifier's less its special tokens). A longer prompt is cut to this many."""
    if base.task_kind == "classify":
        return max_len - base.tokenizer.num_special_tokens_to_add()
    return max_len - 2 - len(base.image_ids)


def usable_examples(base: BaseModel, examples: Sequence[Example]) -> list[Example]:
    """The examples ``base`` can learn from: all for ``generate``, decisions for ``classify``."""
    if base.task_kind == "generate":
        return list(examples)
    if base.task_kind == "classify":
        return [e for e in examples if e.task == "decide"]
    raise ValueError(f"unknown task_kind {base.task_kind!r}; valid choices: {list(TASK_KINDS)}")


def encode_for(
    base: BaseModel, examples: Sequence[Example], max_len: int
) -> dict[str, torch.Tensor]:
    """The training batch of ``examples`` for ``base``'s task kind (see module docstring)."""
    if base.task_kind == "generate":
        return encode_answers(base, examples, max_len)
    if base.task_kind == "classify":
        return encode_classification(examples, base.tokenizer, max_len)
    raise ValueError(f"unknown task_kind {base.task_kind!r}; valid choices: {list(TASK_KINDS)}")


def answer_log_likelihood(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of log p(answer token) per sequence, shape (B,), from next-token ``logits``."""
    shifted_logits = logits[:, :-1].float()
    shifted_labels = labels[:, 1:].to(logits.device)
    mask = shifted_labels != IGNORE_INDEX
    logp = torch.log_softmax(shifted_logits, dim=-1)
    picked = logp.gather(-1, shifted_labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(dim=1)
