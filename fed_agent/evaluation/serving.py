"""The served agent under concurrent load, through real HTTP: ``fed-agent evaluate --endpoint``.

A closed loop per concurrency level ``c``: ``c`` users each send a streamed chat request, wait
for the whole answer, then send the next, until ``requests`` answers are in. Every request
decodes exactly ``max_tokens`` tokens (``ignore_eos``), as the in-process evaluation does, so
latency and throughput compare across agents. Per level the table holds p50/p95 latency, time
to first token (the first streamed chunk: the server sends it once the first token is decoded)
and throughput (requests/s and tokens/s over the
level's wall time).

The cloud-only rows are modelled, as in ``fed_agent.evaluation.deployment``: each measured
request plus a round trip to the cloud and the request's upload (``network_s_of``); the cloud
server is assumed as fast as this one. Throughput in a closed loop of ``c`` users is at most
``c / mean latency``, and never above what this server measured, so the cloud-only
throughput is ``min(measured, c / mean cloud latency)``.
"""

from __future__ import annotations

import base64
import dataclasses
import http.client
import io
import json
import math
import os
import threading
import time
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from fed_agent.data.tasks import Example
from fed_agent.evaluation.config import EvaluationConfig
from fed_agent.evaluation.deployment import network_s_of

TABLE = "serving.csv"
REQUEST_TIMEOUT_S = 300.0


class EndpointError(RuntimeError):
    """No agent server answers at the endpoint given."""


@dataclass(frozen=True)
class Sample:
    """One request as the client saw it."""

    ok: bool
    latency_s: float
    ttft_s: float
    tokens: int
    error: str = ""
    request: int = -1
    """Index of the request sent (into the level's request bodies, cycled)."""


@dataclass(frozen=True)
class Endpoint:
    """An agent server's address and what its ``/health`` says it serves."""

    host: str
    port: int
    model: str
    vision: bool

    @classmethod
    def probe(cls, url: str) -> Endpoint:
        """Read ``url``'s ``/health``; raise EndpointError (one line) if no agent answers."""
        parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme != "http" or not parts.hostname:
            raise EndpointError(f"--endpoint {url!r}: expected http://host:port")
        host, port = parts.hostname, parts.port or 80
        try:
            conn = http.client.HTTPConnection(host, port, timeout=10)
            conn.request("GET", "/health")
            reply = conn.getresponse()
            health = json.loads(reply.read()) if reply.status == 200 else {}
            conn.close()
        except (OSError, ValueError) as err:
            raise EndpointError(f"no agent server answers at {url} ({err})") from err
        if health.get("status") != "ok":
            raise EndpointError(f"{url}/health did not answer as an agent server does")
        return cls(host, port, str(health["model"]), bool(health.get("vision")))


def _image_url(image: np.ndarray) -> str:
    """A (3, H, W) image in [-1, 1] as a PNG data URL (the server decodes it back)."""
    from PIL import Image

    pixels = ((image.transpose(1, 2, 0) + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def chat_body(endpoint: Endpoint, example: Example, max_tokens: int) -> bytes:
    """A streamed chat request decoding exactly ``max_tokens`` tokens, with usage."""
    content: str | list[dict] = example.prompt
    if endpoint.vision and example.image is not None:
        content = [
            {"type": "text", "text": example.prompt},
            {"type": "image_url", "image_url": {"url": _image_url(example.image)}},
        ]
    body = {
        "model": endpoint.model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "stream": True,
        "ignore_eos": True,
        "stream_options": {"include_usage": True},
    }
    return json.dumps(body).encode()


def send(endpoint: Endpoint, body: bytes) -> Sample:
    """POST one streamed chat request and time it as the client sees it."""
    start = time.perf_counter()
    ttft, tokens = None, 0
    conn = http.client.HTTPConnection(endpoint.host, endpoint.port, timeout=REQUEST_TIMEOUT_S)
    try:
        conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        reply = conn.getresponse()
        if reply.status != 200:
            message = json.loads(reply.read() or b"{}").get("error", {}).get("message", "")
            return Sample(False, time.perf_counter() - start, math.nan, 0,
                          f"HTTP {reply.status}: {message}")  # fmt: skip
        for raw in reply:
            line = raw.strip()
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                return Sample(False, time.perf_counter() - start, math.nan, 0,
                              chunk["error"]["message"])  # fmt: skip
            if chunk.get("usage"):
                tokens = int(chunk["usage"]["completion_tokens"])
            if ttft is None and chunk.get("choices"):  # sent once the first token is decoded
                ttft = time.perf_counter() - start
    except (OSError, ValueError, http.client.HTTPException) as err:
        return Sample(False, time.perf_counter() - start, math.nan, 0, str(err))
    finally:
        conn.close()
    latency = time.perf_counter() - start
    return Sample(True, latency, latency if ttft is None else ttft, tokens)


def run_level(
    endpoint: Endpoint, bodies: Sequence[bytes], concurrency: int, requests: int
) -> tuple[list[Sample], float]:
    """``requests`` answers from ``concurrency`` users in a closed loop; (samples, wall s)."""
    if concurrency < 1 or requests < 1:
        raise ValueError(f"need concurrency >= 1 and requests >= 1, got {concurrency}, {requests}")
    lock, issued = threading.Lock(), [0]

    def user() -> list[Sample]:
        done = []
        while True:
            with lock:
                index = issued[0]
                if index >= requests:
                    return done
                issued[0] += 1
            sample = send(endpoint, bodies[index % len(bodies)])
            done.append(dataclasses.replace(sample, request=index))

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        samples = [s for batch in pool.map(lambda _: user(), range(concurrency)) for s in batch]
    return samples, time.perf_counter() - start


def level_row(
    deployment: str,
    concurrency: int,
    samples: Sequence[Sample],
    wall_s: float,
    extra_s: Sequence[float] | None = None,
) -> dict:
    """One row of serving.csv; ``extra_s`` adds modelled network seconds per sample."""
    ok = [s for s in samples if s.ok]
    added = np.zeros(len(ok)) if extra_s is None else np.array(
        [e for s, e in zip(samples, extra_s, strict=True) if s.ok]
    )  # fmt: skip
    latency = np.array([s.latency_s for s in ok]) + added
    ttft = np.array([s.ttft_s for s in ok]) + added
    rps = len(ok) / wall_s if wall_s > 0 else math.nan
    tokens_rps = sum(s.tokens for s in ok) / wall_s if wall_s > 0 else math.nan
    if extra_s is not None and len(ok):  # closed loop: at most c users / mean latency
        modelled = min(rps, concurrency / float(latency.mean()))
        tokens_rps *= modelled / rps if rps else 0.0
        rps = modelled

    def pct(values: np.ndarray, q: float) -> float:
        return float(np.percentile(values, q) * 1e3) if len(values) else math.nan

    return {
        "deployment": deployment,
        "concurrency": concurrency,
        "requests": len(samples),
        "errors": len(samples) - len(ok),
        "p50_ms": pct(latency, 50),
        "p95_ms": pct(latency, 95),
        "ttft_p50_ms": pct(ttft, 50),
        "ttft_p95_ms": pct(ttft, 95),
        "throughput_rps": rps,
        "tokens_per_s": tokens_rps,
    }


def evaluate_endpoint(
    url: str,
    examples: Sequence[Example],
    concurrency: Sequence[int],
    cfg: EvaluationConfig,
) -> list[dict]:
    """serving.csv's rows: per concurrency level, the edge agent and the modelled cloud-only.

    Each level starts with ``cfg.warmup_requests`` untimed requests.
    """
    endpoint = Endpoint.probe(url)
    bodies = [chat_body(endpoint, e, cfg.max_new_tokens) for e in examples]
    common = {
        "model": endpoint.model,
        "max_tokens": cfg.max_new_tokens,
        "rtt_ms": cfg.rtt_ms,
        "uplink_mbps": cfg.uplink_mbps,
    }
    rows = []
    for level in concurrency:
        for body in bodies[: cfg.warmup_requests]:
            send(endpoint, body)
        samples, wall_s = run_level(endpoint, bodies, level, cfg.requests)
        load = os.getloadavg()[0]
        network = [network_s_of(examples[s.request % len(examples)], cfg) for s in samples]
        for deployment, extra in (("edge-agent", None), ("cloud-only", network)):
            row = level_row(deployment, level, samples, wall_s, extra)
            rows.append({**common, **row, "load_avg_1m": load})
    return rows
