"""``model.train_lm_head``: the LM's output head trains in full and travels with the adapter."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from fed_agent.data import es_examples
from fed_agent.models.base import ModelLoadError, output_head
from fed_agent.models.registry import base_key
from fed_agent.modules.adapter import agent_module
from fed_agent.modules.training import train_locally


@pytest.fixture
def head_module(smoke_cfg):
    """The smoke config's module with the output head trained, reset around each test."""
    module = agent_module(dataclasses.replace(smoke_cfg.model, train_lm_head=True), smoke_cfg.seed)
    module.reset()
    yield module
    module.reset()


def _head_keys(module) -> list[str]:
    return [k for k in module.adapter_keys if "lm_head" in k]


def test_the_head_is_in_the_adapter_and_changes_with_a_training_step(head_module, smoke_cfg):
    assert head_module.base.trainable_modules == ("lm_head",)
    (key,) = _head_keys(head_module)
    vocab = len(head_module.base.tokenizer)
    assert head_module.initial_state[key].shape == (vocab, smoke_cfg.model.hidden_size)
    frozen = head_module.model.get_base_model().lm_head.original_module.weight.detach().clone()
    # it starts as the base's head, so an untrained module answers as the base does
    assert np.array_equal(head_module.initial_state[key], frozen.numpy())
    examples = es_examples(smoke_cfg.data, smoke_cfg.seed, 0)
    train_locally(head_module, examples, smoke_cfg.training, 1, seed=0)
    after = head_module.adapter_state()
    assert np.abs(after[key] - head_module.initial_state[key]).max() > 1e-5
    # the base's own head stays frozen: only the copy that travels trains
    assert torch.equal(head_module.model.get_base_model().lm_head.original_module.weight, frozen)


def test_without_the_setting_the_head_neither_travels_nor_trains(smoke_module, smoke_cfg):
    assert smoke_module.base.trainable_modules == () and not _head_keys(smoke_module)
    head = smoke_module.model.get_base_model().lm_head.weight.detach().clone()
    train_locally(smoke_module, es_examples(smoke_cfg.data, 0, 0), smoke_cfg.training, 1, seed=0)
    assert torch.equal(smoke_module.model.get_base_model().lm_head.weight, head)


def test_the_setting_keeps_the_built_base_and_needs_an_output_head(smoke_cfg):
    trained = dataclasses.replace(smoke_cfg.model, train_lm_head=True)
    assert base_key(trained, 0) == base_key(smoke_cfg.model, 0)
    with pytest.raises(ModelLoadError, match="no language-model output head"):
        output_head(torch.nn.Sequential(torch.nn.Linear(2, 2)))
