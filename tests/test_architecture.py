"""Imports flow one way: one table of rules, checked on the source (no imports executed).

Each rule names a layer (a package or module prefix), the modules it must never reach, and
whether the check follows the layer's imports through fed_agent (``transitive``). Imports
inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE_PACKAGES = ("fed_agent", "strategies", "clients")


@dataclass(frozen=True)
class Rule:
    layer: str
    forbidden: tuple[str, ...]
    transitive: bool
    why: str


RULES = (
    Rule("fed_agent", ("flwr", "strategies", "clients"), False, "the core is framework-free"),
    Rule("clients", ("strategies",), False, "the two Flower apps never import each other"),
    Rule("strategies", ("clients",), False, "the two Flower apps never import each other"),
    Rule("fed_agent.rl", ("fed_agent.contracts", "fed_agent.designer"), True,
         "rl knows nothing of contracts; only the designer joins them"),
    Rule("fed_agent.contracts", ("torch", "flwr", "transformers", "peft", "fed_agent.rl"), True,
         "the contract model is numpy/scipy only"),
    Rule("fed_agent.commands.contract", ("torch", "flwr"), True,
         "`fed-agent contract` starts without torch"),
)  # fmt: skip


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_modules() -> dict[str, Path]:
    """Every module of the project's packages, by dotted name."""
    return {
        module_name(p): p
        for package in SOURCE_PACKAGES
        for p in sorted((ROOT / package).rglob("*.py"))
    }


def imported_modules(path: Path, known: set[str] = frozenset()) -> set[str]:
    """Every module a file imports (absolute names; ``from a import b`` is ``a.b`` when that
    is a known module, else ``a``)."""
    names: set[str] = set()
    package = ""
    if path.is_relative_to(ROOT):
        own = module_name(path)
        package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known)
    return names


def violates(name: str, forbidden: tuple[str, ...]) -> bool:
    return any(name == f or name.startswith(f + ".") for f in forbidden)


def import_graph() -> dict[str, set[str]]:
    """Project module -> the project modules it imports."""
    modules = source_modules()
    known = set(modules)
    return {name: imported_modules(path, known) for name, path in modules.items()}


def reachable(start: str, graph: dict[str, set[str]]) -> set[str]:
    """Every import reached from ``start`` through project modules (start included)."""
    seen, stack = set(), [start]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        stack.extend(graph.get(name, ()))
    return seen


@pytest.mark.parametrize("rule", RULES, ids=lambda r: f"{r.layer}-never-imports")
def test_layer_never_imports_what_its_rule_forbids(rule: Rule) -> None:
    graph = import_graph()
    layer = [m for m in graph if m == rule.layer or m.startswith(rule.layer + ".")]
    assert layer, f"no modules under {rule.layer}"
    offenders = {}
    for module in layer:
        names = reachable(module, graph) if rule.transitive else graph[module]
        bad = sorted(n for n in names if violates(n, rule.forbidden))
        if bad:
            offenders[module] = bad
    assert offenders == {}, rule.why


def test_no_import_cycles_among_fed_agent_modules() -> None:
    full = import_graph()
    graph = {
        m: {n for n in deps if n in full and n.startswith("fed_agent") and n != m}
        for m, deps in full.items()
        if m.startswith("fed_agent")
    }
    # a package's __init__ re-exporting its own modules is not a cycle of those modules
    for m in graph:
        graph[m] = {n for n in graph[m] if not m.startswith(n + ".")}
    cycles = set()
    for module in graph:
        for dep in graph[module]:
            if module in reachable(dep, graph):
                cycles.add(tuple(sorted((module, dep))))
    assert sorted(cycles) == []


def test_checker_catches_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import flwr.app\nfrom flwr.serverapp import Grid\n")
    assert {n for n in imported_modules(bad) if violates(n, ("flwr",))} == {
        "flwr.app",
        "flwr.serverapp",
    }
