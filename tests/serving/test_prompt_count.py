"""The served prompt count is what the model reads: with a chat template's own tokens."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from fed_agent.config.schema import ModelConfig
from fed_agent.data.tasks import Example
from fed_agent.models.registry import load_base
from fed_agent.modules.batching import encode_answers, prompt_tokens_read
from fed_agent.serving.engine import AgentEngine, RequestError
from tests.models.tiny_hf import BUILDERS

PROMPT = "a pedestrian is crossing ahead"


@pytest.fixture(scope="module")
def qwen2_folder(tmp_path_factory):
    return BUILDERS["qwen2"][1](tmp_path_factory.mktemp("hf") / "qwen2")


def _engine(base, max_seq_len: int) -> AgentEngine:
    module = SimpleNamespace(base=base, cfg=SimpleNamespace(max_seq_len=max_seq_len))
    runtime = SimpleNamespace(modules=[SimpleNamespace(name="agent", module=module)])
    return AgentEngine(runtime, max_queue=1, image_size=32)


def test_a_templated_prompt_counts_the_template_s_tokens(qwen2_folder) -> None:
    templated = load_base(ModelConfig(name="hf", path=str(qwen2_folder)), 0)
    plain = load_base(ModelConfig(name="hf", path=str(qwen2_folder), use_chat_template=False), 0)
    assert templated.chat_template and not plain.chat_template
    bare = len(plain.tokenizer.encode(PROMPT, add_special_tokens=False))
    assert prompt_tokens_read(plain, PROMPT) == bare
    read = prompt_tokens_read(templated, PROMPT)
    assert read > bare
    # what the generation batch holds before its answer slot (the template brings no BOS)
    batch = encode_answers(templated, [Example("serve", PROMPT, "", None)], 256, [""])
    assert read == int(batch["attention_mask"].sum()) - 1
    assert _engine(templated, 256).prompt_tokens(PROMPT) == read


def test_a_prompt_that_fits_only_without_the_template_is_refused(qwen2_folder) -> None:
    templated = load_base(ModelConfig(name="hf", path=str(qwen2_folder)), 0)
    read = prompt_tokens_read(templated, PROMPT)
    assert _engine(templated, read + 2).prompt_tokens(PROMPT) == read
    with pytest.raises(RequestError, match=f"has {read} tokens, above the {read - 1}"):
        _engine(templated, read + 1).prompt_tokens(PROMPT)
