"""Shared fixtures: offline, a machine-wide cache of built tiny bases, the smoke config."""

from __future__ import annotations

import os

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
# built bases are cached where every command caches them (fed_agent/cache.py)

from fed_agent.config import ExperimentConfig, load_config  # noqa: E402


@pytest.fixture(scope="session")
def smoke_cfg() -> ExperimentConfig:
    """The seconds-scale experiment: 3 ESs, 2 rounds, a 2-layer tiny LLM."""
    return load_config("smoke")


@pytest.fixture
def smoke_module(smoke_cfg):
    """The process-wide agent module of the smoke config, reset to its initial adapter."""
    from fed_agent.modules.adapter import agent_module

    module = agent_module(smoke_cfg.model, smoke_cfg.seed)
    module.reset()
    yield module
    module.reset()
