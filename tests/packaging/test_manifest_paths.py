"""Every path an agent manifest names is confined to the agent folder."""

from __future__ import annotations

import json

import pytest

from fed_agent.modules.adapter import AdapterError, save_adapter
from fed_agent.packaging.export import MANIFEST, export_agent, load_agent, read_manifest


@pytest.fixture
def agent_dir(tmp_path, smoke_module):
    """An exported agent at ``<tmp>/agent`` and a valid adapter file next to it, outside."""
    folder = export_agent(tmp_path / "agent", smoke_module, smoke_module.initial_state, {})
    save_adapter(smoke_module.initial_state, tmp_path / "outside.safetensors", {})
    return folder


def _point(agent_dir, section: str, key: str, value: str) -> None:
    manifest = json.loads((agent_dir / MANIFEST).read_text())
    manifest[section][key] = value
    (agent_dir / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("adapter", "file", "../outside.safetensors"),
        ("adapter", "file", "ABSOLUTE"),
        ("adapter", "file", "peft/../../outside.safetensors"),
        ("adapter", "peft_dir", "../elsewhere"),
        ("base", "folder", "/etc"),
    ],
)
def test_a_manifest_path_leaving_the_agent_folder_is_refused(agent_dir, section, key, value):
    if value == "ABSOLUTE":
        value = str(agent_dir.parent / "outside.safetensors")
    _point(agent_dir, section, key, value)
    with pytest.raises(AdapterError, match="is outside the agent folder") as err:
        load_agent(agent_dir, seed=0)
    assert f"{section}.{key}" in str(err.value) and str(agent_dir / MANIFEST) in str(err.value)


def test_a_link_out_of_the_agent_folder_is_refused(agent_dir):
    (agent_dir / "link.safetensors").symlink_to(agent_dir.parent / "outside.safetensors")
    _point(agent_dir, "adapter", "file", "link.safetensors")
    with pytest.raises(AdapterError, match="outside the agent folder"):
        read_manifest(agent_dir)


def test_paths_inside_the_agent_folder_still_load(agent_dir, smoke_module):
    _point(agent_dir, "adapter", "file", "./peft/../adapter.safetensors")
    module, _ = load_agent(agent_dir, seed=0)
    assert module.base.fingerprint == smoke_module.base.fingerprint
