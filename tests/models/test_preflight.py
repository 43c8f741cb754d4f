"""Pre-flight: disk and Hugging Face cache checks run when a run starts, not at config load."""

from __future__ import annotations

import dataclasses

import pytest

from fed_agent.config import ConfigError, load_config
from fed_agent.deploy.launcher import check_model
from fed_agent.models.base import ModelLoadError
from fed_agent.models.preflight import check_model as check_base


def test_config_load_reads_no_disk_for_model_path():
    cfg = load_config("default", ["model=hf", "model.path=./no-such-dir"])
    assert cfg.model.path == "./no-such-dir"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("", "model.path must name a Hugging Face model id or a local directory"),
        ("./no-such-dir", "model.path './no-such-dir' must be a directory holding"),
        (
            "fedagent-test/not-downloaded",
            "'fedagent-test/not-downloaded' must be available offline",
        ),
        ("not a valid id!", "is neither a model id nor a directory"),
    ],
)
def test_a_path_that_cannot_load_is_refused_in_one_line(path, message, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = load_config("default", ["model=hf", f"model.path='{path}'"])
    with pytest.raises(ModelLoadError, match=message) as err:
        check_base(cfg.model)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=message):  # what `fed-agent run` reports
        check_model(cfg)


def test_a_local_folder_with_a_config_passes(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    check_base(load_config("default", ["model=hf", f"model.path={tmp_path}"]).model)


def test_a_registry_base_needs_no_path():
    check_base(load_config("smoke").model)


def test_a_gpu_device_this_machine_lacks_is_refused(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = dataclasses.replace(load_config("smoke").model, device="cuda")
    with pytest.raises(ModelLoadError, match="model.device=cuda but this machine has no CUDA"):
        check_base(cfg)


def test_quantisation_is_refused_at_config_load_without_cuda(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="model.quantization=4bit needs a CUDA GPU") as err:
        load_config("default", ["model=hf", "model.path=x", "model.quantization=4bit"])
    assert "\n" not in str(err.value)


def test_quantisation_without_bitsandbytes_is_refused_before_the_run(monkeypatch, tmp_path):
    import importlib.util

    import torch

    (tmp_path / "config.json").write_text("{}")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # passes the config check
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name)
    )
    overrides = ["model=hf", f"model.path={tmp_path}", "model.quantization=8bit"]
    cfg = load_config("default", overrides)
    with pytest.raises(ModelLoadError, match="needs bitsandbytes"):
        check_base(cfg.model)
