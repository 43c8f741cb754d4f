"""A real two-module agent: MiniLM perception (classify) extended by SmolLM2 (generate) (slow)."""

from __future__ import annotations

import json

import pytest

from fed_agent.config import load_config
from fed_agent.data import heldout_examples
from fed_agent.data.scenes import ACTIONS
from fed_agent.modules.adapter import agent_module
from fed_agent.packaging.export import ADAPTER_FILE, MANIFEST
from fed_agent.packaging.extend import export_run_agent, load_extension
from fed_agent.runtime import AgentRuntime


@pytest.mark.slow
def test_minilm_perception_then_smollm2_decision_answer_held_out_requests(tmp_path) -> None:
    perception_cfg = load_config("default", ["model=minilm-perception"])
    perception = agent_module(perception_cfg.model, 0)
    first = export_run_agent(
        tmp_path / "perception" / "agent",
        perception,
        perception.initial_state,
        {"round": 1},
        "perception",
    )

    decision_cfg = load_config(
        "default", ["model=smollm2-135m", "agent.module_name=decision", f"agent.extend={first}"]
    )
    extension = load_extension(decision_cfg.agent, decision_cfg.seed)
    assert extension is not None and list(extension.parts) == ["perception"]
    decision = agent_module(decision_cfg.model, 0)
    agent_dir = export_run_agent(
        tmp_path / "decision" / "agent",
        decision,
        decision.initial_state,
        {"round": 1},
        decision_cfg.agent.module_name,
        extension,
    )

    manifest = json.loads((agent_dir / MANIFEST).read_text())
    assert manifest["format_version"] == 2 and manifest["chain"] == ["perception", "decision"]
    bases = {name: m["base"] for name, m in manifest["modules"].items()}
    assert bases["perception"]["name"] == "minilm-perception"
    assert bases["decision"]["name"] == "smollm2-135m"
    assert bases["perception"]["fingerprint"] != bases["decision"]["fingerprint"]
    assert (agent_dir / "perception.safetensors").read_bytes() == (
        first / ADAPTER_FILE
    ).read_bytes()

    runtime = AgentRuntime.load(agent_dir, decision_cfg.seed)
    assert [p.module.base.task_kind for p in runtime.modules] == ["classify", "generate"]
    for request in heldout_examples(decision_cfg.data, decision_cfg.seed)[:2]:
        response = runtime.respond(request, max_new_tokens=4)
        assert list(response.answers) == ["perception", "decision"]
        perceived = response.answers["perception"]
        assert perceived.text in ACTIONS and 0 < perceived.confidence <= 1
        assert perceived.new_tokens == 0  # one forward of the classifier
        decided = response.answers["decision"]
        assert response.final is decided and 1 <= decided.new_tokens <= 4
        assert decided.text.strip() and 0 < response.ttft_s <= response.total_s
