"""Shared fixtures: offline, a machine-wide cache of built tiny bases, the smoke config."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


def run_fed_agent(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``fed-agent ARGS`` in a fresh process from the repository root, offline; its output kept."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}
    return subprocess.run(
        [sys.executable, "-m", "fed_agent.cli", *args],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
