"""`fed-agent serve` against what real OpenAI clients and fuzzers send: text that is not valid
Unicode, bodies that do not parse or are compressed, failures no handler foresaw, nullable
fields, content parts, model look-ups, paths and methods."""

from __future__ import annotations

import gzip
import http.client
import json

import pytest
from starlette.testclient import TestClient

from fed_agent.serving.app import create_app
from fed_agent.serving.config import ServingConfig
from tests.serving.helpers import running_server

PROMPT = "weather=snow light=night | pedestrian crosswalk near crossing\nAction:"
COMPLETIONS, CHAT = "/v1/completions", "/v1/chat/completions"


@pytest.fixture(scope="module")
def port(smoke_agent_dir):
    options = ["--max-queue", "2", "--max-tokens", "4", "--max-tokens-limit", "8"]
    with running_server(smoke_agent_dir, *options) as port:
        yield port


def _request(port: int, method: str, path: str, body=None) -> tuple[int, bytes, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    raw = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if raw is not None else {}
    conn.request(method, path, raw, headers)
    reply = conn.getresponse()
    data = reply.read()
    conn.close()
    return reply.status, data, {k.lower(): v for k, v in reply.getheaders()}


def _post(port: int, path: str, body) -> tuple[int, dict]:
    status, data, _ = _request(port, "POST", path, body)
    return status, json.loads(data)


@pytest.mark.parametrize(
    ("path", "raw", "where"),
    [
        (COMPLETIONS, b'{"prompt": "a\\ud800b", "max_tokens": 1}', "(U+D800) at character 1"),
        (
            CHAT,
            b'{"messages": [{"role": "user", "content": "ab\\udfff"}], "max_tokens": 1}',
            "(U+DFFF) at character 2",
        ),
    ],
)
def test_a_lone_surrogate_is_a_400_not_a_500(port, path, raw, where) -> None:
    status, reply = _post(port, path, raw)
    assert status == 400, reply
    assert reply["error"]["param"] == "prompt"
    assert f"not valid Unicode: a lone surrogate {where}" in reply["error"]["message"]
    pair = b'{"prompt": "a\\ud83d\\ude97b", "max_tokens": 1}'  # a valid pair is a character
    assert _post(port, COMPLETIONS, pair)[0] == 200


@pytest.mark.parametrize(
    ("raw", "cause"),
    [
        (b'{"prompt": "caf\xe9", "max_tokens": 1}', "'utf-8' codec can't decode byte 0xe9"),
        (b'{"prompt": "x", "a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "recursion depth"),
    ],
)
def test_a_body_that_does_not_parse_says_why(port, raw, cause) -> None:
    status, reply = _post(port, COMPLETIONS, raw)
    assert status == 400 and reply["error"]["type"] == "invalid_request_error"
    assert reply["error"]["message"].startswith("the body is not valid JSON (")
    assert cause in reply["error"]["message"]


def test_a_compressed_body_is_a_415_naming_its_coding(port) -> None:
    raw = json.dumps({"prompt": PROMPT, "max_tokens": 1}).encode()
    for coding, body in (("gzip", gzip.compress(raw)), ("GZIP", raw), ("br", raw)):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        headers = {"Content-Type": "application/json", "Content-Encoding": coding}
        conn.request("POST", COMPLETIONS, body, headers)
        reply = conn.getresponse()
        error = json.loads(reply.read())["error"]
        conn.close()
        assert reply.status == 415 and reply.getheader("accept-encoding") == "identity"
        assert error["message"] == (
            f"Content-Encoding '{coding.lower()}' is not supported: send the body uncompressed"
        )
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/json", "Content-Encoding": "identity"}
    conn.request("POST", COMPLETIONS, raw, headers)
    assert conn.getresponse().status == 200
    conn.close()


class _FailingEngine:
    """An engine whose tokenizer fails in a way nobody foresaw."""

    chain, is_vision, pending, max_queue, abandoned = ["agent"], False, 0, 1, 0

    def prepare(self, prompt: str, image: str | None):
        raise RuntimeError("the tokenizer broke\non two lines")


def test_an_unforeseen_failure_is_a_json_500_on_one_line() -> None:
    app = create_app(_FailingEngine(), ServingConfig(), "agent")
    client = TestClient(app, raise_server_exceptions=False)
    reply = client.post(COMPLETIONS, json={"prompt": "x"})
    assert reply.status_code == 500 and reply.headers["content-type"] == "application/json"
    assert reply.json() == {
        "error": {
            "message": "the server failed on this request: the tokenizer broke on two lines",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }


def test_null_fields_and_empty_neutral_values_are_the_defaults(port) -> None:
    """OpenAI's API takes null for every optional field, and clients send it (``"stream":
    null``, ``"n": null``); an empty ``stop`` list or ``logit_bias`` object asks for nothing."""
    plain = _post(port, COMPLETIONS, {"prompt": PROMPT, "max_tokens": 4})[1]
    nulls = {"stream": None, "n": None, "echo": None, "ignore_eos": None, "best_of": None}
    nulls |= {"stream_options": None, "temperature": None, "seed": None}
    empty = {"stop": [], "logit_bias": {}, "tools": [], "functions": []}
    for extra in (nulls, empty):
        status, reply = _post(port, COMPLETIONS, {"prompt": PROMPT, "max_tokens": 4, **extra})
        assert status == 200, reply
        assert reply["object"] == "text_completion"  # "stream": null is not a stream
        assert reply["choices"][0]["text"] == plain["choices"][0]["text"]
        assert reply["usage"] == plain["usage"]
    chat = {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 4, **nulls}
    status, reply = _post(port, CHAT, chat)
    assert status == 200 and reply["choices"][0]["message"]["content"] == _text(plain)
    for field, value in (("stop", ["\n"]), ("logit_bias", {"5": 1}), ("n", 2), ("echo", True)):
        status, reply = _post(port, COMPLETIONS, {"prompt": PROMPT, field: value})
        assert status == 400 and reply["error"]["param"] == field


def _text(reply: dict) -> str:
    choice = reply["choices"][0]
    return choice["message"]["content"] if "message" in choice else choice["text"]


@pytest.mark.parametrize(
    ("content", "param", "message"),
    [
        (5, "messages.0.content", "content must be a string, a list of content parts or null"),
        (
            [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}],
            "messages.0.content.0.type",
            "Input should be 'text', 'image_url' or 'refusal'",
        ),
        (
            [{"type": "text", "text": PROMPT}, {"type": "image_url"}],
            "messages.0.content.1",
            "a part of type 'image_url' needs its 'image_url' field",
        ),
        (
            [{"type": "text", "text": None}],
            "messages.0.content.0",
            "a part of type 'text' needs its 'text' field",
        ),
    ],
)
def test_a_bad_content_part_gets_a_400_naming_it(port, content, param, message) -> None:
    body = {"messages": [{"role": "user", "content": content}], "max_tokens": 1}
    status, reply = _post(port, CHAT, body)
    assert status == 400 and reply["error"]["param"] == param
    assert reply["error"]["message"] == f"{param}: {message}"


def test_earlier_turns_may_hold_any_openai_part(port) -> None:
    """An assistant turn's refusal part and a tool turn's text parts are valid history."""
    messages = [
        {"role": "developer", "content": [{"type": "text", "text": "Drive carefully."}]},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "I cannot."}]},
        {"role": "tool", "content": [{"type": "text", "text": "42"}], "tool_call_id": "1"},
        {"role": "user", "content": [{"type": "text", "text": PROMPT}]},
    ]
    status, reply = _post(port, CHAT, {"messages": messages, "max_tokens": 4})
    plain = _post(port, COMPLETIONS, {"prompt": PROMPT, "max_tokens": 4})[1]
    assert status == 200 and _text(reply) == _text(plain)
    assert reply["usage"]["prompt_tokens"] == plain["usage"]["prompt_tokens"]


def test_the_served_model_can_be_looked_up_and_others_are_not_found(port, smoke_agent_dir):
    name = smoke_agent_dir.name
    status, data, _ = _request(port, "GET", f"/v1/models/{name}")
    assert status == 200
    assert json.loads(data) == {"id": name, "object": "model", "created": 0, "owned_by": "fedagent"}
    for path in ("/v1/models/gpt-4o", "/v1/models/org/gpt-4o"):
        status, data, _ = _request(port, "GET", path)
        error = json.loads(data)["error"]
        assert status == 404 and error["code"] == "model_not_found" and error["param"] == "model"
    status, reply = _post(port, COMPLETIONS, {"prompt": PROMPT, "model": "gpt-4o"})
    assert status == 404 and reply["error"]["code"] == "model_not_found"


def test_get_paths_answer_head_and_no_path_is_redirected(port) -> None:
    for path in ("/health", "/v1/models"):
        status, data, headers = _request(port, "HEAD", path)
        assert status == 200 and data == b"" and int(headers["content-length"]) > 0
    # a trailing slash is an unknown path (a 307 would echo the client's Host header back)
    for path in ("/v1/completions/", "/v1/chat/completions/", "/health/"):
        status, data, headers = _request(port, "POST", path, {"prompt": PROMPT})
        assert status == 404 and "location" not in headers
        assert json.loads(data)["error"]["message"] == f"POST {path}: Not Found"
