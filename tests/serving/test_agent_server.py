"""`fed-agent serve`: the real server on 127.0.0.1, its OpenAI API, its limits and its errors."""

from __future__ import annotations

import http.client
import json
import threading
import time

import pytest

from fed_agent.data.tasks import Example
from fed_agent.deploy.launcher import free_port
from fed_agent.evaluation.serving import Endpoint, chat_body, send
from fed_agent.runtime import AgentRuntime
from tests.serving.helpers import running_server

PROMPT = "weather=snow light=night | pedestrian crosswalk near crossing\nAction:"
MAX_BODY = 4096


@pytest.fixture(scope="module")
def server(smoke_agent_dir):
    """The smoke agent served on a free loopback port; stopped (by PID) afterwards."""
    options = ["--max-queue", "2", "--max-body-bytes", str(MAX_BODY), "--max-tokens-limit", "4096"]
    with running_server(smoke_agent_dir, *options) as port:
        yield port, smoke_agent_dir


def _post(port: int, path: str, body, headers: dict | None = None) -> tuple[int, dict, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.request("POST", path, raw, {"Content-Type": "application/json", **(headers or {})})
    reply = conn.getresponse()
    data = reply.read()
    conn.close()
    return reply.status, json.loads(data) if data else {}, dict(reply.getheaders())


def _events(port: int, path: str, body: dict) -> list[dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    reply = conn.getresponse()
    assert reply.status == 200 and reply.getheader("content-type").startswith("text/event-stream")
    # a reverse proxy (nginx) passes each event on at once, and nothing caches the stream
    assert reply.getheader("x-accel-buffering") == "no"
    assert reply.getheader("cache-control") == "no-cache"
    lines = [line.strip() for line in reply.read().decode().splitlines() if line.strip()]
    conn.close()
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]


def test_health_names_the_chain_and_the_queue(server) -> None:
    port, agent_dir = server
    endpoint = Endpoint.probe(f"http://127.0.0.1:{port}")
    assert endpoint.model == agent_dir.name and not endpoint.vision
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/health")
    health = json.loads(conn.getresponse().read())
    assert health["chain"] == ["agent"]
    assert health["queue"] == {"pending": 0, "max": 2, "abandoned": 0}


def test_completions_run_the_agent_and_match_its_runtime(server, smoke_cfg, smoke_module) -> None:
    port, agent_dir = server
    status, body, _ = _post(port, "/v1/completions", {"prompt": PROMPT, "max_tokens": 6})
    assert status == 200 and body["object"] == "text_completion"
    runtime = AgentRuntime.load(agent_dir, smoke_cfg.seed)
    expected = runtime.respond(Example("serve", PROMPT, ""), 6).final
    choice = body["choices"][0]
    assert choice["text"] == expected.text and expected.text.strip()
    assert 1 <= body["usage"]["completion_tokens"] <= 6
    assert body["usage"]["prompt_tokens"] == len(
        smoke_module.base.tokenizer.encode(PROMPT, add_special_tokens=False)
    )
    request = {"prompt": [PROMPT], "max_tokens": 5, "ignore_eos": True}
    status, fixed, _ = _post(port, "/v1/completions", request)
    assert fixed["usage"]["completion_tokens"] == 5
    assert fixed["choices"][0]["finish_reason"] == "length"


def test_chat_answers_the_last_user_message_streamed_or_not(server) -> None:
    port, _ = server
    messages = [
        {"role": "system", "content": "You drive carefully."},
        {"role": "user", "content": [{"type": "text", "text": PROMPT}]},
    ]
    status, whole, _ = _post(port, "/v1/chat/completions", {"messages": messages, "max_tokens": 6})
    assert status == 200 and whole["object"] == "chat.completion"
    text = whole["choices"][0]["message"]["content"]
    _, plain, _ = _post(port, "/v1/completions", {"prompt": PROMPT, "max_tokens": 6})
    assert text == plain["choices"][0]["text"]
    body = {"messages": messages, "max_tokens": 6, "stream": True}
    chunks = _events(
        port, "/v1/chat/completions", {**body, "stream_options": {"include_usage": True}}
    )
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert streamed == text
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/v1/completions", b"{not json", 400, "not valid JSON"),
        ("/v1/completions", {"max_tokens": 4}, 400, "prompt: Field required"),
        ("/v1/completions", {"prompt": "x", "max_tokens": "5"}, 400, "max_tokens: Input should be"),
        ("/v1/completions", {"prompt": "x", "max_tokens": 0}, 400, "max_tokens: Input should be"),
        ("/v1/completions", {"prompt": "x", "max_tokens": 5000}, 400, "max_tokens must be <= 4096"),
        ("/v1/completions", {"prompt": ["a", "b"]}, 400, "give one prompt, got a list of 2"),
        ("/v1/completions", {"prompt": [5, 9, 2]}, 400, "prompt: token ids are not read"),
        ("/v1/completions", {"prompt": [[5, 9], [2]]}, 400, "prompt: token ids are not read"),
        ("/v1/completions", {"prompt": [True]}, 400, "give a string (or a list of one string)"),
        ("/v1/completions", {"prompt": "x", "n": 2}, 400, "n: decoding is greedy"),
        ("/v1/completions", {"prompt": "x", "model": "gpt-4"}, 404, "'gpt-4' is not served"),
        ("/v1/chat/completions", {"messages": []}, 400, "messages: List should have at least"),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "system", "content": "hi"}]},
            400,
            "no message with role 'user'",
        ),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "robot", "content": "hi"}]},
            400,
            "messages.0.role: Input should be",
        ),
        (
            "/v1/chat/completions",
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "data:image/png;base64,"}}
                        ],
                    }
                ]
            },
            400,
            "this agent reads no images",
        ),
        ("/v1/embeddings", {"input": "x"}, 404, "POST /v1/embeddings: Not Found"),
    ],
)
def test_malformed_requests_get_a_clear_4xx(server, path, body, status, message) -> None:
    got, reply, _ = _post(server[0], path, body)
    assert got == status
    assert message in reply["error"]["message"] and "\n" not in reply["error"]["message"]
    assert reply["error"]["type"] in ("invalid_request_error", "not_found_error")


def test_a_body_above_the_limit_is_refused_before_it_is_read(server) -> None:
    port, _ = server
    status, reply, _ = _post(port, "/v1/completions", {"prompt": "x" * MAX_BODY})
    assert status == 413 and f"above {MAX_BODY} bytes" in reply["error"]["message"]
    # a chunked body has no Content-Length: it is counted as it arrives
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    parts = [b'{"prompt": "', b"y" * MAX_BODY, b'"}']
    try:
        conn.request("POST", "/v1/completions", iter(parts), {"Content-Type": "application/json"},
                     encode_chunked=True)  # fmt: skip
    except (BrokenPipeError, ConnectionResetError):
        pass  # refused mid-body: the server answered and closed while the rest was on its way
    reply = conn.getresponse()
    assert reply.status == 413
    conn.close()


def test_a_full_queue_answers_503_and_frees_its_places(server) -> None:
    port, _ = server
    endpoint = Endpoint.probe(f"http://127.0.0.1:{port}")
    slow = chat_body(endpoint, Example("serve", PROMPT, ""), 500)  # seconds of decoding
    busy = [threading.Thread(target=send, args=(endpoint, slow)) for _ in range(2)]
    for thread in busy:
        thread.start()
    deadline = time.monotonic() + 60
    while True:  # both admitted: one decoding, one waiting
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/health")
        if json.loads(conn.getresponse().read())["queue"]["pending"] == 2:
            break
        assert time.monotonic() < deadline, "the two slow requests were never admitted"
        time.sleep(0.05)
    status, reply, headers = _post(port, "/v1/completions", {"prompt": "x", "max_tokens": 1})
    assert status == 503 and headers.get("retry-after") == "1"
    assert "busy" in reply["error"]["message"]
    for thread in busy:
        thread.join(120)
    status, _, _ = _post(port, "/v1/completions", {"prompt": "x", "max_tokens": 1})
    assert status == 200  # their places were given back


def test_evaluate_endpoint_load_tests_the_real_server(server, tmp_path, capsys) -> None:
    import pandas as pd

    from fed_agent.cli import main

    port, agent_dir = server
    args = ["evaluate", str(agent_dir), "--endpoint", f"http://127.0.0.1:{port}"]
    args += ["--concurrency", "1", "2", "--requests", "6", "--max-new-tokens", "3"]
    args += ["--eval-samples", "6", "--rtt-ms", "80", "--out", str(tmp_path)]
    assert main(args) == 0
    frame = pd.read_csv(tmp_path / "serving.csv")
    assert list(zip(frame.deployment, frame.concurrency, strict=True)) == [
        ("edge-agent", 1), ("cloud-only", 1), ("edge-agent", 2), ("cloud-only", 2)
    ]  # fmt: skip
    assert (frame.errors == 0).all() and (frame.requests == 6).all()  # 2 users fit the queue
    assert (frame.model == agent_dir.name).all() and (frame.max_tokens == 3).all()
    edge, cloud = frame[frame.deployment == "edge-agent"], frame[frame.deployment == "cloud-only"]
    assert (edge.ttft_p50_ms <= edge.p50_ms).all() and (edge.p50_ms <= edge.p95_ms).all()
    assert (cloud.p50_ms.values >= edge.p50_ms.values + 80).all()
    assert (cloud.throughput_rps.values <= edge.throughput_rps.values + 1e-9).all()
    # every request decoded exactly 3 tokens (ignore_eos), so tokens/s = 3 x requests/s
    assert edge.tokens_per_s.values == pytest.approx(3 * edge.throughput_rps.values)
    assert "serving.csv" in capsys.readouterr().out


def test_evaluate_endpoint_without_a_server_says_so_in_one_line(capsys) -> None:
    from fed_agent.cli import main

    url = f"http://127.0.0.1:{free_port()}"
    assert main(["evaluate", "--endpoint", url]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"no agent server answers at {url}" in err[0]


def test_serve_refuses_a_folder_without_an_agent_and_a_busy_port(tmp_path, server, caplog):
    from fed_agent.cli import main

    assert main(["serve", str(tmp_path), "--port", str(free_port())]) == 2
    assert "is not an agent directory: manifest.json is missing" in caplog.text
    caplog.clear()
    port, agent_dir = server  # the running server holds its port
    assert main(["serve", str(agent_dir), "--port", str(port)]) == 2
    assert f"--port {port} on 127.0.0.1: cannot listen there (in use)" in caplog.text
