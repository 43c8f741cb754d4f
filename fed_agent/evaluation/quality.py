"""Held-out quality of an agent module: decision accuracy and answer loss.

A ``generate`` module is scored by the log-likelihood of each candidate action after the
prompt and by the next-token loss of the reference answers; a ``classify`` module by the argmax
of its class logits and the cross-entropy of the right class, on the ``decide`` examples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fed_agent.data.tasks import Example, action_candidates
from fed_agent.evaluation.intervals import accuracy_interval
from fed_agent.models.base import TASK_KINDS
from fed_agent.modules.adapter import AgentModule
from fed_agent.modules.batching import (
    IGNORE_INDEX,
    answer_log_likelihood,
    encode_answers,
    encode_classification,
    usable_examples,
)


@dataclass(frozen=True)
class Quality:
    """Quality on a set of examples."""

    decision_accuracy: float
    """Share of ``decide`` examples whose most likely action is the right one (NaN if none)."""
    answer_loss: float
    """Mean next-token loss over all answer tokens of all examples (for a classifier: the mean
    cross-entropy of the right class over the ``decide`` examples)."""
    num_examples: int
    num_decisions: int = 0
    """Held-out decisions behind ``decision_accuracy``: the n of its 95 % interval."""
    exact_match: float = float("nan")
    """Share of free-text examples (no closed answer set, not ``decide``) that greedy decoding
    answers exactly (NaN if none)."""

    @property
    def accuracy_interval(self) -> tuple[float, float]:
        """Wilson 95 % interval of ``decision_accuracy`` over ``num_decisions`` decisions."""
        return accuracy_interval(self.decision_accuracy, self.num_decisions)


@torch.no_grad()
def _scores(module: AgentModule, examples: list[Example], answers: list[str]) -> torch.Tensor:
    batch = encode_answers(module.base, examples, module.cfg.max_seq_len, answers)
    labels = batch.pop("labels")
    return answer_log_likelihood(module.model(**batch).logits, labels)


@torch.no_grad()
def _first_token_scores(module: AgentModule, examples: list[Example], token_ids: list[int]):
    """Next-token logits of single-token answers after each prompt: one forward per batch."""
    batch = encode_answers(module.base, examples, module.cfg.max_seq_len, [""] * len(examples))
    labels = batch.pop("labels")
    logits = module.model(**batch).logits
    # the empty answer leaves only EOS as label: the position before it ends the prompt
    last_prompt = (labels != IGNORE_INDEX).float().argmax(dim=1) - 1
    rows = torch.arange(len(examples))
    return logits[rows, last_prompt][:, token_ids]


def is_closed_set(example: Example) -> bool:
    """True when the example is scored by accuracy over a closed answer set."""
    return bool(example.choices) or example.task == "decide"


def decision_accuracy(module: AgentModule, examples: list[Example], batch_size: int) -> float:
    """Accuracy of argmax over the log-likelihood of each answer of the closed set: the
    example's own ``choices`` (data from files), else the decision's actions."""
    decide = [e for e in examples if is_closed_set(e)]
    if not decide:
        return float("nan")
    groups: dict[tuple[str, ...], list[Example]] = {}
    for example in decide:
        groups.setdefault(example.choices or tuple(action_candidates()), []).append(example)
    correct = sum(
        _correct_choices(module, group, list(candidates), batch_size)
        for candidates, group in groups.items()
    )
    return correct / len(decide)


def _correct_choices(
    module: AgentModule, decide: list[Example], candidates: list[str], batch_size: int
) -> int:
    """How many examples have their own answer as the most likely of ``candidates``."""
    tokenizer = module.base.tokenizer
    encoded = [tokenizer.encode(c, add_special_tokens=False) for c in candidates]
    single_token = all(len(ids) == 1 for ids in encoded)
    correct = 0
    for start in range(0, len(decide), batch_size):
        chunk = decide[start : start + batch_size]
        if single_token:
            scores = _first_token_scores(module, chunk, [ids[0] for ids in encoded])
        else:
            scores = torch.stack([_scores(module, chunk, [c] * len(chunk)) for c in candidates], 1)
        predicted = scores.argmax(dim=1).tolist()
        correct += sum(
            candidates[p].strip() == e.answer.strip() for p, e in zip(predicted, chunk, strict=True)
        )
    return correct


def answer_loss(module: AgentModule, examples: list[Example], batch_size: int) -> float:
    """Mean token-level cross-entropy of the reference answers."""
    return _answer_scores(module, examples, batch_size)[0]


@torch.no_grad()
def _answer_scores(
    module: AgentModule, examples: list[Example], batch_size: int
) -> tuple[float, float]:
    """Mean answer loss and the exact-match share of the free-text examples, in one pass.

    Greedy decoding yields the reference answer (and then EOS) exactly when every answer token
    is the argmax after the prompt and the reference tokens before it, so exact match needs no
    generation: the teacher-forced argmax of the same forward pass decides it.
    """
    total, tokens, exact, free = 0.0, 0, 0, 0
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        batch = encode_answers(module.base, chunk, module.cfg.max_seq_len)
        labels = batch.pop("labels")
        logits = module.model(**batch).logits
        labels = labels.to(logits.device)  # the base may run on a GPU (model.device)
        total -= float(answer_log_likelihood(logits, labels).sum())
        targets = labels[:, 1:]
        tokens += int((targets != IGNORE_INDEX).sum())
        hits = (logits[:, :-1].argmax(dim=-1) == targets) | (targets == IGNORE_INDEX)
        is_free = torch.tensor([not is_closed_set(e) for e in chunk], device=hits.device)
        exact += int((hits.all(dim=1) & is_free).sum())
        free += int(is_free.sum())
    return total / max(tokens, 1), exact / free if free else float("nan")


@torch.no_grad()
def _classifier_quality(module: AgentModule, examples: list[Example], batch_size: int) -> Quality:
    decide = usable_examples(module.base, examples)
    if not decide:
        return Quality(float("nan"), float("nan"), 0)
    correct, total_loss = 0, 0.0
    for start in range(0, len(decide), batch_size):
        batch = encode_classification(
            decide[start : start + batch_size], module.base.tokenizer, module.cfg.max_seq_len
        )
        labels = batch.pop("labels")
        logits = module.model(**batch).logits
        labels = labels.to(logits.device)
        correct += int((logits.argmax(dim=1) == labels).sum())
        total_loss += float(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
    return Quality(correct / len(decide), total_loss / len(decide), len(decide), len(decide))


def evaluate_quality(module: AgentModule, examples: list[Example], batch_size: int) -> Quality:
    """Decision accuracy and answer loss of the module's current adapter."""
    module.model.eval()
    kind = module.base.task_kind
    if kind == "generate":
        loss, exact = _answer_scores(module, examples, batch_size)
        return Quality(
            decision_accuracy(module, examples, batch_size),
            loss,
            len(examples),
            sum(is_closed_set(e) for e in examples),
            exact,
        )
    if kind == "classify":
        return _classifier_quality(module, examples, batch_size)
    raise ValueError(f"unknown task_kind {kind!r}; valid choices: {list(TASK_KINDS)}")


def mean_quality(qualities: list[Quality]) -> Quality:
    """Example-weighted mean of several qualities of modules scored on one held-out set.

    ``num_decisions`` stays that set's size (the largest of the parts), not the sum: the
    modules answered the same scenes, so their mean is no more precise than one of them, and
    its interval is the (conservative) one of a single module's accuracy.
    """
    weights = np.array([q.num_examples for q in qualities], dtype=float)
    return Quality(
        float(np.average([q.decision_accuracy for q in qualities], weights=weights)),
        float(np.average([q.answer_loss for q in qualities], weights=weights)),
        int(weights.sum()),
        max(q.num_decisions for q in qualities),
    )


def pooled_quality(parts: list[Quality]) -> Quality:
    """The quality over disjoint shares of one held-out set, one share per module (each
    module answers its own share, e.g. every ``n``-th example): the modules' mean accuracy
    for one held-out pass, with the interval of the whole set's ``n``."""
    decisions = sum(q.num_decisions for q in parts)
    examples = sum(q.num_examples for q in parts)
    return Quality(
        sum(q.decision_accuracy * q.num_decisions for q in parts) / decisions,
        sum(q.answer_loss * q.num_examples for q in parts) / examples,
        examples,
        decisions,
    )
