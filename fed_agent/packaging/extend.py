"""Export a run's module into an earlier agent (``agent.extend``): framework-free.

A run with ``agent.extend`` set exports a multi-module agent (format 2): the earlier agent's
modules first, copied unchanged (same names, adapters and ``inputs``), then this run's module,
named ``agent.module_name``, last. The appended module lists no ``inputs``: it was trained on
the plain request prompts, and a module that reads upstream answers must be trained on prompts
chained by ``fed_agent.runtime.chained_prompt`` (see the runtime's chaining contract).

The cloud calls :func:`load_extension` before its first round, so that a bad ``agent.extend``
fails in seconds and loses nothing, and keeps the result in memory until
:func:`export_run_agent` writes the agent after its last round (the earlier directory may be
moved aside in between, e.g. when it lies in this run's own output folder).
:func:`extension_specs` is the cheap part of the check (no model loads) for a launcher.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fed_agent.config.schema import AgentConfig
from fed_agent.models.base import ModelLoadError
from fed_agent.modules.adapter import AdapterError, AdapterState, AgentModule
from fed_agent.packaging.export import (
    MODULE_NAME_KEY,
    SINGLE_MODULE_NAME,
    ModulePart,
    export_agent,
    export_modules,
    load_module,
    module_specs,
    read_manifest,
)

EXTENDS_KEY = "extends"
"""Manifest key of an extended agent: the directory its earlier modules came from."""


class ExtendError(AdapterError):
    """``agent.extend`` names no usable agent, or one this run's module cannot join."""


@dataclass(frozen=True)
class Extension:
    """The earlier agent a run extends: its directory and its modules, loaded and checked."""

    path: Path
    parts: dict[str, ModulePart]
    """The earlier modules in run order, with their adapters and ``inputs`` unchanged."""


def _where(agent: AgentConfig) -> str:
    return f"agent.extend={agent.extend}"


def extension_specs(agent: AgentConfig) -> dict[str, dict]:
    """The module specs of ``agent.extend`` in run order, checked without loading any model.

    Raises
    ------
    ExtendError
        Naming the path: it is not a directory, its manifest is missing or invalid, an adapter
        file is missing, or it already holds a module named ``agent.module_name``.
    """
    path = Path(agent.extend).expanduser()
    if not path.is_dir():
        raise ExtendError(
            f"{_where(agent)}: {path.resolve()} is not a directory (expected an earlier run's "
            "agent folder, e.g. outputs/<run>/agent)"
        )
    try:
        specs = module_specs(read_manifest(path))
    except AdapterError as err:
        raise ExtendError(f"{_where(agent)}: {err}") from err
    if agent.module_name in specs:
        raise ExtendError(
            f"{_where(agent)}: that agent already has a module named {agent.module_name!r} "
            f"(its chain is {list(specs)}); set agent.module_name to another name"
        )
    files = [spec["adapter"]["file"] for spec in specs.values()]
    missing = [file for file in files if not (path / file).is_file()]
    if missing:
        raise ExtendError(f"{_where(agent)}: adapter files {missing} are missing in {path}")
    return specs


def load_extension(agent: AgentConfig, seed: int) -> Extension | None:
    """The earlier agent named by ``agent.extend``, loaded and checked; None when it is empty.

    Every earlier module is rebuilt as ``fed_agent.runtime.AgentRuntime.load`` will rebuild
    the exported agent with this run's ``seed``: base from the registry, fingerprint compared,
    adapter read and checked against the module.

    Raises
    ------
    ExtendError
        Naming the path: for everything :func:`extension_specs` checks, a base that cannot be
        loaded or whose fingerprint differs, and an adapter that is corrupt or does not fit.
    """
    if not agent.extend:
        return None
    specs = extension_specs(agent)
    path = Path(agent.extend).expanduser().resolve()
    parts = {}
    for name, spec in specs.items():
        try:
            module, state = load_module(path, spec, seed)
        except (AdapterError, ModelLoadError, TypeError, ValueError) as err:
            raise ExtendError(f"{_where(agent)}: module {name!r} does not load: {err}") from err
        parts[name] = ModulePart(module, state, tuple(spec.get("inputs", ())))
    return Extension(path, parts)


def export_run_agent(
    out_dir: Path,
    module: AgentModule,
    state: AdapterState,
    info: dict,
    module_name: str = SINGLE_MODULE_NAME,
    extension: Extension | None = None,
    merged: bool = False,
) -> Path:
    """Write a run's agent: format 1 without ``extension``, else the extension + this module.

    Without an extension this is :func:`export_agent` (a ``module_name`` other than ``agent``
    is recorded in the manifest); with one, :func:`export_modules` of the earlier modules and
    then ``module_name`` (no ``inputs``), the earlier directory recorded under ``extends``.
    ``merged`` also writes each module merged into its base (``merged/``, a stock
    ``save_pretrained`` model; ``merged/<name>/`` per module of a multi-module agent).
    """
    if extension is None:
        if module_name != SINGLE_MODULE_NAME:
            info = {**info, MODULE_NAME_KEY: module_name}
        return export_agent(out_dir, module, state, info, merged=merged)
    if module_name in extension.parts:
        raise ExtendError(
            f"{extension.path} already has a module named {module_name!r} "
            f"(its chain is {list(extension.parts)})"
        )
    parts = {**extension.parts, module_name: ModulePart(module, state)}
    return export_modules(out_dir, parts, {**info, EXTENDS_KEY: str(extension.path)}, merged)
