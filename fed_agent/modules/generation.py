"""Answering one request with one module, timed: greedy decoding or classification.

The timing is part of the answer because the evaluation measures exactly what the deployed
runtime does: time to first token (prefill + first token), then one cached decode step per
further token.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from fed_agent.data.scenes import ACTIONS
from fed_agent.data.tasks import Example
from fed_agent.models.base import TASK_KINDS
from fed_agent.modules.adapter import AgentModule
from fed_agent.modules.batching import encode_answers, prompt_tokens_read, prompt_window


@dataclass(frozen=True)
class Answer:
    """One module's answer to one request."""

    text: str
    """Generated text, or the predicted class for a classifier."""
    action: str
    """The decision read from the answer (its first word when that is an action, else "")."""
    confidence: float
    """Probability of the predicted class (classifier) or mean probability of the greedy
    tokens (generator)."""
    new_tokens: int
    ttft_s: float
    total_s: float


def _prompt_batch(module: AgentModule, example: Example) -> dict[str, torch.Tensor]:
    """The prompt exactly as training formats it (BOS, image slots, prompt), without answer."""
    batch = encode_answers(module.base, [example], module.cfg.max_seq_len, [""])
    batch.pop("labels")
    # an empty answer leaves only its EOS at the end: drop it to end on the prompt
    batch["input_ids"] = batch["input_ids"][:, :-1]
    batch["attention_mask"] = batch["attention_mask"][:, :-1]
    return batch


@torch.no_grad()
def greedy_tokens(
    module: AgentModule, example: Example, max_new_tokens: int, stop_at_eos: bool = True
) -> Iterator[tuple[int, float]]:
    """Greedy decoding, one ``(token id, its probability)`` at a time as it is decoded.

    The first item comes after the prefill (time to first token); each further one after one
    cached decode step. Stops after ``max_new_tokens`` tokens or, with ``stop_at_eos``, after
    the EOS token (which is yielded).
    """
    eos = module.base.tokenizer.eos_token_id
    batch = _prompt_batch(module, example)
    out = module.model(**batch, use_cache=True)
    mask = batch["attention_mask"]
    for count in range(1, max_new_tokens + 1):
        probs = torch.softmax(out.logits[:, -1].float(), dim=-1)
        token = probs.argmax(dim=-1, keepdim=True)
        yield int(token), float(probs[0, token])
        if count == max_new_tokens or (stop_at_eos and int(token) == eos):
            return
        mask = torch.cat([mask, mask.new_ones((1, 1))], dim=1)
        out = module.model(
            input_ids=token,
            attention_mask=mask,
            past_key_values=out.past_key_values,
            use_cache=True,
        )


def _generate(
    module: AgentModule, example: Example, max_new_tokens: int, stop_at_eos: bool
) -> Answer:
    tokenizer = module.base.tokenizer
    eos = tokenizer.eos_token_id
    start = time.perf_counter()
    tokens, confidences, ttft = [], [], 0.0
    for token, confidence in greedy_tokens(module, example, max_new_tokens, stop_at_eos):
        if not tokens:
            ttft = time.perf_counter() - start
        tokens.append(token)
        confidences.append(confidence)
    total = time.perf_counter() - start
    answer_tokens = tokens[: tokens.index(eos)] if eos in tokens else tokens
    text = tokenizer.decode(answer_tokens, skip_special_tokens=True)
    words = text.split()
    action = words[0].strip(".,") if words and words[0].strip(".,") in ACTIONS else ""
    return Answer(text, action, sum(confidences) / len(confidences), len(tokens), ttft, total)


@torch.no_grad()
def _classify(module: AgentModule, example: Example) -> Answer:
    batch = dict(
        module.base.tokenizer(
            [example.prompt],
            truncation=True,
            max_length=module.cfg.max_seq_len,
            return_tensors="pt",
        )
    )
    batch.pop("token_type_ids", None)
    start = time.perf_counter()
    probs = torch.softmax(module.model(**batch).logits[0].float(), dim=-1)
    elapsed = time.perf_counter() - start
    label = ACTIONS[int(probs.argmax())]
    return Answer(label, label, float(probs.max()), 0, elapsed, elapsed)


@dataclass(frozen=True)
class Delta:
    """One step of a streamed answer: the text it adds (may be empty) and, on the last step,
    why the answer ended."""

    text: str
    finish_reason: str | None = None
    """``stop`` (EOS, or a classifier's one-step answer), ``length`` (max tokens), else None."""
    tokens: int = 1
    """Answer tokens this step decoded (0 for the EOS step and a classifier's answer)."""
    prompt_tokens: int | None = None
    """On the first step only: the prompt tokens the module read (as
    :func:`~fed_agent.modules.batching.prompt_tokens_read` counts them, after a prompt longer
    than the module's context is cut to :func:`~fed_agent.modules.batching.prompt_window`)."""


def stream_answer(
    module: AgentModule, example: Example, max_new_tokens: int, stop_at_eos: bool = True
) -> Iterator[Delta]:
    """Run ``module`` on one request, yielding its answer text while it is decoded.

    The same greedy decoding as :func:`answer` (``stop_at_eos=False`` decodes exactly
    ``max_new_tokens`` tokens, for timing); the text is decoded from all answer tokens so far,
    and a step that would end inside a multi-byte character adds nothing until the character
    is complete. The first step carries the prompt tokens the module read.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    read = min(
        prompt_tokens_read(module.base, example.prompt),
        prompt_window(module.base, module.cfg.max_seq_len),
    )
    for step, delta in enumerate(_deltas(module, example, max_new_tokens, stop_at_eos)):
        yield dataclasses.replace(delta, prompt_tokens=read) if step == 0 else delta


def _deltas(
    module: AgentModule, example: Example, max_new_tokens: int, stop_at_eos: bool
) -> Iterator[Delta]:
    module.model.eval()
    if module.base.task_kind == "classify":
        yield Delta(_classify(module, example).text, "stop", 0)
        return
    tokenizer = module.base.tokenizer
    tokens: list[int] = []
    sent = ""
    for token, _ in greedy_tokens(module, example, max_new_tokens, stop_at_eos):
        if stop_at_eos and token == tokenizer.eos_token_id:
            yield Delta("", "stop", 0)
            return
        tokens.append(token)
        text = tokenizer.decode(tokens, skip_special_tokens=True)
        last = len(tokens) == max_new_tokens
        if text.endswith("\ufffd") and not last:  # a character split across tokens
            yield Delta("")
            continue
        yield Delta(text[len(sent) :], "length" if last else None)
        sent = text


def answer(
    module: AgentModule, example: Example, max_new_tokens: int, stop_at_eos: bool = True
) -> Answer:
    """Run ``module`` (with its currently loaded adapter) on one request.

    With ``stop_at_eos=False`` a generator decodes exactly ``max_new_tokens`` tokens (its
    answer text still ends at the first EOS): latency benchmarks time a fixed decode length so
    that tokens/s and percentiles compare across models and adapters.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    module.model.eval()
    kind = module.base.task_kind
    if kind == "generate":
        return _generate(module, example, max_new_tokens, stop_at_eos)
    if kind == "classify":
        return _classify(module, example)
    raise ValueError(f"unknown task_kind {kind!r}; valid choices: {list(TASK_KINDS)}")
