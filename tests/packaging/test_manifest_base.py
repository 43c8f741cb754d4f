"""A manifest's base entry names nothing outside the agent folder and the model cache: no
cache folder of its choosing, and a ``model=hf`` base by its Hugging Face model id only."""

from __future__ import annotations

import dataclasses
import json

import pytest

from fed_agent.config.schema import ModelConfig
from fed_agent.modules.adapter import AdapterError
from fed_agent.packaging.export import MANIFEST, read_manifest


def _write(agent_dir, base_changes=None, config_changes=None, multi=False):
    config = {k: v for k, v in dataclasses.asdict(ModelConfig()).items() if k != "cache_dir"}
    config.update(config_changes or {})
    base = {"name": config["name"], "fingerprint": "f" * 64, "model_config": config}
    base.update(base_changes or {})
    adapter = {"file": "adapter.safetensors"}
    if multi:
        manifest = {
            "format_version": 2,
            "chain": ["m"],
            "modules": {"m": {"base": base, "adapter": adapter, "inputs": []}},
        }
    else:
        manifest = {"format_version": 1, "base": base, "adapter": adapter}
    agent_dir.mkdir(exist_ok=True)
    (agent_dir / MANIFEST).write_text(json.dumps(manifest))
    return agent_dir


@pytest.mark.parametrize("multi", [False, True])
def test_a_manifest_may_not_choose_the_cache_folder(tmp_path, multi):
    agent = _write(tmp_path / "agent", config_changes={"cache_dir": str(tmp_path)}, multi=multi)
    with pytest.raises(AdapterError, match="base.model_config.cache_dir") as err:
        read_manifest(agent)
    assert str(agent / MANIFEST) in str(err.value)


@pytest.mark.parametrize(
    "path", ["/opt/models/llama", "../elsewhere", "./base/inside", "~/models/x", "a/b/c"]
)
def test_an_hf_base_path_must_be_a_model_id(tmp_path, path):
    agent = _write(tmp_path / "agent", config_changes={"name": "hf", "path": path})
    with pytest.raises(AdapterError, match=r"base.model_config.path .* is not a model id"):
        read_manifest(agent)


def test_a_model_id_that_is_a_folder_of_the_current_directory_is_refused(tmp_path, monkeypatch):
    (tmp_path / "org" / "model").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    agent = _write(tmp_path / "agent", config_changes={"name": "hf", "path": "org/model"})
    with pytest.raises(AdapterError, match="names a folder of the current directory"):
        read_manifest(agent)


def test_a_model_id_and_a_cache_folder_name_are_accepted(tmp_path):
    agent = _write(
        tmp_path / "agent",
        base_changes={"cache_folder": "models--org--model"},
        config_changes={"name": "hf", "path": "HuggingFaceTB/SmolLM2-135M"},
    )
    manifest = read_manifest(agent)
    assert manifest["base"]["model_config"]["path"] == "HuggingFaceTB/SmolLM2-135M"


def test_a_path_of_a_registry_base_is_not_a_source(tmp_path):
    # only model=hf reads model.path; other bases ignore it
    agent = _write(tmp_path / "agent", config_changes={"path": "/anything"})
    assert read_manifest(agent)["base"]["model_config"]["path"] == "/anything"


@pytest.mark.parametrize("folder", ["..", "../outside", "a/b", "", "."])
def test_a_cache_folder_is_one_folder_name_in_the_model_cache(tmp_path, folder):
    agent = _write(tmp_path / "agent", base_changes={"cache_folder": folder})
    with pytest.raises(AdapterError, match="base.cache_folder must be one folder name"):
        read_manifest(agent)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"no_such_key": 1}, "unexpected keyword argument 'no_such_key'"),
        ({"lora_r": 0}, "model.lora_r must be >= 1"),
        ({"pretrain_lr": "fast"}, "model.pretrain_lr must be a number"),
    ],
)
def test_a_base_config_the_schema_refuses_is_a_manifest_error(tmp_path, changes, message):
    agent = _write(tmp_path / "agent", config_changes=changes)
    with pytest.raises(AdapterError, match="base.model_config is not a valid model config") as err:
        read_manifest(agent)
    assert message in str(err.value)
