"""``agent.extend``: a run's module exported into an earlier agent (format 1 or 2)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fed_agent.config import load_config
from fed_agent.config.schema import AgentConfig
from fed_agent.data import heldout_examples
from fed_agent.deploy import launcher
from fed_agent.incentives.policies import shipped_checkpoint
from fed_agent.packaging.export import (
    ADAPTER_FILE,
    MANIFEST,
    ModulePart,
    export_agent,
    export_modules,
    load_agent,
    module_specs,
    read_manifest,
)
from fed_agent.packaging.extend import (
    EXTENDS_KEY,
    ExtendError,
    export_run_agent,
    extension_specs,
    load_extension,
)
from fed_agent.runtime import AgentRuntime


def _shifted(state: dict, delta: float) -> dict:
    return {k: v + np.float32(delta) for k, v in state.items()}


def _manifest(agent_dir: Path) -> dict:
    return json.loads((agent_dir / MANIFEST).read_text())


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.fixture
def format1_agent(tmp_path, smoke_module):
    """An earlier run's single-module agent, as the ServerApp exports it today."""
    state = _shifted(smoke_module.initial_state, 0.01)
    agent_dir = export_agent(tmp_path / "first" / "agent", smoke_module, state, {"round": 2})
    return agent_dir, state


def test_without_extend_the_export_is_the_format_1_of_export_agent(tmp_path, smoke_module):
    state = _shifted(smoke_module.initial_state, 0.02)
    info = {"round": 4, "metrics": {"decision_accuracy": 0.5}, "config_yaml": "seed: 0\n"}
    before = export_agent(tmp_path / "before", smoke_module, state, info)
    now = export_run_agent(tmp_path / "now", smoke_module, state, info, AgentConfig().module_name)
    assert sorted(p.name for p in now.iterdir()) == sorted(p.name for p in before.iterdir())
    old, new = _manifest(before), _manifest(now)
    old.pop("created_unix"), new.pop("created_unix")
    assert new == old and new["format_version"] == 1 and "module_name" not in new
    assert (now / ADAPTER_FILE).read_bytes() == (before / ADAPTER_FILE).read_bytes()
    assert (now / "config.yaml").read_text() == "seed: 0\n"
    assert load_extension(AgentConfig(), 0) is None


def test_a_named_module_without_extend_stays_format_1_and_keeps_its_name(
    tmp_path, smoke_module, smoke_cfg
):
    state = _shifted(smoke_module.initial_state, 0.02)
    agent_dir = export_run_agent(tmp_path / "a", smoke_module, state, {}, "perception")
    manifest = read_manifest(agent_dir)
    assert manifest["format_version"] == 1 and list(module_specs(manifest)) == ["perception"]
    module, _ = load_agent(agent_dir, smoke_cfg.seed)  # the single-module loader still works
    assert _states_equal(module.adapter_state(), state)


def test_extending_a_format_1_agent_chains_the_old_module_then_the_new(
    tmp_path, format1_agent, smoke_module, smoke_cfg
):
    old_dir, old_state = format1_agent
    extension = load_extension(AgentConfig("decision", str(old_dir)), smoke_cfg.seed)
    new_state = _shifted(smoke_module.initial_state, -0.03)
    info = {"round": 3, "config_yaml": "seed: 0\n"}
    new_dir = export_run_agent(
        tmp_path / "second", smoke_module, new_state, info, "decision", extension
    )
    manifest = _manifest(new_dir)
    assert manifest["format_version"] == 2 and manifest["chain"] == ["agent", "decision"]
    assert manifest["modules"]["decision"]["inputs"] == []
    assert manifest[EXTENDS_KEY] == str(old_dir.resolve()) and manifest["round"] == 3
    assert "config_yaml" not in manifest and (new_dir / "config.yaml").read_text() == "seed: 0\n"
    old_file = new_dir / manifest["modules"]["agent"]["adapter"]["file"]
    assert old_file.read_bytes() == (old_dir / ADAPTER_FILE).read_bytes()

    runtime = AgentRuntime.load(new_dir, smoke_cfg.seed)
    assert [m.name for m in runtime.modules] == ["agent", "decision"]
    for part, expected in zip(runtime.modules, (old_state, new_state), strict=True):
        assert _states_equal(runtime.activate(part).adapter_state(), expected)
    request = heldout_examples(smoke_cfg.data, smoke_cfg.seed)[0]
    response = runtime.respond(request, max_new_tokens=3)
    assert list(response.answers) == ["agent", "decision"]
    assert response.final is response.answers["decision"] and response.final.new_tokens >= 1


def test_extending_a_format_2_agent_keeps_its_modules_and_their_inputs(
    tmp_path, smoke_module, smoke_cfg
):
    perception = _shifted(smoke_module.initial_state, 0.01)
    decision = _shifted(smoke_module.initial_state, -0.02)
    parts = {
        "perception": ModulePart(smoke_module, perception),
        "decision": ModulePart(smoke_module, decision, inputs=("perception",)),
    }
    old_dir = export_modules(tmp_path / "old", parts, {"round": 1})
    extension = load_extension(AgentConfig("planner", str(old_dir)), smoke_cfg.seed)
    planner = _shifted(smoke_module.initial_state, 0.04)
    new_dir = export_run_agent(tmp_path / "new", smoke_module, planner, {}, "planner", extension)
    manifest = _manifest(new_dir)
    assert manifest["chain"] == ["perception", "decision", "planner"]
    assert manifest["modules"]["decision"]["inputs"] == ["perception"]
    assert manifest["modules"]["planner"]["inputs"] == []
    for name in ("perception", "decision"):
        file = f"{name}.safetensors"
        assert (new_dir / file).read_bytes() == (old_dir / file).read_bytes()
    runtime = AgentRuntime.load(new_dir, smoke_cfg.seed)
    assert _states_equal(runtime.activate(runtime.modules[-1]).adapter_state(), planner)
    request = heldout_examples(smoke_cfg.data, smoke_cfg.seed)[1]
    assert list(runtime.respond(request, max_new_tokens=2).answers) == manifest["chain"]


def test_a_module_name_clash_fails_naming_the_path_and_the_chain(format1_agent, smoke_cfg):
    old_dir, _ = format1_agent
    with pytest.raises(ExtendError, match=r"already has a module named 'agent'") as err:
        load_extension(AgentConfig(extend=str(old_dir)), smoke_cfg.seed)
    assert f"agent.extend={old_dir}" in str(err.value) and "agent.module_name" in str(err.value)


def test_a_missing_path_fails_naming_it(tmp_path, smoke_cfg):
    missing = tmp_path / "outputs" / "perception" / "agent"
    with pytest.raises(ExtendError, match="is not a directory") as err:
        load_extension(AgentConfig("decision", str(missing)), smoke_cfg.seed)
    assert str(missing) in str(err.value)


def _break_manifest(agent_dir: Path) -> None:
    (agent_dir / MANIFEST).unlink()


def _break_json(agent_dir: Path) -> None:
    (agent_dir / MANIFEST).write_text("{not json")


def _drop_adapter(agent_dir: Path) -> None:
    (agent_dir / ADAPTER_FILE).unlink()


def _corrupt_adapter(agent_dir: Path) -> None:
    (agent_dir / ADAPTER_FILE).write_bytes(b"garbage")


def _other_base(agent_dir: Path) -> None:
    manifest = _manifest(agent_dir)
    manifest["base"]["fingerprint"] = "0" * 64
    (agent_dir / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_break_manifest, "manifest.json is missing"),
        (_break_json, "not a valid agent manifest"),
        (_drop_adapter, r"adapter files \['adapter.safetensors'\] are missing"),
        (_corrupt_adapter, "module 'agent' does not load: .*corrupt"),
        (_other_base, "module 'agent' does not load: base model mismatch"),
    ],
)
def test_an_unusable_agent_fails_naming_the_path(format1_agent, smoke_cfg, damage, message):
    old_dir, _ = format1_agent
    damage(old_dir)
    with pytest.raises(ExtendError, match=message) as err:
        load_extension(AgentConfig("decision", str(old_dir)), smoke_cfg.seed)
    assert f"agent.extend={old_dir}" in str(err.value)


def test_the_cheap_check_reads_the_chain_without_loading_models(format1_agent):
    old_dir, _ = format1_agent
    assert list(extension_specs(AgentConfig("decision", str(old_dir)))) == ["agent"]


def test_the_launcher_pins_relative_input_paths_and_fails_before_flower(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(shipped_checkpoint("edmsac", 3), tmp_path / "designer.npz")
    given = [
        "agent.extend=outputs/p/agent",
        "federation.resume_from=outputs/r",
        "incentive.designer_checkpoint=designer.npz",
        "federation.num_es=3",
    ]
    items = launcher.effective_overrides(given, load_config("smoke", given), tmp_path)
    assert f"incentive.designer_checkpoint='{tmp_path / 'designer.npz'}'" in items
    assert f"agent.extend='{tmp_path / 'outputs/p/agent'}'" in items
    assert f"federation.resume_from='{tmp_path / 'outputs/r'}'" in items
    assert f"output_dir='{tmp_path / 'outputs'}'" in items
    assert "agent.extend=outputs/p/agent" not in items and "federation.num_es=3" in items
    (tmp_path / "bases" / "mine").mkdir(parents=True)  # a model=hf base: a local folder is
    hf = ["model=hf", "model.path=bases/mine"]  # pinned, a hub id is left as it is
    assert launcher.pinned_paths(load_config("smoke", hf)) == {
        "model.path": tmp_path / "bases/mine"
    }
    hub = ["model=hf", "model.path=HuggingFaceTB/SmolLM2-135M"]
    assert launcher.pinned_paths(load_config("smoke", hub)) == {}

    def no_flower(*args, **kwargs):
        raise AssertionError("a SuperLink was started for a run that cannot export its agent")

    monkeypatch.setattr(launcher, "start_simulation_superlink", no_flower)
    with pytest.raises(launcher.ConfigError, match="outputs/p/agent.*is not a directory"):
        launcher.launch_simulation("smoke", ["agent.module_name=d", "agent.extend=outputs/p/agent"])
