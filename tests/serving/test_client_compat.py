"""`fed-agent serve` against what real OpenAI clients and fuzzers send: text that is not valid
Unicode, failures no handler foresaw, nullable fields, content parts, model look-ups, paths
and methods."""

from __future__ import annotations

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
