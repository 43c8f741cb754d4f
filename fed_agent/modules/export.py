"""Export and load a deployable agent: base identity + adapter + manifest (+ merged weights).

Layout of an agent directory::

    manifest.json          format version, base model name/config/fingerprint, round, metrics
    adapter.safetensors    the aggregated LoRA agent module
    config.yaml            the run's resolved config
    merged/                optional: base with the adapter merged in (plain transformers model)
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from pathlib import Path

from fed_agent.config.schema import ModelConfig
from fed_agent.modules.adapter import (
    AdapterError,
    AdapterState,
    AgentModule,
    agent_module,
    load_adapter_file,
    save_adapter,
)
from fed_agent.outputs import write_json_atomic

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ADAPTER_FILE = "adapter.safetensors"


def export_agent(
    out_dir: Path,
    module: AgentModule,
    state: AdapterState,
    info: dict,
    merged: bool = False,
) -> Path:
    """Write a deployable agent for ``state`` on ``module``'s base; returns ``out_dir``.

    ``info`` (round, metrics, resolved config text under ``config_yaml``, ...) goes into the
    manifest. The adapter is validated against the module before anything is written.
    """
    module.check_state(state)
    out_dir.mkdir(parents=True, exist_ok=True)
    info = dict(info)
    config_yaml = info.pop("config_yaml", None)
    if config_yaml is not None:
        (out_dir / "config.yaml").write_text(config_yaml)
    save_adapter(state, out_dir / ADAPTER_FILE, {"base_fingerprint": module.base.fingerprint})
    manifest = {
        "format_version": FORMAT_VERSION,
        "created_unix": time.time(),
        "base": {
            "name": module.base.name,
            "fingerprint": module.base.fingerprint,
            # the cache folder is this machine's business, not the agent's
            "model_config": {
                k: v for k, v in dataclasses.asdict(module.cfg).items() if k != "cache_dir"
            },
        },
        "adapter": {"file": ADAPTER_FILE, "bytes": module.adapter_bytes},
        "merged": merged,
        **info,
    }
    if merged:
        _export_merged(module, state, out_dir / "merged")
    write_json_atomic(manifest, out_dir / MANIFEST)
    return out_dir


def _export_merged(module: AgentModule, state: AdapterState, path: Path) -> None:
    previous = module.adapter_state()
    module.load_adapter(state)
    try:
        merged = copy.deepcopy(module.model).merge_and_unload()
    finally:
        module.load_adapter(previous)
    merged.save_pretrained(path)
    module.base.tokenizer.save_pretrained(path)


def read_manifest(agent_dir: Path) -> dict:
    """The manifest of an agent directory, checked for the fields loading needs."""
    path = Path(agent_dir) / MANIFEST
    if not path.is_file():
        raise AdapterError(f"{agent_dir} is not an agent directory: {MANIFEST} is missing")
    try:
        manifest = json.loads(path.read_text())
        manifest["base"]["model_config"], manifest["base"]["fingerprint"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise AdapterError(f"{path} is not a valid agent manifest: {err}") from err
    if manifest.get("format_version") != FORMAT_VERSION:
        raise AdapterError(
            f"{path}: format_version {manifest.get('format_version')} is not {FORMAT_VERSION}"
        )
    return manifest


def load_agent(agent_dir: Path, seed: int) -> tuple[AgentModule, dict]:
    """Rebuild the agent of ``agent_dir`` on this machine: base from the registry + adapter.

    Raises
    ------
    AdapterError
        When the manifest or adapter is missing or corrupt, or this machine's base has other
        weights than the base the agent was built on.
    """
    manifest = read_manifest(agent_dir)
    cfg = ModelConfig(**manifest["base"]["model_config"])
    module = agent_module(cfg, seed)
    if module.base.fingerprint != manifest["base"]["fingerprint"]:
        raise AdapterError(
            f"base model mismatch: the agent was built on {manifest['base']['fingerprint'][:12]}, "
            f"this machine's {cfg.name} is {module.base.fingerprint[:12]}"
        )
    module.load_adapter(load_adapter_file(Path(agent_dir) / manifest["adapter"]["file"]))
    return module, manifest
