"""Quality and latency of a deployed agent, of its base without modules, and of cloud-only.

Three deployments are compared on the same held-out requests:

* ``edge-agent``: the agent's runtime on this machine (modules chained, adapters active);
* ``edge-base``: the same bases with every adapter disabled (what the modules add);
* ``cloud-only``: modelled, not measured: the agent's measured inference time plus the
  network (``rtt_ms`` and the request's upload at ``uplink_mbps``), as if the same inference
  ran on a cloud server reached over the uplink.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fed_agent.data.tasks import Example
from fed_agent.evaluation.config import EvaluationConfig
from fed_agent.evaluation.quality import Quality, evaluate_quality
from fed_agent.models.registry import build_base, load_base
from fed_agent.packaging.export import base_config, module_specs, read_manifest
from fed_agent.runtime import AgentRuntime, Response, chained_prompt

DEPLOYMENTS = ("edge-agent", "edge-base", "cloud-only")


@dataclass(frozen=True)
class Latency:
    """Per-request latency over the timed requests (milliseconds unless named otherwise)."""

    load_s: float
    ttft_ms: float
    """Median time to first token of the agent's answer."""
    p50_ms: float
    p95_ms: float
    tokens_per_s: float
    """Decoded tokens after the first per second of decoding (NaN for a classifier only)."""
    requests: int
    base_build_s: float = 0.0
    """One-off build of bases missing from the machine's cache, before the load (never part
    of ``load_s``: a second evaluation finds them cached)."""


@dataclass(frozen=True)
class AgentLoad:
    """A loaded agent and what loading it cost, the one-off base build apart."""

    runtime: AgentRuntime
    build_s: float
    """Building bases that were not in the machine's cache yet (0 when all were cached)."""
    base_s: float
    """Loading the (built) bases."""
    agent_s: float
    """Loading the whole agent: bases, modules and adapters (``build_s`` not included)."""


def load_timed(agent_dir: Path, seed: int) -> AgentLoad:
    """Load an agent, timing a missing base's build apart from the load itself."""
    configs = [
        base_config(agent_dir, spec["base"])
        for spec in module_specs(read_manifest(agent_dir)).values()
    ]
    build_s = sum(build_base(cfg, seed) for cfg in configs)
    start = time.perf_counter()
    for cfg in configs:
        load_base(cfg, seed)
    base_s = time.perf_counter() - start
    runtime = AgentRuntime.load(agent_dir, seed)
    return AgentLoad(runtime, build_s, base_s, time.perf_counter() - start)


@contextlib.contextmanager
def adapters_disabled(runtime: AgentRuntime) -> Iterator[None]:
    """Run ``runtime`` on its bases alone (LoRA and trained heads/projectors switched off)."""
    with contextlib.ExitStack() as stack:
        for module in {id(p.module): p.module for p in runtime.modules}.values():
            stack.enter_context(module.model.disable_adapter())
        yield


def agent_quality(runtime: AgentRuntime, examples: list[Example], batch_size: int) -> Quality:
    """Held-out quality of the agent's last module, its prompts chained as at run time."""
    last = runtime.modules[-1]
    if last.inputs:
        upstream = [runtime.respond(e, 1).answers for e in tqdm(examples, desc="chaining")]
        examples = [
            dataclasses.replace(
                e,
                prompt=chained_prompt(
                    e.prompt, {k: a.text.strip() for k, a in answers.items()}, last.inputs
                ),
            )
            for e, answers in zip(examples, upstream, strict=True)
        ]
    return evaluate_quality(runtime.activate(last), examples, batch_size)


def time_requests(
    runtime: AgentRuntime, requests: list[Example], cfg: EvaluationConfig, label: str
) -> list[Response]:
    """Answer ``cfg.warmup_requests`` untimed, then ``cfg.requests`` timed requests (cycled).

    Every generator decodes exactly ``cfg.max_new_tokens`` tokens (EOS ignored), so that the
    percentiles and tokens/s compare across models whatever their answers' lengths.
    """
    for example in requests[: cfg.warmup_requests]:
        runtime.respond(example, cfg.max_new_tokens, stop_at_eos=False)
    timed = [requests[i % len(requests)] for i in range(cfg.requests)]
    return [
        runtime.respond(e, cfg.max_new_tokens, stop_at_eos=False)
        for e in tqdm(timed, desc=f"timing {label}", unit="req")
    ]


def latency_of(responses: list[Response], load_s: float, base_build_s: float = 0.0) -> Latency:
    """Percentiles and decode speed over ``responses``."""
    totals = np.array([r.total_s for r in responses]) * 1e3
    generated = [a for r in responses for a in r.answers.values() if a.new_tokens > 0]
    decode_s = sum(a.total_s - a.ttft_s for a in generated)
    decoded = sum(a.new_tokens - 1 for a in generated)
    return Latency(
        load_s=load_s,
        ttft_ms=float(np.median([r.ttft_s for r in responses]) * 1e3),
        p50_ms=float(np.percentile(totals, 50)),
        p95_ms=float(np.percentile(totals, 95)),
        tokens_per_s=decoded / decode_s if decode_s > 0 and decoded else math.nan,
        requests=len(responses),
        base_build_s=base_build_s,
    )


def request_bytes(example: Example) -> int:
    """What a cloud-only deployment uploads per request: the prompt, and the image as 8-bit."""
    image = 0 if example.image is None else int(np.prod(example.image.shape))
    return len(example.prompt.encode()) + image


def network_s_of(example: Example, cfg: EvaluationConfig) -> float:
    """What reaching a cloud server adds to one request: a round trip and the upload."""
    return cfg.rtt_ms / 1e3 + 8 * request_bytes(example) / (cfg.uplink_mbps * 1e6)


def cloud_only(
    responses: list[Response], requests: list[Example], cfg: EvaluationConfig
) -> Latency:
    """The agent's measured inference plus round trip and upload per request (modelled)."""
    network_s = [network_s_of(requests[i % len(requests)], cfg) for i in range(len(responses))]
    shifted = [
        dataclasses.replace(r, total_s=r.total_s + n, ttft_s=r.ttft_s + n)
        for r, n in zip(responses, network_s, strict=True)
    ]
    # the cloud keeps its model loaded: no load time on the request path
    return dataclasses.replace(
        latency_of(shifted, math.nan, math.nan),
        tokens_per_s=latency_of(responses, 0).tokens_per_s,
    )


def table_row(
    model: str, training: str, deployment: str, quality: Quality, latency: Latency
) -> dict[str, float | str | int]:
    """One row of the evaluation table (the columns of benchmarks/results/agent_eval.csv).

    ``quality`` is the held-out decision accuracy, ``ci_low``/``ci_high`` its Wilson 95 %
    interval over ``n_eval`` held-out decisions.
    """
    loss = quality.answer_loss
    ci_low, ci_high = quality.accuracy_interval
    return {
        "model": model,
        "training": training,
        "deployment": deployment,
        "quality": quality.decision_accuracy,
        "ci_low": ci_low,
        "ci_high": ci_high,
        "n_eval": quality.num_decisions,
        "answer_loss": loss,
        "perplexity": math.exp(loss) if math.isfinite(loss) else math.nan,
        "load_s": latency.load_s,
        "base_build_s": latency.base_build_s,
        "ttft_ms": latency.ttft_ms,
        "p50_ms": latency.p50_ms,
        "p95_ms": latency.p95_ms,
        "tokens_per_s": latency.tokens_per_s,
        "requests": latency.requests,
    }
