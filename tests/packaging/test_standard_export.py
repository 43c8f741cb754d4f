"""Exported agents load with stock peft/transformers and give the project runtime's logits."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from peft import PeftModel
from safetensors.numpy import load_file
from transformers import AutoModelForCausalLM

from fed_agent.data import heldout_examples
from fed_agent.modules.generation import _prompt_batch
from fed_agent.packaging.export import (
    MANIFEST,
    ModulePart,
    export_agent,
    export_modules,
    module_specs,
)
from fed_agent.runtime import AgentRuntime


def _trained_like(state: dict, seed: int) -> dict:
    """An adapter far from the initial one (B != 0), so the module changes the logits."""
    rng = np.random.default_rng(seed)
    return {k: (v + rng.normal(0.0, 0.05, v.shape)).astype(np.float32) for k, v in state.items()}


@pytest.fixture
def batch(smoke_cfg, smoke_module):
    examples = heldout_examples(dataclasses.replace(smoke_cfg.data, eval_samples=4), 0, False)
    return _prompt_batch(smoke_module, examples[0])


@torch.no_grad()
def _runtime_logits(agent_dir, name: str, seed: int, batch: dict) -> torch.Tensor:
    runtime = AgentRuntime.load(agent_dir, seed)
    part = next(p for p in runtime.modules if p.name == name)
    return runtime.activate(part).model(**batch).logits


@torch.no_grad()
def _stock_logits(agent_dir, name: str, batch: dict) -> torch.Tensor:
    spec = module_specs(json.loads((agent_dir / MANIFEST).read_text()))[name]
    base = AutoModelForCausalLM.from_pretrained(agent_dir / spec["base"]["folder"])
    model = PeftModel.from_pretrained(base, agent_dir / spec["adapter"]["peft_dir"]).eval()
    return model(**batch).logits


def test_a_single_module_agent_is_a_stock_peft_adapter_and_merged_model(
    tmp_path, smoke_cfg, smoke_module, batch
) -> None:
    state = _trained_like(smoke_module.initial_state, 1)
    agent_dir = export_agent(tmp_path / "agent", smoke_module, state, {}, merged=True)
    manifest = json.loads((agent_dir / MANIFEST).read_text())
    peft_dir = agent_dir / manifest["adapter"]["peft_dir"]
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {
        p.name for p in peft_dir.iterdir()
    }
    config = json.loads((peft_dir / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == manifest["base"]["folder"]
    # the standard folder holds exactly the manifest's adapter
    standard = load_file(str(peft_dir / "adapter_model.safetensors"))
    own = load_file(str(agent_dir / manifest["adapter"]["file"]))
    assert standard.keys() == own.keys()
    assert all(np.array_equal(standard[k], own[k]) for k in own)

    runtime = _runtime_logits(agent_dir, "agent", smoke_cfg.seed, batch)
    torch.testing.assert_close(_stock_logits(agent_dir, "agent", batch), runtime)
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(agent_dir / "merged")(**batch).logits
        base = smoke_module.model.get_base_model()
        with smoke_module.model.disable_adapter():
            plain = base(**batch).logits
    torch.testing.assert_close(merged, runtime, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(plain, runtime, atol=1e-3)  # the module does change the answer


def test_each_module_of_a_chain_is_its_own_peft_folder_on_one_copied_base(
    tmp_path, smoke_cfg, smoke_module, batch
) -> None:
    states = {n: _trained_like(smoke_module.initial_state, i) for i, n in enumerate("ab")}
    parts = {
        "perception": ModulePart(smoke_module, states["a"]),
        "decision": ModulePart(smoke_module, states["b"], inputs=("perception",)),
    }
    agent_dir = export_modules(tmp_path / "agent", parts, {})
    assert len(list((agent_dir / "base").iterdir())) == 1
    logits = {}
    for name in parts:
        logits[name] = _stock_logits(agent_dir, name, batch)
        runtime = _runtime_logits(agent_dir, name, smoke_cfg.seed, batch)
        torch.testing.assert_close(logits[name], runtime)
    assert not torch.allclose(logits["perception"], logits["decision"], atol=1e-3)


def test_a_large_base_is_named_not_copied(tmp_path, smoke_cfg, smoke_module, monkeypatch) -> None:
    from fed_agent.packaging import export

    monkeypatch.setattr(export, "EMBED_BASE_MAX_BYTES", 1024)
    agent_dir = export_agent(tmp_path / "agent", smoke_module, smoke_module.initial_state, {})
    manifest = json.loads((agent_dir / MANIFEST).read_text())
    assert "folder" not in manifest["base"] and not (agent_dir / "base").exists()
    config = json.loads((agent_dir / "peft/agent/adapter_config.json").read_text())
    # named by its folder in the model cache, never by this machine's absolute path
    assert config["base_model_name_or_path"] == smoke_module.base.path.name
    assert manifest["base"]["cache_folder"] == smoke_module.base.path.name
    assert str(smoke_module.base.path) not in (agent_dir / MANIFEST).read_text()


def test_a_trained_output_head_travels_in_the_stock_adapter_and_the_merged_model(
    tmp_path, smoke_cfg, batch
) -> None:
    from fed_agent.modules.adapter import agent_module

    cfg = dataclasses.replace(smoke_cfg.model, train_lm_head=True)
    module = agent_module(cfg, smoke_cfg.seed)
    state = _trained_like(module.initial_state, 6)
    agent_dir = export_agent(tmp_path / "agent", module, state, {}, merged=True)
    manifest = json.loads((agent_dir / MANIFEST).read_text())
    assert manifest["base"]["model_config"]["train_lm_head"] is True
    peft_dir = agent_dir / manifest["adapter"]["peft_dir"]
    config = json.loads((peft_dir / "adapter_config.json").read_text())
    assert config["modules_to_save"] == ["lm_head"]
    assert any("lm_head" in k for k in load_file(str(peft_dir / "adapter_model.safetensors")))
    runtime = _runtime_logits(agent_dir, "agent", smoke_cfg.seed, batch)
    torch.testing.assert_close(_stock_logits(agent_dir, "agent", batch), runtime)
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(agent_dir / "merged")(**batch).logits
        head = [k for k in state if "lm_head" in k]
        module.load_adapter({**state, **{k: module.initial_state[k] for k in head}})
        untrained_head = module.model(**batch).logits
    module.reset()
    torch.testing.assert_close(merged, runtime, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(untrained_head, runtime, atol=1e-3)  # the head is in the answer


@pytest.mark.slow
@pytest.mark.parametrize("head", [False, True])
@torch.no_grad()
def test_a_tiny_vlm_agent_loads_as_a_stock_llava_with_its_peft_adapter(tmp_path, head) -> None:
    from transformers import LlavaForConditionalGeneration

    from fed_agent.config import load_config
    from fed_agent.modules.adapter import agent_module

    cfg = load_config("default", ["model=tiny-vlm", f"model.train_lm_head={head}"])
    module = agent_module(cfg.model, cfg.seed)  # builds the tiny VLM base once per machine
    state = _trained_like(module.initial_state, 2)
    agent_dir = export_agent(tmp_path / "agent", module, state, {}, merged=True)
    manifest = json.loads((agent_dir / MANIFEST).read_text())
    config = json.loads(
        (agent_dir / manifest["adapter"]["peft_dir"] / "adapter_config.json").read_text()
    )
    expected = ["multi_modal_projector", "lm_head"] if head else ["multi_modal_projector"]
    assert config["modules_to_save"] == expected
    example = heldout_examples(dataclasses.replace(cfg.data, eval_samples=4), 0, True)[0]
    batch = _prompt_batch(module, example)
    try:
        runtime = _runtime_logits(agent_dir, "agent", cfg.seed, batch)
    finally:
        module.reset()  # the module is process-wide: leave it as other tests expect it
    base = LlavaForConditionalGeneration.from_pretrained(agent_dir / manifest["base"]["folder"])
    stock = PeftModel.from_pretrained(base, agent_dir / manifest["adapter"]["peft_dir"]).eval()
    torch.testing.assert_close(stock(**batch).logits, runtime)
    merged = LlavaForConditionalGeneration.from_pretrained(agent_dir / "merged").eval()
    torch.testing.assert_close(merged(**batch).logits, runtime, rtol=1e-4, atol=1e-4)


def test_a_run_exports_merged_modules_on_request(tmp_path, smoke_cfg, smoke_module, batch) -> None:
    from fed_agent.config import load_config
    from fed_agent.packaging.extend import Extension, export_run_agent

    assert load_config("smoke", ["agent.merged=true"]).agent.merged
    earlier = _trained_like(smoke_module.initial_state, 4)
    state = _trained_like(smoke_module.initial_state, 5)
    extension = Extension(tmp_path / "earlier", {"perception": ModulePart(smoke_module, earlier)})
    agent_dir = export_run_agent(
        tmp_path / "agent", smoke_module, state, {}, "decision", extension, merged=True
    )
    manifest = json.loads((agent_dir / MANIFEST).read_text())
    for name in ("perception", "decision"):
        folder = agent_dir / manifest["modules"][name]["merged_dir"]
        with torch.no_grad():
            merged = AutoModelForCausalLM.from_pretrained(folder)(**batch).logits
        runtime = _runtime_logits(agent_dir, name, smoke_cfg.seed, batch)
        torch.testing.assert_close(merged, runtime, rtol=1e-4, atol=1e-4)
