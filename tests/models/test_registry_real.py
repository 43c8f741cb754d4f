"""Registry entries: the offline failure modes, the hf entry, fingerprints, real bases (slow)."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
import torch

from fed_agent.config import load_config
from fed_agent.config.schema import MODEL_NAMES
from fed_agent.data import es_examples, heldout_examples
from fed_agent.evaluation.quality import evaluate_quality
from fed_agent.models.base import BaseModel, weights_fingerprint
from fed_agent.models.registry import BUILDERS, ModelLoadError, load_base
from fed_agent.modules.adapter import AgentModule
from fed_agent.modules.training import train_locally


def test_every_model_yaml_names_a_registry_entry(tmp_path) -> None:
    from fed_agent.config.load import CONFIG_DIR

    (tmp_path / "config.json").write_text("{}")  # model=hf needs a loadable model.path
    names = {
        load_config(
            "default", [f"model={p.stem}", *([f"model.path={tmp_path}"] * (p.stem == "hf"))]
        ).model.name
        for p in (CONFIG_DIR / "model").glob("*.yaml")
    }
    assert names == set(BUILDERS) == set(MODEL_NAMES)


def test_unknown_model_name_lists_the_choices(smoke_cfg) -> None:
    # refused where the config is built, so no base loader ever sees it
    with pytest.raises(ValueError, match="model.name: unknown value 'gpt-17'") as err:
        dataclasses.replace(smoke_cfg.model, name="gpt-17")
    assert "smollm2-135m" in str(err.value) and "minilm-perception" in str(err.value)
    assert "'hf'" in str(err.value)


def test_hf_offline_unknown_id_fails_at_once_and_says_what_to_do(smoke_cfg, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = dataclasses.replace(smoke_cfg.model, name="hf", path="fedagent-test/not-downloaded")
    start = time.perf_counter()
    with pytest.raises(ModelLoadError, match="offline") as err:
        load_base(cfg, 0)
    assert time.perf_counter() - start < 10  # not the ~46 s of hub retries
    assert "local directory" in str(err.value)


def test_hf_needs_a_path_and_a_real_directory(smoke_cfg, tmp_path) -> None:
    with pytest.raises(ModelLoadError, match="model.path must name a Hugging Face model id"):
        load_base(dataclasses.replace(smoke_cfg.model, name="hf"), 0)
    with pytest.raises(ModelLoadError, match="must be a directory holding a Hugging Face model"):
        load_base(dataclasses.replace(smoke_cfg.model, name="hf", path=str(tmp_path / "no")), 0)


def test_hf_local_directory_loads_the_same_weights(smoke_cfg, smoke_module) -> None:
    tiny = smoke_module.base
    cfg = dataclasses.replace(smoke_cfg.model, name="hf", path=str(tiny.path))
    base = load_base(cfg, smoke_cfg.seed)
    assert base.task_kind == "generate"
    assert base.fingerprint == tiny.fingerprint
    assert not any(p.requires_grad for p in base.model.parameters())


def test_large_models_are_fingerprinted_on_a_sample() -> None:
    big = torch.nn.Linear(2100, 2100, bias=False)  # 4.41 M elements: above the full-hash limit
    small = torch.nn.Linear(64, 64, bias=False)
    before_big, before_small = weights_fingerprint(big), weights_fingerprint(small)
    with torch.no_grad():
        big.weight.view(-1)[0] += 1.0  # index 0 is always in the strided sample
        small.weight.view(-1)[17] += 1.0
    assert weights_fingerprint(big) != before_big
    assert weights_fingerprint(small) != before_small
    sampled = weights_fingerprint(big)
    with torch.no_grad():
        big.weight.view(-1)[1] += 1.0  # between two samples: the documented blind spot
    assert weights_fingerprint(big) == sampled


def test_base_refuses_an_unknown_task_kind(smoke_module) -> None:
    base = smoke_module.base
    with pytest.raises(ValueError, match="valid choices"):
        dataclasses.replace(base, task_kind="regress")


def _tiny_classifier_base() -> BaseModel:
    """A 2-layer random BERT + head behind the MiniLM package's tokenizer (classify kind)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from fed_agent.models.real_models import MINILM_PACKAGE, PerceptionClassifier, _package_dir

    tokenizer = AutoTokenizer.from_pretrained(_package_dir(MINILM_PACKAGE, "x") / "model")
    torch.manual_seed(0)
    encoder = BertModel(
        BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
        )
    )
    model = PerceptionClassifier(encoder, 3).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return BaseModel(
        "tiny-classifier",
        model,
        tokenizer,
        0,
        weights_fingerprint(model),
        None,
        task_kind="classify",
        trainable_modules=("head",),
    )


def test_classifier_kind_trains_on_decisions_and_its_head_travels(smoke_cfg) -> None:
    cfg = dataclasses.replace(smoke_cfg.model, lora_targets=["query", "value"])
    module = AgentModule(_tiny_classifier_base(), cfg, seed=0)
    state = module.initial_state
    assert any("head" in k for k in state) and any("lora_A" in k for k in state)
    examples = es_examples(smoke_cfg.data, 0, 0)
    heldout = heldout_examples(smoke_cfg.data, 0)
    before = evaluate_quality(module, heldout, 16)
    assert before.num_examples == sum(e.task == "decide" for e in heldout)  # describe skipped
    report = train_locally(module, examples, smoke_cfg.training, 3, seed=0)
    assert report.steps == 3 and np.isfinite(report.mean_loss)
    after = module.adapter_state()
    head = next(k for k in state if "head" in k and k.endswith("weight"))
    assert not np.allclose(after[head], state[head])  # the head is trained, not frozen
    module.load_adapter(state)
    assert evaluate_quality(module, heldout, 16) == before


@pytest.mark.slow
def test_smollm2_loads_offline_with_single_token_actions(smoke_cfg) -> None:
    cfg = load_config("smoke", ["model=smollm2-135m"]).model
    base = load_base(cfg, 0)
    assert 134_000_000 < base.num_parameters < 135_000_000
    ids = [base.tokenizer.encode(a, add_special_tokens=False) for a in (" stop", " slow", " go")]
    assert all(len(i) == 1 for i in ids)
    assert base.fingerprint == weights_fingerprint(base.model)
    assert (base.path / "model.safetensors").is_file()  # the cached conversion


@pytest.mark.slow
def test_minilm_perception_learns_decisions_quickly() -> None:
    # the smoke experiment sets q/v LoRA targets for the tiny LLM; BERT names them query/value
    overrides = ["model=minilm-perception", "model.lora_targets=[query,value]"]
    cfg = load_config("smoke", [*overrides, "data.samples_per_es=96"])
    base = load_base(cfg.model, 0)
    assert base.task_kind == "classify" and 22_000_000 < base.num_parameters < 23_000_000
    module = AgentModule(base, cfg.model, 0)
    heldout = heldout_examples(cfg.data, 0)
    before = evaluate_quality(module, heldout, 32).decision_accuracy
    train_locally(module, es_examples(cfg.data, 0, 0), cfg.training, 30, seed=0)
    after = evaluate_quality(module, heldout, 32).decision_accuracy
    assert after > before and after > 0.45
