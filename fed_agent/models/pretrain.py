"""Language-model pre-training of a tiny base on the public scene corpus.

A randomly initialised base makes LoRA fine-tuning a plumbing test only; pre-training it on
domain text (logs and descriptions, never the agent's tasks) gives a base that knows the
language but not the decisions, so the federated modules have something real to learn.
"""

from __future__ import annotations

import logging

import torch

from fed_agent.config.schema import ModelConfig

log = logging.getLogger(__name__)


def _lm_batch(tokenizer, lines: list[str], max_len: int) -> dict[str, torch.Tensor]:
    enc = tokenizer(
        [f"{tokenizer.bos_token}{line}{tokenizer.eos_token}" for line in lines],
        add_special_tokens=False,
        padding=True,
        truncation=True,
        max_length=max_len,
        return_tensors="pt",
    )
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    return {
        "input_ids": enc["input_ids"],
        "attention_mask": enc["attention_mask"],
        "labels": labels,
    }


@torch.enable_grad()  # a caller may hold torch.no_grad() (e.g. a first use in inference)
def pretrain_language_model(
    model: torch.nn.Module, tokenizer, corpus: list[str], cfg: ModelConfig, seed: int
) -> float:
    """Train all weights of ``model`` on next-token prediction over ``corpus``; returns the loss."""
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.pretrain_lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=cfg.pretrain_lr, total_steps=max(cfg.pretrain_steps, 1), pct_start=0.1
    )
    model.train()
    loss = torch.tensor(float("nan"))
    for step in range(cfg.pretrain_steps):
        idx = torch.randint(len(corpus), (32,), generator=generator).tolist()
        loss = model(**_lm_batch(tokenizer, [corpus[i] for i in idx], cfg.max_seq_len)).loss
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        if step % 100 == 0:
            log.info("pretrain step %d/%d loss %.3f", step, cfg.pretrain_steps, loss.item())
    model.eval()
    return float(loss.item())
