"""Streaming an answer: the same text as the whole answer, and the load-test arithmetic."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import struct
import zlib

import numpy as np
import pytest

from fed_agent.data import heldout_examples
from fed_agent.evaluation.serving import Sample, level_row
from fed_agent.packaging.export import ModulePart, export_modules
from fed_agent.runtime import AgentRuntime


def test_a_streamed_chain_answer_is_the_whole_answer(tmp_path, smoke_cfg, smoke_module) -> None:
    rng = np.random.default_rng(3)
    small = {
        k: (v + rng.normal(0, 0.002, v.shape)).astype(np.float32)
        for k, v in smoke_module.initial_state.items()
    }
    parts = {
        "perception": ModulePart(smoke_module, smoke_module.initial_state),
        "decision": ModulePart(smoke_module, small, inputs=("perception",)),
    }
    runtime = AgentRuntime.load(export_modules(tmp_path / "agent", parts, {}), smoke_cfg.seed)
    examples = heldout_examples(dataclasses.replace(smoke_cfg.data, eval_samples=4), 0, False)
    texts = []
    for example in examples:
        whole = runtime.respond(example, 8).final
        steps = list(runtime.stream(example, 8))
        assert "".join(s.text for s in steps) == whole.text
        assert steps[-1].finish_reason in ("stop", "length")
        assert all(s.finish_reason is None for s in steps[:-1])
        texts.append(whole.text)
    assert any(t.strip() for t in texts)  # the answers are not all empty
    fixed = list(runtime.stream(examples[0], 5, stop_at_eos=False))
    assert sum(s.tokens for s in fixed) == 5 and fixed[-1].finish_reason == "length"


def test_level_rows_add_the_network_and_cap_the_closed_loop() -> None:
    samples = [Sample(True, 0.1 * (i + 1), 0.01, 4, request=i) for i in range(10)]
    samples.append(Sample(False, 0.05, float("nan"), 0, "HTTP 503: busy", request=10))
    edge = level_row("edge-agent", 2, samples, wall_s=2.0)
    assert edge["errors"] == 1 and edge["requests"] == 11
    assert edge["p50_ms"] == pytest.approx(550.0) and edge["ttft_p50_ms"] == pytest.approx(10.0)
    assert edge["throughput_rps"] == pytest.approx(5.0) and edge["tokens_per_s"] == 20.0
    cloud = level_row("cloud-only", 2, samples, 2.0, [0.5] * len(samples))
    assert cloud["p50_ms"] == pytest.approx(1050.0)
    # 2 users waiting 1.05 s on average: at most 1.9 requests/s, below the measured 5
    assert cloud["throughput_rps"] == pytest.approx(2 / 1.05)
    assert cloud["tokens_per_s"] == pytest.approx(4 * 2 / 1.05)


def test_an_image_travels_as_a_png_data_url_and_comes_back_as_trained(smoke_cfg) -> None:
    from fed_agent.evaluation.serving import _image_url
    from fed_agent.serving.engine import RequestError, decode_image

    size = smoke_cfg.data.image_size
    image = heldout_examples(dataclasses.replace(smoke_cfg.data, eval_samples=2), 0, True)[0].image
    back = decode_image(_image_url(image), size)
    assert back.shape == (3, size, size) and back.dtype == np.float32
    np.testing.assert_allclose(back, image, atol=1 / 127.5 + 1e-6)  # 8-bit PNG
    for bad in ("https://example.org/cat.png", "data:image/png;base64,not-base64!", "data:,x"):
        with pytest.raises(RequestError, match="image_url"):
            decode_image(bad, size)


def _png_declaring(width: int, height: int) -> str:
    """A data URL of a tiny PNG whose header declares ``width`` x ``height`` pixels."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("1", (8, 8)).save(buffer, "PNG")
    raw = bytearray(buffer.getvalue())
    header = b"IHDR" + struct.pack(">II", width, height) + raw[24:29]
    raw[12:29], raw[29:33] = header, struct.pack(">I", zlib.crc32(header))
    return "data:image/png;base64," + base64.b64encode(bytes(raw)).decode()


@pytest.mark.parametrize("side", [5000, 20000])
def test_an_image_too_large_is_refused_from_its_header(side) -> None:
    """A few hundred bytes can declare a 25- or 400-megapixel image: refused before decoding
    (PIL's own limit alone would raise its error, or decode gigabytes)."""
    from fed_agent.serving.engine import MAX_IMAGE_PIXELS, RequestError, decode_image

    assert side * side > MAX_IMAGE_PIXELS
    with pytest.raises(RequestError, match=f"above the {MAX_IMAGE_PIXELS} pixels read"):
        decode_image(_png_declaring(side, side), 32)
    fits = _png_declaring(64, 64)  # within the limit: read (and found truncated)
    with pytest.raises(RequestError, match="does not hold a readable image"):
        decode_image(fits, 32)


def test_a_chain_s_usage_counts_the_prompt_its_last_module_read(tmp_path, smoke_cfg, smoke_module):
    """The last module reads the request prefixed with the upstream answers; a prompt that
    fits alone but not with them is cut, and the usage counts what is left."""
    from starlette.testclient import TestClient

    from fed_agent.data.tasks import Example
    from fed_agent.serving.app import create_app
    from fed_agent.serving.config import ServingConfig
    from fed_agent.serving.engine import SERVED_TASK, AgentEngine

    parts = {
        "perception": ModulePart(smoke_module, smoke_module.initial_state),
        "decision": ModulePart(smoke_module, smoke_module.initial_state, inputs=("perception",)),
    }
    runtime = AgentRuntime.load(export_modules(tmp_path / "agent", parts, {}), smoke_cfg.seed)
    engine = AgentEngine(runtime, 2, smoke_cfg.data.image_size)
    client = TestClient(create_app(engine, ServingConfig(), "agent"))
    tokenizer = smoke_module.base.tokenizer
    window = smoke_module.cfg.max_seq_len - 2

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False))

    def read(prompt: str) -> int:
        upstream = runtime.respond(Example(SERVED_TASK, prompt, "", None), 4).answers
        return count(f"perception: {upstream['perception'].text.strip()}\n{prompt}")

    prompt = "weather=snow light=night | pedestrian crosswalk near crossing\nAction:"
    words = 1
    while count("crossing " * (words + 1)) <= window - 3:
        words += 1
    near = "crossing " * words  # fits alone, not with the perception line
    assert count(near) <= window - 3 and read(near) > window
    try:
        for text, expected in ((prompt, read(prompt)), (near, window)):
            assert expected != count(text)
            body = {"prompt": text, "max_tokens": 4}
            whole = client.post("/v1/completions", json=body).json()
            assert whole["usage"]["prompt_tokens"] == expected
            stream = {**body, "stream": True, "stream_options": {"include_usage": True}}
            events = client.post("/v1/completions", json=stream).text.split("\n\n")
            last = json.loads(events[-3].removeprefix("data: "))  # before "[DONE]" and ""
            assert last["usage"] == whole["usage"]
    finally:
        engine.close()
