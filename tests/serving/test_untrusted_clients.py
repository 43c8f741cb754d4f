"""`fed-agent serve` facing untrusted clients: abandoned requests, field validation, context
limits, slow bodies, the OpenAPI schema, the exported tokenizer, and a schemathesis run."""

from __future__ import annotations

import dataclasses
import http.client
import json
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fed_agent.data import heldout_examples
from tests.serving.helpers import running_server

PROMPT = "weather=snow light=night | pedestrian crosswalk near crossing\nAction:"
MAX_QUEUE = 4
LIMIT = 2048
BODY_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def port(smoke_agent_dir):
    options = ["--max-queue", str(MAX_QUEUE), "--max-tokens-limit", str(LIMIT)]
    options += ["--body-timeout", str(BODY_TIMEOUT_S)]
    with running_server(smoke_agent_dir, *options) as port:
        yield port


def _get(port: int, path: str, method: str = "GET") -> tuple[int, bytes, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request(method, path)
    reply = conn.getresponse()
    data = reply.read()
    conn.close()
    return reply.status, data, {k.lower(): v for k, v in reply.getheaders()}


def _queue(port: int) -> dict:
    return json.loads(_get(port, "/health")[1])["queue"]


def _post(port: int, path: str, body) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.request("POST", path, raw, {"Content-Type": "application/json"})
    reply = conn.getresponse()
    data = reply.read()
    conn.close()
    return reply.status, json.loads(data) if data else {}


def _open(port: int, path: str, body: dict) -> socket.socket:
    """A request sent in full whose reply is never read (close the socket to drop it)."""
    raw = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    sock.sendall(head.encode() + b"Content-Length: %d\r\n\r\n" % len(raw) + raw)
    return sock


def _until_idle(port: int, within_s: float = 10.0) -> dict:
    deadline = time.monotonic() + within_s
    while (queue := _queue(port))["pending"] and time.monotonic() < deadline:
        time.sleep(0.05)
    return queue


def _text(reply: dict) -> str:
    choice = reply["choices"][0]
    return choice["message"]["content"] if "message" in choice else choice["text"]


def test_abandoned_requests_give_their_places_back_and_stop_decoding(port) -> None:
    before = _queue(port)["abandoned"]
    long = {"prompt": PROMPT, "max_tokens": LIMIT, "ignore_eos": True}  # ~5 s of decoding each
    socks = [_open(port, "/v1/completions", {**long, "stream": i % 2 == 1}) for i in range(4)]
    deadline = time.monotonic() + 30
    while _queue(port)["pending"] < MAX_QUEUE:  # all four admitted: one decoding, three waiting
        assert time.monotonic() < deadline, "the four requests were never admitted"
        time.sleep(0.02)
    for sock in socks:
        sock.close()
    queue = _until_idle(port)
    assert queue["pending"] == 0 and queue["abandoned"] == before + MAX_QUEUE
    start = time.perf_counter()
    status, reply = _post(port, "/v1/completions", {"prompt": "x", "max_tokens": 2})
    elapsed = time.perf_counter() - start
    assert status == 200 and reply["usage"]["completion_tokens"] >= 1
    # the worker dropped the 4 x 2048 tokens (tens of seconds): the next answer does not wait
    assert elapsed < 5.0, f"the next request waited {elapsed:.1f} s behind abandoned work"


def test_many_clients_that_disconnect_leak_no_place(port) -> None:
    rng = random.Random(7)
    plans = [(i % 3 == 0, rng.uniform(0.0, 0.3)) for i in range(40)]

    def client(stream: bool, after_s: float) -> None:
        body = {"prompt": PROMPT, "max_tokens": 300, "ignore_eos": True, "stream": stream}
        sock = _open(port, "/v1/chat/completions" if stream else "/v1/completions", body)
        time.sleep(after_s)
        sock.close()

    before = _queue(port)["abandoned"]
    threads = [threading.Thread(target=client, args=plan) for plan in plans]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    queue = _until_idle(port)
    assert queue["pending"] == 0 and queue["abandoned"] > before
    replies: list[int] = []

    def polite() -> None:
        replies.append(_post(port, "/v1/completions", {"prompt": "x", "max_tokens": 2})[0])

    threads = [threading.Thread(target=polite) for _ in range(MAX_QUEUE)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert replies == [200] * MAX_QUEUE  # every place is free again: no 503


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_max_completion_tokens_caps_the_answer_and_is_validated(port, path) -> None:
    def ask(**fields) -> tuple[int, dict]:
        if path == "/v1/completions":
            return _post(port, path, {"prompt": PROMPT, "ignore_eos": True, **fields})
        messages = [{"role": "user", "content": PROMPT}]
        return _post(port, path, {"messages": messages, "ignore_eos": True, **fields})

    status, reply = ask(max_completion_tokens=3)
    assert status == 200 and reply["usage"]["completion_tokens"] == 3
    assert reply["choices"][0]["finish_reason"] == "length"
    assert ask(max_tokens=4, max_completion_tokens=4)[1]["usage"]["completion_tokens"] == 4
    status, reply = ask(max_completion_tokens=-1)
    assert status == 400 and reply["error"]["param"] == "max_completion_tokens"
    assert "greater than or equal to 1" in reply["error"]["message"]
    status, reply = ask(max_completion_tokens=LIMIT + 1)
    assert status == 400 and reply["error"]["param"] == "max_completion_tokens"
    assert f"max_completion_tokens must be <= {LIMIT}, got {LIMIT + 1}" in reply["error"]["message"]
    status, reply = ask(max_tokens=2, max_completion_tokens=3)
    assert status == 400 and "differ: give one" in reply["error"]["message"]


@pytest.mark.parametrize(
    ("field", "raw", "message"),
    [
        ("temperature", b"NaN", "temperature: Input should be a finite number"),
        ("temperature", b"Infinity", "temperature: Input should be a finite number"),
        ("temperature", b"-5", "temperature: Input should be greater than or equal to 0"),
        ("temperature", b'"hot"', "temperature: Input should be a valid number"),
        ("top_p", b"7", "top_p: Input should be less than or equal to 1"),
        ("stop", b'["\\n"]', "stop: stop sequences are not supported"),
        ("logprobs", b"true", "logprobs: log-probabilities are not returned"),
        ("echo", b"0", "echo: echo is not supported"),
        ("presence_penalty", b"0.5", "presence_penalty: penalties are not supported"),
        ("logit_bias", b'{"5": 10}', "logit_bias: logit_bias is not supported"),
        ("tools", b'[{"type": "function"}]', "tools: tools are not supported"),
        ("response_format", b'{"type": "json_object"}', "only the text response format"),
        ("best_of", b"3", "best_of: decoding is greedy"),
    ],
)
def test_sampling_fields_are_validated_and_unsupported_ones_refused(
    port, field, raw, message
) -> None:
    body = b'{"prompt": "x", "max_tokens": 1, "' + field.encode() + b'": ' + raw + b"}"
    status, reply = _post(port, "/v1/completions", body)
    assert status == 400, reply
    assert message in reply["error"]["message"] and reply["error"]["param"] == field


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "modalities",
            ["text", "audio"],
            'modalities: only text is answered: modalities must be ["text"]',
        ),
        ("audio", {"voice": "alloy", "format": "wav"}, "audio: audio answers are not supported"),
        ("web_search_options", {}, "web_search_options: web search is not supported"),
    ],
)
def test_chat_fields_asking_for_more_than_text_are_refused(port, field, value, message) -> None:
    body = {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 1, field: value}
    status, reply = _post(port, "/v1/chat/completions", body)
    assert status == 400 and reply["error"]["param"] == field
    assert reply["error"]["message"].startswith(message)
    body[field] = ["text"] if field == "modalities" else None  # the neutral value
    assert _post(port, "/v1/chat/completions", body)[0] == 200


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_stream_options_go_with_a_stream_only(port, path) -> None:
    body = {"prompt": PROMPT, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 2}
    for stream in (False, None):
        options = {"stream": stream, "stream_options": {"include_usage": True}}
        status, reply = _post(port, path, {**body, **options})
        assert status == 400 and reply["error"]["param"] == "stream_options"
        assert reply["error"]["message"] == 'stream_options: only allowed with "stream": true'
    assert _post(port, path, {**body, "stream": False, "stream_options": None})[0] == 200


def test_neutral_sampling_values_give_the_greedy_answer(port) -> None:
    plain = _post(port, "/v1/completions", {"prompt": PROMPT, "max_tokens": 6})[1]
    neutral = {"temperature": 0.7, "top_p": 0.5, "seed": 4, "stop": None, "logprobs": False}
    neutral |= {"n": 1, "presence_penalty": 0, "best_of": 1, "response_format": {"type": "text"}}
    status, reply = _post(port, "/v1/completions", {"prompt": PROMPT, "max_tokens": 6, **neutral})
    assert status == 200 and _text(reply) == _text(plain) and _text(plain).strip()


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/v1/completions", {"prompt": ""}, "prompt: the prompt is empty"),
        ("/v1/completions", {"prompt": [""]}, "prompt: the prompt is empty"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": ""}]}, "no text"),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}]},
            "no text",
        ),
        ("/v1/chat/completions", {"messages": [{"role": "user"}]}, "no text"),
    ],
)
def test_empty_text_is_a_400_on_both_endpoints(port, path, body, message) -> None:
    status, reply = _post(port, path, body)
    assert status == 400 and message in reply["error"]["message"]


def test_a_prompt_over_the_context_is_refused_never_cut(port, smoke_module) -> None:
    tokenizer = smoke_module.base.tokenizer
    window = smoke_module.cfg.max_seq_len - 2  # BOS and the first answer token's place

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False))

    words = 1
    while count("crossing " * (words + 1)) <= window:
        words += 1
    fits, over = "crossing " * words, "crossing " * (words + 1)
    assert count(fits) <= window < count(over)
    status, reply = _post(port, "/v1/completions", {"prompt": fits, "max_tokens": 1})
    assert status == 200 and reply["usage"]["prompt_tokens"] == count(fits)
    status, reply = _post(port, "/v1/completions", {"prompt": over, "max_tokens": 1})
    assert status == 400 and reply["error"]["code"] == "context_length_exceeded"
    assert f"has {count(over)} tokens, above the {window}" in reply["error"]["message"]


def test_huge_prompts_are_refused_without_stalling_the_server(port) -> None:
    huge = {"prompt": "scene " * 166_667, "max_tokens": 1}  # 1,000,002 characters (< 1 MiB)
    latencies: list[float] = []
    done = threading.Event()

    def probe() -> None:
        while not done.is_set():
            start = time.perf_counter()
            _get(port, "/health")
            latencies.append(time.perf_counter() - start)
            time.sleep(0.01)

    replies: list[tuple[int, dict]] = []
    senders = [threading.Thread(target=lambda: replies.append(_post(port, "/v1/completions", huge)))
               for _ in range(4)]  # fmt: skip
    prober = threading.Thread(target=probe)
    prober.start()
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(120)
    done.set()
    prober.join(30)
    assert [status for status, _ in replies] == [400] * 4
    assert all(r["error"]["code"] == "context_length_exceeded" for _, r in replies)
    assert "1000002 characters" in replies[0][1]["error"]["message"]
    assert latencies and max(latencies) < 1.0, f"/health waited {max(latencies):.2f} s"


def test_a_chat_holds_at_most_2048_messages_and_2048_content_parts(port) -> None:
    """A 1 MiB body holds up to ~40,000 of either, whose validation alone would hold up the
    event loop for a fraction of a second each: they are counted before they are validated."""
    user = {"role": "user", "content": PROMPT}
    history = [{"role": "assistant", "content": "x"}] * 2047
    assert _post(port, "/v1/chat/completions", {"messages": [*history, user]})[0] == 200
    status, reply = _post(port, "/v1/chat/completions", {"messages": [*history, user, user]})
    assert status == 400 and reply["error"]["param"] == "messages"
    assert "at most 2048 items after validation, not 2049" in reply["error"]["message"]
    parts = [{"type": "text", "text": ""}] * 30_000 + [{"type": "text", "text": PROMPT}]
    messages = [*history[:10], {"role": "user", "content": parts}]
    status, reply = _post(port, "/v1/chat/completions", {"messages": messages})
    assert status == 400 and reply["error"]["param"] == "messages"
    message = "messages: 30001 content parts in all: at most 2048 are read"
    assert reply["error"]["message"] == message


@pytest.mark.parametrize("trickle", [False, True])
def test_a_slow_or_short_body_times_out_with_408(port, trickle) -> None:
    sock = socket.create_connection(("127.0.0.1", port), timeout=BODY_TIMEOUT_S + 10)
    head = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    sock.sendall(head + b"Content-Length: 100\r\n\r\n" + b'{"prompt"')
    start = time.perf_counter()
    if trickle:  # one byte every 0.3 s: never idle long, never done in time
        sock.settimeout(0.3)
        received = b""
        while not received:
            try:
                sock.sendall(b" ")
                received = sock.recv(4096)
            except TimeoutError:
                continue
    else:
        received = sock.recv(4096)
    elapsed = time.perf_counter() - start
    sock.settimeout(10)
    while chunk := sock.recv(4096):  # the server closes the connection after its answer
        received += chunk
    sock.close()
    head_line, _, rest = received.partition(b"\r\n")
    assert head_line == b"HTTP/1.1 408 Request Timeout"
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert f"did not arrive in full within {BODY_TIMEOUT_S:g} s" in body["error"]["message"]
    assert BODY_TIMEOUT_S - 0.1 <= elapsed < BODY_TIMEOUT_S + 5


def test_the_openapi_schema_lists_every_status_and_the_event_stream(port) -> None:
    spec = json.loads(_get(port, "/openapi.json")[1])
    for path in ("/v1/completions", "/v1/chat/completions"):
        responses = spec["paths"][path]["post"]["responses"]
        assert set(responses) == {"200", "400", "404", "408", "413", "415", "500", "503"}
        assert set(responses["200"]["content"]) == {"application/json", "text/event-stream"}
        assert "Retry-After" in responses["503"]["headers"]
        assert "Accept-Encoding" in responses["415"]["headers"]
        request = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        name = request["schema"]["$ref"].rsplit("/", 1)[1]
        field = spec["components"]["schemas"][name]["properties"]["max_completion_tokens"]
        assert {"type": "integer", "minimum": 1, "maximum": LIMIT} in field["anyOf"]
    assert "422" not in json.dumps(spec["paths"])
    ids = {f"{method} {path}": op["operationId"] for path, ops in spec["paths"].items()
           for method, op in ops.items()}  # fmt: skip
    assert len(set(ids.values())) == len(ids) == 8
    assert ids["get /health"] == "health_health_get" and ids["head /health"] == "health_health_head"
    status, body, headers = _get(port, "/v1/completions")
    assert status == 405 and headers["allow"] == "POST"
    assert json.loads(body)["error"]["message"] == "GET /v1/completions: Method Not Allowed"
    status, _, headers = _get(port, "/health", "DELETE")
    assert status == 405 and set(headers["allow"].split(", ")) == {"GET", "HEAD"}


def test_stock_transformers_on_the_export_reads_and_answers_as_the_server(
    port, smoke_agent_dir, smoke_cfg, smoke_module
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    manifest = json.loads((smoke_agent_dir / "manifest.json").read_text())
    base_dir = smoke_agent_dir / manifest["base"]["folder"]
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    model = PeftModel.from_pretrained(base, smoke_agent_dir / manifest["adapter"]["peft_dir"])
    model.eval()
    ours = smoke_module.base.tokenizer
    examples = heldout_examples(dataclasses.replace(smoke_cfg.data, eval_samples=8), 5, False)
    texts = []
    for example in examples:
        ids = tokenizer(example.prompt, return_tensors="pt").input_ids
        # the server's input: BOS, then the prompt (fed_agent.modules.batching.encode_batch)
        expected = [ours.bos_token_id, *ours.encode(example.prompt, add_special_tokens=False)]
        assert ids[0].tolist() == expected
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6,
                                 do_sample=False, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
        new = out[0, ids.shape[1] :].tolist()
        new = new[: new.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in new else new
        status, reply = _post(port, "/v1/completions", {"prompt": example.prompt, "max_tokens": 6})
        assert status == 200 and reply["usage"]["completion_tokens"] == len(new)
        assert _text(reply) == tokenizer.decode(new, skip_special_tokens=True)
        texts.append(_text(reply))
    assert any(t.strip() for t in texts)


def test_a_merged_export_tokenizer_adds_bos_too(tmp_path, smoke_module) -> None:
    from transformers import AutoTokenizer

    from fed_agent.packaging.export import export_agent

    agent = export_agent(tmp_path / "agent", smoke_module, smoke_module.initial_state, {}, True)
    tokenizer = AutoTokenizer.from_pretrained(agent / "merged")
    ours = smoke_module.base.tokenizer
    assert tokenizer(PROMPT).input_ids == [
        ours.bos_token_id,
        *ours.encode(PROMPT, add_special_tokens=False),
    ]


@pytest.mark.slow
def test_schemathesis_finds_no_failure_against_the_real_server(smoke_agent_dir) -> None:
    """Every check but ``positive_data_acceptance``: the schema cannot say that a chat needs a
    user message with text, nor that a prompt must fit the context window in tokens; such
    schema-valid requests are answered 400 with a message saying why."""
    cli = Path(sys.executable).parent / "st"
    options = ["--max-tokens-limit", "8", "--max-tokens", "4", "--max-queue", "4"]
    with running_server(smoke_agent_dir, *options) as port:
        command = [str(cli), "run", f"http://127.0.0.1:{port}/openapi.json", "--checks", "all"]
        command += ["--exclude-checks", "positive_data_acceptance", "--max-examples", "60"]
        command += ["--seed", "1", "--request-timeout", "30", "--no-color"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=540)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "8 selected / 8 total" in output and "failures" not in output.lower()
