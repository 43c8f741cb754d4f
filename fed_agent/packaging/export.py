"""Export and load a deployable agent: base identity + adapter(s) + manifest (+ merged weights).

Layout of a single-module agent directory (format 1, written by :func:`export_agent`)::

    manifest.json          format version, base model name/config/fingerprint, round, metrics
    adapter.safetensors    the aggregated LoRA agent module
    config.yaml            the run's resolved config
    peft/agent/            the same module as a standard peft adapter folder
    base/<base folder>/    the base as a standard save_pretrained folder (small bases only)
    merged/                optional: base with the adapter merged in (plain transformers model)

A multi-module agent (format 2, written by :func:`export_modules`) holds several named modules,
each on its own base, possibly built by different ESs or rounds::

    manifest.json          {"format_version": 2, "chain": [names in run order],
                            "modules": {name: {"base": ..., "adapter": ..., "inputs": [...]}}}
    <name>.safetensors     one adapter per module
    peft/<name>/           each module as a standard peft adapter folder
    base/<base folder>/    each small base once, as a standard save_pretrained folder

Standard folders (both formats): ``peft/<name>/`` holds ``adapter_config.json`` and
``adapter_model.safetensors``, loadable by stock ``peft.PeftModel.from_pretrained(base, dir)``.
A base of at most :data:`EMBED_BASE_MAX_BYTES` (the tiny bases, which exist nowhere else:
they are built from config) is copied to ``base/<folder>/`` for stock
``AutoModelForCausalLM``/``LlavaForConditionalGeneration.from_pretrained``; the adapter
config's ``base_model_name_or_path`` names it relative to the agent folder. A larger base
(SmolLM2-135M) is not copied: ``base_model_name_or_path`` is its hub id or its folder's name,
never an absolute path; ``fed_agent.models.registry.load_base`` rebuilds a registry base
anywhere, and a ``model=hf`` folder is looked up by that name in the loading machine's model
cache (``base.cache_folder``), checked by fingerprint (docs/models.md).
The manifest records both folders (``adapter.peft_dir``, ``base.folder``) and stays the
source of truth for fingerprints and the chain; the runtime reads the manifest's adapter file.

:func:`module_specs` reads both formats into the format-2 shape (a format-1 agent is one module,
named by its manifest's ``module_name`` or else ``agent``); ``fed_agent.runtime`` chains the
modules and ``fed_agent.packaging.extend`` exports a run's module into an earlier agent.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from transformers import PreTrainedModel

from fed_agent.config.schema import ModelConfig
from fed_agent.models.base import BaseModel, cache_root
from fed_agent.models.preflight import looks_local
from fed_agent.modules.adapter import (
    AdapterError,
    AdapterState,
    AgentModule,
    agent_module,
    load_adapter_file,
    save_adapter,
)
from fed_agent.outputs import write_json_atomic
from fed_agent.packaging.manifest_base import check_base_entry

FORMAT_VERSION = 1
"""Format of single-module agents (still written by export_agent, so older readers work)."""
MULTI_FORMAT_VERSION = 2
FORMAT_VERSIONS = (FORMAT_VERSION, MULTI_FORMAT_VERSION)
MANIFEST = "manifest.json"
ADAPTER_FILE = "adapter.safetensors"
SINGLE_MODULE_NAME = "agent"
"""The name a format-1 agent's only module gets when read as a chain (unless it names one)."""
MODULE_NAME_KEY = "module_name"
"""Optional key of a format-1 manifest: its module's name when that is not ``agent``."""
PEFT_DIR = "peft"
"""Folder of the standard peft adapter folders, one per module name."""
BASE_DIR = "base"
"""Folder of the copied bases, one save_pretrained folder per base."""
MERGED_DIR = "merged"
EMBED_BASE_MAX_BYTES = 64 * 2**20
"""Bases up to this size are copied into the agent (the tiny ones: 0.5-4 MB); larger ones
(SmolLM2-135M: 538 MB) are named by their source instead of copied into every export."""


@dataclass(frozen=True)
class ModulePart:
    """One named module of a multi-module agent: its module, adapter and upstream inputs."""

    module: AgentModule
    state: AdapterState
    inputs: tuple[str, ...] = ()
    """Names of earlier modules whose outputs are added to this module's prompt (runtime)."""


MACHINE_FIELDS = ("cache_dir", "device", "dtype", "gradient_checkpointing")
"""Model settings that are the loading machine's business, not the agent's: left out of the
manifest, so each machine that loads the agent uses its own (defaults: its cache, ``auto``)."""


def _base_entry(module: AgentModule, folder: str | None = None) -> dict:
    """The manifest's base: name, fingerprint and config, with no absolute path in it.

    A ``model=hf`` base from a local folder is named by where the loader finds it: the copy
    in the agent (``folder``) when it was copied, else its folder's name under the loading
    machine's model cache (``cache_folder``); the fingerprint says it is the same base.
    """
    config = {k: v for k, v in dataclasses.asdict(module.cfg).items() if k not in MACHINE_FIELDS}
    entry = {
        "name": module.base.name,
        "fingerprint": module.base.fingerprint,
        "task_kind": module.base.task_kind,
        "model_config": config,
    }
    local_hf = module.cfg.name == "hf" and looks_local(module.cfg.path)
    if local_hf:
        config["path"] = ""
    if folder is not None:
        entry["folder"] = folder
    elif local_hf or Path(module.base.path).is_relative_to(cache_root(module.cfg)):
        entry["cache_folder"] = Path(module.base.path).name
    return entry


def base_config(agent_dir: Path, base: dict) -> ModelConfig:
    """The ModelConfig of a manifest's base on this machine: a ``model=hf`` base recorded by
    folder loads from the agent's copy or from this machine's model cache."""
    cfg = ModelConfig(**base["model_config"])
    if cfg.name != "hf" or cfg.path:
        return cfg
    if base.get("folder"):
        path = confined_path(agent_dir, base["folder"], "base.folder")
    elif base.get("cache_folder"):
        path = cache_root(cfg) / str(base["cache_folder"])
    else:
        raise AdapterError("a model=hf base without model.path, folder or cache_folder")
    return dataclasses.replace(cfg, path=str(path))


@contextlib.contextmanager
def _adapter_active(module: AgentModule, state: AdapterState) -> Iterator[None]:
    """``module`` with ``state`` loaded; its previous adapter is back afterwards."""
    previous = module.adapter_state()
    module.load_adapter(state)
    try:
        yield
    finally:
        module.load_adapter(previous)


def _base_folder(module: AgentModule, out_dir: Path) -> str | None:
    """Copy a small base's save_pretrained folder into ``out_dir/base/``; its relative path.

    None for a base too large to copy, or one whose weights are no save_pretrained folder
    (MiniLM perception: an encoder plus a head only this project defines).
    """
    source = Path(module.base.path)
    if module.base.num_bytes > EMBED_BASE_MAX_BYTES or not (source / "config.json").is_file():
        return None
    if not isinstance(module.base.model, PreTrainedModel):
        return None
    relative = f"{BASE_DIR}/{source.name}"
    if not (out_dir / relative / "config.json").is_file():  # modules may share one base
        shutil.copytree(source, out_dir / relative, dirs_exist_ok=True)
        add_bos_on_load(out_dir / relative, module.base)
    return relative


def add_bos_on_load(folder: Path, base: BaseModel) -> None:
    """Make the ``tokenizer.json`` in ``folder`` prepend BOS, as the runtime's plain prompts
    have it.

    The runtime (``fed_agent.modules.batching.encode_batch``) puts BOS before every plain
    prompt; a tokenizer trained here does not add it itself, so a stock ``AutoTokenizer`` on
    the exported folder would feed the model another sequence. Nothing changes for a tokenizer
    without BOS (SmolLM2's), one that adds it already, or a base whose prompts go through its
    chat template (the template writes its own start; the runtime prepends nothing).
    """
    from tokenizers import Tokenizer, processors

    file = folder / "tokenizer.json"
    tokenizer = base.tokenizer
    bos, bos_id = tokenizer.bos_token, tokenizer.bos_token_id
    if bos_id is None or base.chat_template or not file.is_file():
        return
    backend = Tokenizer.from_file(str(file))
    if backend.encode("a").ids[:1] == [bos_id]:
        return
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
    )
    backend.save(str(file))


def _write_standard(
    out_dir: Path, name: str, module: AgentModule, state: AdapterState
) -> tuple[str, str | None]:
    """Write ``peft/<name>/`` (and the base when small); returns (peft dir, base folder)."""
    base_folder = _base_folder(module, out_dir)
    peft_dir = f"{PEFT_DIR}/{name}"
    with _adapter_active(module, state):
        module.model.save_pretrained(out_dir / peft_dir, safe_serialization=True)
    # where stock loaders find the base: the copy in this agent, else a hub id, else the
    # folder's name (in the model cache; never this machine's absolute path)
    config_file = out_dir / peft_dir / "adapter_config.json"
    config = json.loads(config_file.read_text())
    hub_id = module.cfg.name == "hf" and not looks_local(module.cfg.path)
    config["base_model_name_or_path"] = base_folder or (
        module.cfg.path if hub_id else Path(module.base.path).name
    )
    write_json_atomic(config, config_file)
    return peft_dir, base_folder


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
    name = info.get(MODULE_NAME_KEY, SINGLE_MODULE_NAME)
    peft_dir, base_folder = _write_standard(out_dir, name, module, state)
    manifest = {
        "format_version": FORMAT_VERSION,
        "created_unix": time.time(),
        "base": _base_entry(module, base_folder),
        "adapter": {"file": ADAPTER_FILE, "bytes": module.adapter_bytes, "peft_dir": peft_dir},
        "merged": merged,
        **info,
    }
    if merged:
        _export_merged(module, state, out_dir / MERGED_DIR)
    write_json_atomic(manifest, out_dir / MANIFEST)
    return out_dir


PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json", "chat_template.jinja")
"""A VLM base folder's processor files that a merged model carries along."""


def _export_merged(module: AgentModule, state: AdapterState, path: Path) -> None:
    """The base with the adapter merged in, as a stock ``save_pretrained`` folder."""
    with _adapter_active(module, state):
        merged = copy.deepcopy(module.model).merge_and_unload()
    merged.save_pretrained(path)
    module.base.tokenizer.save_pretrained(path)
    for name in PROCESSOR_FILES:  # a VLM's processor: its images and their prompt layout
        if (Path(module.base.path) / name).is_file():
            shutil.copy2(Path(module.base.path) / name, path / name)
    add_bos_on_load(path, module.base)


def export_modules(
    out_dir: Path, parts: Mapping[str, ModulePart], info: dict, merged: bool = False
) -> Path:
    """Write a multi-module agent (format 2); ``parts`` are in run order. Returns ``out_dir``.

    ``info`` goes into the manifest, except ``config_yaml`` which is written to ``config.yaml``
    (as :func:`export_agent` does). With ``merged`` each module is also written with its
    adapter merged into its base, as a stock ``save_pretrained`` model in ``merged/<name>/``.

    Raises
    ------
    AdapterError
        For an adapter that does not fit its module, or an input that names a module that does
        not run earlier in the chain.
    """
    check_chain({name: part.inputs for name, part in parts.items()})
    for part in parts.values():
        part.module.check_state(part.state)
    out_dir.mkdir(parents=True, exist_ok=True)
    info = dict(info)
    config_yaml = info.pop("config_yaml", None)
    if config_yaml is not None:
        (out_dir / "config.yaml").write_text(config_yaml)
    modules = {}
    for name, part in parts.items():
        file = f"{name}.safetensors"
        save_adapter(part.state, out_dir / file, {"base_fingerprint": part.module.base.fingerprint})
        peft_dir, base_folder = _write_standard(out_dir, name, part.module, part.state)
        modules[name] = {
            "base": _base_entry(part.module, base_folder),
            "adapter": {"file": file, "bytes": part.module.adapter_bytes, "peft_dir": peft_dir},
            "inputs": list(part.inputs),
        }
        if merged:
            _export_merged(part.module, part.state, out_dir / MERGED_DIR / name)
            modules[name]["merged_dir"] = f"{MERGED_DIR}/{name}"
    manifest = {
        "format_version": MULTI_FORMAT_VERSION,
        "created_unix": time.time(),
        "chain": list(parts),
        "modules": modules,
        **info,
    }
    write_json_atomic(manifest, out_dir / MANIFEST)
    return out_dir


def check_chain(inputs: Mapping[str, object], what: str = "") -> None:
    """Refuse a chain of no module, or a module whose ``inputs`` (a list) name a module that
    does not run before it (``{name: inputs}`` in run order; ``what`` leads the message).

    Raises
    ------
    AdapterError
        Naming the module and its inputs.
    """
    if not inputs:
        raise AdapterError(f"{what}an agent needs at least one module")
    chain = list(inputs)
    for position, (name, given) in enumerate(inputs.items()):
        if not isinstance(given, list | tuple):
            raise AdapterError(f"{what}module {name!r}: inputs must be a list, got {given!r}")
        late = [i for i in given if i not in chain[:position]]
        if late:
            raise AdapterError(
                f"{what}module {name!r} takes inputs {late} that do not run before it in {chain}"
            )


def read_manifest(agent_dir: Path) -> dict:
    """The manifest of an agent directory (format 1 or 2), checked for what loading needs."""
    path = Path(agent_dir) / MANIFEST
    if not path.is_file():
        raise AdapterError(f"{agent_dir} is not an agent directory: {MANIFEST} is missing")
    try:
        manifest = json.loads(path.read_text())
        version = manifest.get("format_version")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
        raise AdapterError(f"{path} is not a valid agent manifest: {err}") from err
    if version not in FORMAT_VERSIONS:
        raise AdapterError(
            f"{path}: format_version {version} is not one of {list(FORMAT_VERSIONS)}"
        )
    try:
        specs = module_specs(manifest)
        check_chain({name: spec.get("inputs", []) for name, spec in specs.items()}, f"{path}: ")
        for spec in specs.values():
            spec["base"]["model_config"], spec["adapter"]["file"]
            if not isinstance(spec["base"]["fingerprint"], str):
                raise AdapterError(
                    f"{path}: base.fingerprint must be a string, got {spec['base']['fingerprint']!r}"
                )
            for what, relative in _manifest_paths(spec):
                confined_path(agent_dir, relative, f"{path}: {what}")
            check_base_entry(spec["base"], f"{path}: base")
    except (KeyError, TypeError, AttributeError) as err:
        raise AdapterError(f"{path} is not a valid agent manifest: missing {err}") from err
    return manifest


def _manifest_paths(spec: dict) -> list[tuple[str, object]]:
    """Every path one module's manifest entry names (those that are set)."""
    paths = [("adapter.file", spec["adapter"]["file"])]
    for section, key in (("adapter", "peft_dir"), ("base", "folder")):
        if spec[section].get(key) is not None:
            paths.append((f"{section}.{key}", spec[section][key]))
    return paths


def confined_path(agent_dir: Path, relative: object, what: str) -> Path:
    """``agent_dir / relative``, refused unless it stays inside the agent folder.

    An agent folder is data from elsewhere: a manifest path such as ``../outside.safetensors``,
    an absolute path, or a link out of the folder must not make loading read another file.

    Raises
    ------
    AdapterError
        Naming ``what`` (the manifest and field) and the path.
    """
    if not isinstance(relative, str) or not relative or "\0" in relative:
        raise AdapterError(f"{what} must be a non-empty relative path, got {relative!r}")
    root = Path(agent_dir).resolve()
    target = (root / relative).resolve()
    if Path(relative).is_absolute() or not target.is_relative_to(root):
        raise AdapterError(f"{what} {relative!r} is outside the agent folder {root}")
    return target


def module_specs(manifest: dict) -> dict[str, dict]:
    """``{name: {"base", "adapter", "inputs"}}`` in run order, for either format."""
    if manifest.get("format_version") == FORMAT_VERSION:
        single = {"base": manifest["base"], "adapter": manifest["adapter"], "inputs": []}
        return {manifest.get(MODULE_NAME_KEY, SINGLE_MODULE_NAME): single}
    return {name: manifest["modules"][name] for name in manifest["chain"]}


def load_module(agent_dir: Path, spec: dict, seed: int) -> tuple[AgentModule, AdapterState]:
    """The module of one manifest entry (base from the registry) and its adapter state.

    The adapter is returned, not loaded: modules on the same base config share one
    process-wide AgentModule, so whoever runs a module loads its adapter first.

    Raises
    ------
    AdapterError
        When the adapter file is missing or corrupt, or this machine's base has other weights
        than the base the module was built on.
    """
    cfg = base_config(agent_dir, spec["base"])
    module = agent_module(cfg, seed)
    if module.base.fingerprint != spec["base"]["fingerprint"]:
        raise AdapterError(
            f"base model mismatch: the agent was built on {spec['base']['fingerprint'][:12]}, "
            f"this machine's {cfg.name} is {module.base.fingerprint[:12]}"
        )
    state = load_adapter_file(confined_path(agent_dir, spec["adapter"]["file"], "adapter.file"))
    module.check_state(state)
    return module, state


def load_agent(agent_dir: Path, seed: int) -> tuple[AgentModule, dict]:
    """Rebuild the single-module agent of ``agent_dir`` on this machine: base + adapter.

    Raises
    ------
    AdapterError
        When the manifest or adapter is missing or corrupt, this machine's base has other
        weights than the base the agent was built on, or the agent holds several modules (use
        ``fed_agent.runtime.AgentRuntime`` for those).
    """
    manifest = read_manifest(agent_dir)
    specs = module_specs(manifest)
    if len(specs) != 1:
        raise AdapterError(
            f"{agent_dir} holds {len(specs)} modules {list(specs)}; load it with "
            "fed_agent.runtime.AgentRuntime"
        )
    module, state = load_module(agent_dir, next(iter(specs.values())), seed)
    module.load_adapter(state)
    return module, manifest
