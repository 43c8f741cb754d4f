"""``model=hf`` on tiny random-weight models built here: Llama, Qwen2, LLaVA, Idefics3, Qwen2-VL.

Each architecture is saved as a standard folder, loaded through ``model=hf``, federated for a
round in process, exported, loaded by stock peft on a stock copy of the base (equal logits)
and served through the OpenAI application (a VLM with an ``image_url`` data URL).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

from benchmarks.hf_models_bench import check_architecture
from fed_agent.config.schema import DataConfig, ModelConfig
from fed_agent.data.partition import heldout_examples
from fed_agent.models.registry import load_base
from fed_agent.modules.adapter import AdapterError, AgentModule, default_lora_targets
from fed_agent.modules.batching import encode_for
from fed_agent.modules.generation import greedy_tokens
from tests.models.tiny_hf import BUILDERS


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {name: build(root / name) for name, (_, build) in BUILDERS.items()}


def _base(folders, name: str, **fields):
    return load_base(ModelConfig(name="hf", path=str(folders[name]), **fields), 0)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", list(BUILDERS))
def test_federate_export_stock_peft_and_serve(folders, name, tmp_path):
    kind = BUILDERS[name][0]
    row = check_architecture(name, kind, folders[name], tmp_path)
    assert row["kind"] == kind and row["trained"] and row["exported"] and row["served"]
    assert row["stock_peft_loaded"] and row["max_logit_diff"] < 1e-4
    # the exported adapter matters: the stock base without it answers otherwise
    assert row["adapter_logit_effect"] > 1e-4
    manifest = (tmp_path / "agent" / "manifest.json").read_text()
    assert str(folders[name]) not in manifest and str(tmp_path) not in manifest


@pytest.mark.parametrize(
    ("name", "image_tokens", "scope", "projector", "tower"),
    [
        ("llava", 16, "language_model", "multi_modal_projector", "vision_tower"),
        ("idefics3", 4, "text_model", "connector", "vision_model"),
        ("qwen2-vl", 4, "language_model", "visual.merger", "visual"),
    ],
)
def test_vlm_kind_image_tokens_and_trainable_parts(
    folders, name, image_tokens, scope, projector, tower
):
    base = _base(folders, name)
    assert isinstance(
        base.model, AutoModelForImageTextToText._model_mapping[type(base.model.config)]
    )
    assert (base.image_tokens, base.lora_scope, base.trainable_modules) == (
        image_tokens,
        scope,
        (projector,),
    )
    frozen = _base(folders, name, train_projector=False)
    assert frozen.trainable_modules == ()
    whole = _base(folders, name, train_vision_tower=True)
    expected = (tower,) if projector.startswith(tower) else (tower, projector)
    assert whole.trainable_modules == expected
    # model.train_lm_head adds the LM's output head, found by get_output_embeddings
    assert _base(folders, name, train_lm_head=True).trainable_modules == (projector, "lm_head")


def test_lora_stays_on_the_language_model_and_projector_travels(folders):
    base = _base(folders, "idefics3")
    module = AgentModule(base, ModelConfig(name="hf", path=str(folders["idefics3"])), 0)
    keys = module.adapter_keys
    assert any("connector" in k for k in keys)
    lora = [k for k in keys if "lora_" in k]
    assert lora and all("text_model" in k for k in lora)
    assert {k.split(".")[-3] for k in lora} == {"q_proj", "v_proj"}  # peft's llama defaults


def test_causal_lm_kind_and_peft_default_targets(folders):
    base = _base(folders, "qwen2")
    assert isinstance(base.model, AutoModelForCausalLM._model_mapping[type(base.model.config)])
    assert not base.is_vision and default_lora_targets(base.model) == ["q_proj", "v_proj"]
    with pytest.raises(AdapterError, match="model.lora_targets is empty"):
        default_lora_targets(torch.nn.Linear(2, 2))


def test_chat_template_wraps_prompts_when_present_and_asked(folders):
    example = heldout_examples(DataConfig(eval_samples=2), 0)[0]
    templated = _base(folders, "qwen2")
    plain = _base(folders, "qwen2", use_chat_template=False)
    assert templated.chat_template and not plain.chat_template
    assert not _base(folders, "llama").chat_template  # its tokenizer has no template
    decode = templated.tokenizer.decode
    wrapped = decode(encode_for(templated, [example], 128)["input_ids"][0])
    bare = decode(encode_for(plain, [example], 128)["input_ids"][0])
    assert wrapped.startswith("<|bos|>user: ") and "<|bos|>assistant:" in wrapped
    assert bare.startswith("<|bos|>") and "user: " not in bare


@pytest.mark.parametrize("name", ["qwen2-vl", "idefics3", "idefics3-split", "llava"])
def test_vlm_cached_decoding_matches_full_forwards(folders, name):
    """Greedy decoding with the cache equals full forwards on the whole prompt (chat template,
    image markers): Qwen2-VL's cached steps need their multimodal positions from the hook."""
    cfg = ModelConfig(name="hf", path=str(folders[name]), max_seq_len=96)
    module = AgentModule(load_base(cfg, 0), cfg, 0)
    assert module.base.chat_template
    example = heldout_examples(DataConfig(eval_samples=2), 0, with_images=True)[0]
    cached = [t for t, _ in greedy_tokens(module, example, 4, stop_at_eos=False)]
    batch = encode_for(module.base, [dataclasses.replace(example, answer="")], 96)
    ids, mask = batch["input_ids"][:, :-1], batch["attention_mask"][:, :-1]  # drop the EOS
    full = []
    with torch.no_grad():
        for _ in range(4):
            logits = module.model(
                input_ids=ids, attention_mask=mask, pixel_values=batch["pixel_values"]
            ).logits
            token = int(logits[0, -1].argmax())
            full.append(token)
            ids = torch.cat([ids, torch.tensor([[token]])], 1)
            mask = torch.cat([mask, torch.ones((1, 1), dtype=mask.dtype)], 1)
    assert cached == full
