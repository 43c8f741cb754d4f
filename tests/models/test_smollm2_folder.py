"""SmolLM2-135M as a standard folder: one command converts it; model=hf on it is the same base."""

from __future__ import annotations

import dataclasses

import pytest

from fed_agent.config import load_config
from fed_agent.data import heldout_examples
from fed_agent.models.registry import load_base
from fed_agent.modules.batching import encode_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def folder():
    from fed_agent.cli import main

    assert main(["models", "convert", "smollm2-135m"]) == 0
    return load_base(load_config("default", ["model=smollm2-135m"]).model, 0).path


@pytest.mark.timeout(900)
def test_model_hf_on_the_converted_folder_is_the_same_model(folder, capsys):
    registry = load_base(load_config("default", ["model=smollm2-135m"]).model, 0)
    cfg = load_config("default", ["model=hf", f"model.path={folder}"]).model
    plain = load_base(dataclasses.replace(cfg, use_chat_template=False), 0)
    assert plain.fingerprint == registry.fingerprint
    assert not registry.chat_template  # its measured recipe reads the plain prompt
    examples = heldout_examples(load_config("smoke").data, 0)[:3]
    same = [encode_for(b, examples, 96)["input_ids"].tolist() for b in (registry, plain)]
    assert same[0] == same[1]
    templated = load_base(cfg, 0)  # model=hf's default: the tokenizer's chat template
    assert templated.chat_template
    text = templated.tokenizer.decode(encode_for(templated, examples, 96)["input_ids"][0])
    assert "<|im_start|>user" in text and "<|im_start|>assistant" in text


@pytest.mark.timeout(900)
def test_smollm2_federates_exports_loads_in_stock_peft_and_serves(folder, tmp_path):
    from benchmarks.hf_models_bench import check_architecture

    row = check_architecture("smollm2-135m", "llm", folder, tmp_path)
    assert row["trained"] and row["exported"] and row["served"] and row["stock_peft_loaded"]
    assert row["adapter_logit_effect"] > 1e-4
    assert str(folder) not in (tmp_path / "agent" / "manifest.json").read_text()
