"""One model cache for every command, and a base build timed apart from the agent's load."""

from __future__ import annotations

import dataclasses

from fed_agent.cache import CACHE_ENV, PROJECT_CACHE, default_cache_dir
from fed_agent.config.schema import ModelConfig
from fed_agent.deploy.launcher import effective_overrides
from fed_agent.models.base import cache_root
from fed_agent.models.registry import base_key, build_base


def test_every_command_resolves_the_project_cache_without_the_environment(
    monkeypatch, smoke_cfg
) -> None:
    monkeypatch.delenv(CACHE_ENV, raising=False)
    assert default_cache_dir() == PROJECT_CACHE.resolve()
    # what `fed-agent evaluate/serve` load from is what `fed-agent run` pins for its apps
    assert cache_root(ModelConfig()) == PROJECT_CACHE.resolve()
    pinned = effective_overrides([], smoke_cfg, default_cache_dir())
    assert f"model.cache_dir='{PROJECT_CACHE.resolve()}'" in pinned


def test_the_environment_moves_the_cache_for_every_command(
    monkeypatch, tmp_path, smoke_cfg
) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "models"))
    assert cache_root(ModelConfig()) == tmp_path / "models"
    assert default_cache_dir() == tmp_path / "models"
    # an explicit model.cache_dir still wins for its run
    assert cache_root(ModelConfig(cache_dir=str(tmp_path / "own"))) == tmp_path / "own"


def test_a_base_is_built_once_and_the_build_is_timed_apart(monkeypatch, tmp_path, smoke_cfg):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    cfg = dataclasses.replace(smoke_cfg.model, pretrain_steps=2, pretrain_corpus_size=60)
    first = build_base(cfg, seed=7)
    assert (tmp_path / base_key(cfg, 7) / "config.json").is_file()
    again = build_base(cfg, seed=7)
    assert first > 0.05 and again < first / 5
    # bases that load straight from their source need no build
    assert build_base(ModelConfig(name="hf", path=str(tmp_path)), seed=7) == 0.0


def test_a_base_is_the_same_whatever_thread_count_the_building_process_has(tmp_path):
    # the default model's size, 2 pre-training steps: unpinned, 1 and 2 threads gave other bytes
    import torch

    cfg = dataclasses.replace(ModelConfig(), pretrain_steps=2)
    before = torch.get_num_threads()
    weights = []
    try:
        for threads in (2, 1):
            torch.set_num_threads(threads)
            built = dataclasses.replace(cfg, cache_dir=str(tmp_path / str(threads)))
            build_base(built, seed=0)
            stored = cache_root(built) / base_key(built, 0) / "model.safetensors"
            weights.append(stored.read_bytes())
            assert torch.get_num_threads() == threads  # the process's count came back
    finally:
        torch.set_num_threads(before)
    assert weights[0] == weights[1]
