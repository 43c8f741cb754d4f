"""``fed-agent evaluate`` on a tiny agent, and the latency arithmetic behind its table."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from fed_agent.cli import main
from fed_agent.config import to_yaml
from fed_agent.data.tasks import Example
from fed_agent.evaluation.config import EvaluationConfig
from fed_agent.evaluation.deployment import cloud_only, latency_of
from fed_agent.modules.generation import Answer
from fed_agent.packaging.export import export_agent
from fed_agent.runtime import Response

REQUIRED = {"model", "training", "quality", "p50_ms", "p95_ms", "tokens_per_s", "base_build_s"}


def _response(total_ms: float, ttft_ms: float, tokens: int) -> Response:
    answer = Answer(" go", "go", 0.9, tokens, ttft_ms / 1e3, total_ms / 1e3)
    return Response({"agent": answer}, total_ms / 1e3, ttft_ms / 1e3)


def test_latency_percentiles_and_decode_speed() -> None:
    responses = [_response(100.0 * (i + 1), 10.0, 5) for i in range(20)]  # 100..2000 ms
    latency = latency_of(responses, load_s=1.5)
    assert latency.p50_ms == pytest.approx(1050.0)
    assert latency.p95_ms == pytest.approx(1905.0)
    assert latency.ttft_ms == pytest.approx(10.0)
    decode_s = sum((100.0 * (i + 1) - 10.0) / 1e3 for i in range(20))
    assert latency.tokens_per_s == pytest.approx(20 * 4 / decode_s)
    assert latency.load_s == 1.5 and latency.requests == 20


def test_cloud_only_adds_round_trip_and_upload() -> None:
    request = Example("decide", "x" * 1000, " go")  # 1000 bytes = 1 ms at 8 Mbit/s
    responses = [_response(50.0, 20.0, 4)] * 10
    cfg = EvaluationConfig(rtt_ms=100.0, uplink_mbps=8.0)
    cloud = cloud_only(responses, [request], cfg)
    assert cloud.p50_ms == pytest.approx(50.0 + 101.0)
    assert cloud.ttft_ms == pytest.approx(20.0 + 101.0)
    assert cloud.tokens_per_s == pytest.approx(latency_of(responses, 0.0).tokens_per_s)
    assert math.isnan(cloud.load_s)


def test_evaluation_config_refuses_bad_values() -> None:
    with pytest.raises(ValueError, match="evaluation.requests must be >= 1"):
        EvaluationConfig(requests=0)
    with pytest.raises(ValueError, match="uplink_mbps"):
        EvaluationConfig(uplink_mbps=0.0)


def test_evaluate_command_writes_table_and_plot(tmp_path, smoke_module, smoke_cfg, capsys) -> None:
    agent_dir = export_agent(
        tmp_path / "agent",
        smoke_module,
        smoke_module.initial_state,
        {"training": "federated", "config_yaml": to_yaml(smoke_cfg)},
    )
    out = tmp_path / "eval"
    args = ["evaluate", str(agent_dir), "--out", str(out), "--requests", "6"]
    args += ["--eval-samples", "6", "--max-new-tokens", "4", "--rtt-ms", "80"]
    assert main(args) == 0
    frame = pd.read_csv(out / "agent_eval.csv")
    assert REQUIRED <= set(frame.columns)
    assert list(frame["deployment"]) == ["edge-agent", "edge-base", "cloud-only"]
    assert list(frame["training"]) == ["federated", "none", "federated"]
    assert (frame["requests"] == 6).all()
    agent, base, cloud = (frame.iloc[i] for i in range(3))
    assert 0 < agent.p50_ms <= agent.p95_ms and agent.tokens_per_s > 0
    assert cloud.p50_ms >= agent.p50_ms + 80.0 and cloud.quality == agent.quality
    # the smoke base is in the cache already: nothing is built, the load is the agent's own
    assert agent.base_build_s < 1.0 and agent.load_s < 30.0
    # the initial adapter has B = 0: the agent is exactly its base
    assert agent.quality == base.quality and agent.answer_loss == pytest.approx(base.answer_loss)
    assert (out / "agent_eval.png").stat().st_size > 10_000
    assert "agent_eval.csv" in capsys.readouterr().out
