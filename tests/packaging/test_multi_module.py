"""Multi-module agents: manifest round trip, backward compatibility, and runtime chaining."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fed_agent import runtime as runtime_module
from fed_agent.data import heldout_examples
from fed_agent.modules.adapter import AdapterError
from fed_agent.packaging.export import (
    MANIFEST,
    ModulePart,
    export_agent,
    export_modules,
    load_agent,
    module_specs,
    read_manifest,
)
from fed_agent.runtime import AgentRuntime, chained_prompt


def _shifted(state: dict, delta: float) -> dict:
    return {k: v + np.float32(delta) for k, v in state.items()}


@pytest.fixture
def two_module_agent(tmp_path, smoke_module):
    """perception -> decision, both on the smoke base, with different adapters."""
    perception = _shifted(smoke_module.initial_state, 0.01)
    decision = _shifted(smoke_module.initial_state, -0.02)
    parts = {
        "perception": ModulePart(smoke_module, perception),
        "decision": ModulePart(smoke_module, decision, inputs=("perception",)),
    }
    agent_dir = export_modules(tmp_path / "agent", parts, {"training": "federated"})
    return agent_dir, perception, decision


def test_manifest_lists_named_modules_in_run_order(two_module_agent, smoke_module) -> None:
    agent_dir, _, _ = two_module_agent
    manifest = json.loads((agent_dir / MANIFEST).read_text())
    assert manifest["format_version"] == 2 and manifest["chain"] == ["perception", "decision"]
    decision = manifest["modules"]["decision"]
    assert decision["inputs"] == ["perception"]
    assert decision["base"]["fingerprint"] == smoke_module.base.fingerprint
    assert (agent_dir / decision["adapter"]["file"]).is_file()
    assert manifest["training"] == "federated"


def test_runtime_restores_each_modules_own_adapter(two_module_agent, smoke_cfg) -> None:
    agent_dir, perception, decision = two_module_agent
    agent = AgentRuntime.load(agent_dir, smoke_cfg.seed)
    assert [m.name for m in agent.modules] == ["perception", "decision"]
    # both share one process-wide module: activating swaps the adapter in
    for part, expected in zip(agent.modules, (perception, decision), strict=True):
        state = agent.activate(part).adapter_state()
        assert all(np.array_equal(state[k], expected[k]) for k in expected)


def test_runtime_feeds_upstream_answers_into_the_prompt(
    two_module_agent, smoke_cfg, monkeypatch
) -> None:
    agent_dir, _, _ = two_module_agent
    agent = AgentRuntime.load(agent_dir, smoke_cfg.seed)
    seen = []
    real_answer = runtime_module.answer

    def spy(module, example, max_new_tokens, stop_at_eos=True):
        seen.append(example.prompt)
        return real_answer(module, example, max_new_tokens, stop_at_eos)

    monkeypatch.setattr(runtime_module, "answer", spy)
    request = heldout_examples(smoke_cfg.data, smoke_cfg.seed)[0]
    response = agent.respond(request, max_new_tokens=3)
    assert list(response.answers) == ["perception", "decision"]
    assert seen[0] == request.prompt
    perceived = response.answers["perception"].text.strip()
    assert seen[1] == f"perception: {perceived}\n{request.prompt}"
    assert response.final is response.answers["decision"]
    assert 0 < response.ttft_s <= response.total_s


def test_chained_prompt_orders_inputs_as_listed() -> None:
    upstream = {"a": "stop", "b": "pedestrian ahead"}
    assert chained_prompt("P", upstream, ["b", "a"]) == "b: pedestrian ahead\na: stop\nP"
    assert chained_prompt("P", upstream, []) == "P"


def test_inputs_must_come_from_earlier_modules(tmp_path, smoke_module) -> None:
    state = smoke_module.initial_state
    parts = {
        "decision": ModulePart(smoke_module, state, inputs=("perception",)),
        "perception": ModulePart(smoke_module, state),
    }
    with pytest.raises(AdapterError, match="do not run before it"):
        export_modules(tmp_path / "bad", parts, {})


def test_single_module_agents_still_load_both_ways(tmp_path, smoke_module, smoke_cfg) -> None:
    state = _shifted(smoke_module.initial_state, 0.03)
    agent_dir = export_agent(tmp_path / "single", smoke_module, state, {"round": 2})
    manifest = read_manifest(agent_dir)
    assert manifest["format_version"] == 1 and list(module_specs(manifest)) == ["agent"]
    module, _ = load_agent(agent_dir, smoke_cfg.seed)
    assert all(np.array_equal(module.adapter_state()[k], state[k]) for k in state)
    agent = AgentRuntime.load(agent_dir, smoke_cfg.seed)
    assert [m.name for m in agent.modules] == ["agent"] and agent.modules[0].inputs == ()


def test_load_agent_points_multi_module_dirs_to_the_runtime(two_module_agent, smoke_cfg) -> None:
    with pytest.raises(AdapterError, match="AgentRuntime"):
        load_agent(two_module_agent[0], smoke_cfg.seed)


def test_unknown_format_version_is_refused(two_module_agent) -> None:
    agent_dir = two_module_agent[0]
    manifest = json.loads((agent_dir / MANIFEST).read_text())
    manifest["format_version"] = 3
    (agent_dir / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(AdapterError, match="format_version 3"):
        read_manifest(agent_dir)
