"""A ``model=hf`` VLM's prompt holds its image as the model's own processor lays it out.

For tiny LLaVA, Idefics3 and Qwen2-VL folders (``tiny_hf.py``, chat templates written like the
released models'), the ``input_ids`` FedAgent builds for an image prompt must equal what the
stock processor gives for the same text and image: through ``apply_chat_template`` (the
default) and for the plain prompt. Qwen2-VL's processor needs torchvision for its video part
here; the test builds the stock ``Qwen2VLProcessor`` class without it.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

import pytest
import torch
import transformers as T

from fed_agent.config import load_config, to_yaml
from fed_agent.config.schema import DataConfig, ModelConfig
from fed_agent.data.partition import heldout_examples
from fed_agent.data.writing import array_image
from fed_agent.models.base import ModelLoadError
from fed_agent.models.hf import load_hf
from fed_agent.models.registry import load_base
from fed_agent.modules.adapter import agent_module
from fed_agent.modules.batching import encode_answers
from fed_agent.packaging.export import export_agent
from fed_agent.runtime import AgentRuntime
from tests.models.tiny_hf import BUILDERS

VLMS = ("llava", "idefics3", "idefics3-split", "qwen2-vl")
MARKERS = {
    "llava": "USER: " + "<image>" * 16 + "\n",
    "idefics3": "User:<fake_token_around_image><global-img>"
    + "<image>" * 4
    + "<fake_token_around_image>",
    "idefics3-split": "User:<fake_token_around_image><row_1_col_1><image>"
    "<fake_token_around_image><row_1_col_2><image>\n"
    "<fake_token_around_image><row_2_col_1><image><fake_token_around_image><row_2_col_2><image>"
    "\n\n<fake_token_around_image><global-img><image><fake_token_around_image>",
    "qwen2-vl": "user\n<|vision_start|>" + "<|image_pad|>" * 4 + "<|vision_end|>",
}
"""What each architecture's prompt must hold around its image (written out by hand from the
released models' processors and templates, so that a wrong stock reference is caught too)."""


class _ImageOnlyQwen2VLProcessor(T.Qwen2VLProcessor):
    """The stock Qwen2-VL processor without its video processor (which needs torchvision)."""

    def check_argument_for_proper_class(self, argument_name, argument):
        if argument is None and argument_name == "video_processor":
            return None
        return super().check_argument_for_proper_class(argument_name, argument)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf_vlm")
    return {name: BUILDERS[name][1](root / name) for name in VLMS}


def _stock_processor(name: str, folder: Path):
    if name != "qwen2-vl":
        return T.AutoProcessor.from_pretrained(folder)
    tokenizer = T.AutoTokenizer.from_pretrained(folder)
    return _ImageOnlyQwen2VLProcessor(
        image_processor=T.AutoImageProcessor.from_pretrained(folder),
        tokenizer=tokenizer,
        video_processor=None,
        chat_template=tokenizer.chat_template,
    )


def _example():
    return heldout_examples(DataConfig(eval_samples=2), 0, with_images=True)[0]


def _our_prompt(base, example) -> dict[str, torch.Tensor]:
    """The prompt as training, generation and serving build it: an empty answer leaves its
    EOS last, which is dropped (``fed_agent.modules.generation._prompt_batch``)."""
    batch = encode_answers(base, [example], 256, [""])
    batch.pop("labels")
    batch["input_ids"] = batch["input_ids"][:, :-1]
    batch["attention_mask"] = batch["attention_mask"][:, :-1]
    return batch


@pytest.mark.parametrize("name", VLMS)
def test_chat_prompt_ids_equal_the_stock_processor(folders, name):
    base = load_base(ModelConfig(name="hf", path=str(folders[name])), 0)
    assert base.chat_template
    example = _example()
    ours = _our_prompt(base, example)
    processor = _stock_processor(name, folders[name])
    turn = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": example.prompt}]}
    ]
    text = processor.apply_chat_template(turn, add_generation_prompt=True, tokenize=False)
    nested = name.startswith("idefics3")
    image = array_image(example.image)
    stock = processor(text=[text], images=[[image]] if nested else [image], return_tensors="pt")
    assert ours["input_ids"].tolist() == stock["input_ids"].tolist()
    decoded = base.tokenizer.decode(ours["input_ids"][0])
    assert MARKERS[name] in decoded
    # the model also reads the stock processor's image inputs (pixels, grid, masks)
    inputs = base.image_inputs(ours)
    for key, value in stock.items():
        if key not in ("input_ids", "attention_mask"):
            assert torch.allclose(inputs[key].float(), value.float(), atol=1e-5), key


@pytest.mark.parametrize("name", VLMS)
def test_plain_prompt_ids_equal_the_stock_processor(folders, name):
    base = load_base(ModelConfig(name="hf", path=str(folders[name]), use_chat_template=False), 0)
    assert not base.chat_template
    example = _example()
    processor = _stock_processor(name, folders[name])
    image = array_image(example.image)
    text = base.tokenizer.bos_token + base.tokenizer.image_token + example.prompt
    nested = name.startswith("idefics3")
    stock = processor(text=[text], images=[[image]] if nested else [image])
    assert _our_prompt(base, example)["input_ids"][0].tolist() == stock["input_ids"][0]
    lengths = {"llava": 16, "idefics3": 7, "idefics3-split": 19, "qwen2-vl": 4}
    assert len(base.image_ids) == lengths[name]


def test_a_long_prompt_is_cut_before_the_image_never_through_it(folders):
    base = load_base(ModelConfig(name="hf", path=str(folders["idefics3"])), 0)
    example = _example()
    long = dataclasses.replace(example, prompt=example.prompt * 20)
    ids = encode_answers(base, [long], 48)["input_ids"][0].tolist()
    full = encode_answers(base, [long], 4096)["input_ids"][0].tolist()
    assert len(full) > 48 >= len(ids) and ids[-1] == base.tokenizer.eos_token_id
    image = ids.index(base.image_ids[0])
    assert ids[: image + len(base.image_ids)] == full[: image + len(base.image_ids)]
    assert ids[image : image + len(base.image_ids)] == list(base.image_ids)


def test_a_processor_that_cannot_be_built_is_said_and_writes_the_image_tokens(folders, caplog):
    with caplog.at_level(logging.WARNING, logger="fed_agent.models.hf"):
        base = load_hf(ModelConfig(name="hf", path=str(folders["qwen2-vl"])), 0)
    assert "its processor cannot be built here" in caplog.text
    assert base.image_prompt == ()
    pad = base.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert base.image_ids == (pad,) * 4


def test_a_chat_template_that_places_no_image_is_refused_in_one_line(folders, tmp_path):
    folder = tmp_path / "llava-text-template"
    shutil.copytree(folders["llava"], folder)
    (folder / "chat_template.jinja").write_text(
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    )
    with pytest.raises(ModelLoadError, match="writes 0 image placeholders") as err:
        load_base(ModelConfig(name="hf", path=str(folder)), 0)
    assert "\n" not in str(err.value)
    plain = load_base(ModelConfig(name="hf", path=str(folder), use_chat_template=False), 0)
    assert len(plain.image_ids) == 16


def test_a_chat_template_that_fails_on_an_image_part_is_refused_in_one_line(folders, tmp_path):
    folder = tmp_path / "llava-failing-template"
    shutil.copytree(folders["llava"], folder)
    (folder / "chat_template.jinja").write_text(
        "{% for m in messages %}{% if m['content'] is not string %}"
        "{{ raise_exception('this template reads text only') }}{% endif %}"
        "{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    )
    with pytest.raises(ModelLoadError, match="chat template fails on an image part") as err:
        load_base(ModelConfig(name="hf", path=str(folder)), 0)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["idefics3", "qwen2-vl"])
def test_the_exported_agent_reads_the_prompt_as_trained_and_as_stock_tools_do(
    folders, name, tmp_path
):
    """Export, then ``fed-agent serve``'s runtime and the stock processor on the exported base
    folder build the same prompt ids as training did."""
    cfg = load_config("smoke", ["model=hf", f"model.path={folders[name]}", "model.lora_targets=[]"])
    module = agent_module(cfg.model, cfg.seed)
    agent = export_agent(
        tmp_path / "agent", module, module.adapter_state(), {"config_yaml": to_yaml(cfg)}
    )
    served = AgentRuntime.load(agent, 0).modules[-1].module
    example = _example()
    trained = _our_prompt(module.base, example)["input_ids"].tolist()
    assert _our_prompt(served.base, example)["input_ids"].tolist() == trained
    (copied,) = (agent / "base").iterdir()
    processor = _stock_processor(name, copied)
    turn = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": example.prompt}]}
    ]
    text = processor.apply_chat_template(turn, add_generation_prompt=True, tokenize=False)
    image = array_image(example.image)
    stock = processor(text=[text], images=[[image]] if name.startswith("idefics3") else [image])
    assert stock["input_ids"] == trained


def test_a_merged_vlm_export_loads_through_model_hf_with_the_same_prompt(folders, tmp_path):
    """The merged model carries the processor: ``model=hf`` on it builds the same prompts."""
    cfg = load_config(
        "smoke", ["model=hf", f"model.path={folders['idefics3-split']}", "model.lora_targets=[]"]
    )
    module = agent_module(cfg.model, cfg.seed)
    agent = export_agent(
        tmp_path / "agent",
        module,
        module.adapter_state(),
        {"config_yaml": to_yaml(cfg)},
        merged=True,
    )
    merged = load_base(ModelConfig(name="hf", path=str(agent / "merged")), 0)
    example = _example()
    ours = _our_prompt(module.base, example)
    assert _our_prompt(merged, example)["input_ids"].tolist() == ours["input_ids"].tolist()
    with torch.no_grad():
        expected = module.model(**ours).logits
        torch.testing.assert_close(merged.model(**ours).logits, expected, rtol=1e-4, atol=1e-4)
