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
    Rule("fed_agent.screening", ("torch", "transformers", "peft", "fed_agent.config",
                                 "fed_agent.models", "fed_agent.modules", "fed_agent.packaging"),
         True, "screening is numpy only and sits below the config"),
    Rule("fed_agent.config", ("transformers", "peft", "fed_agent.models", "fed_agent.modules",
                              "fed_agent.packaging"), True,
         "the config schema loads and validates without a model library"),
    Rule("fed_agent.models", ("fed_agent.modules", "fed_agent.packaging"),
         True, "base models know nothing of the LoRA module built on them"),
    Rule("fed_agent.modules", ("fed_agent.packaging",), True,
         "the module is trained without knowing how an agent is packaged"),
    Rule("strategies.recruiter", ("strategies.contract_strategy", "strategies.reply_judge"), True,
         "the strategy's pieces call down: the recruiter never reaches the strategy or the judge"),
    Rule("strategies.reply_judge", ("strategies.contract_strategy", "strategies.recruiter",
                                    "strategies.contract_book"), True,
         "the reply judge decides verdicts; the strategy books them"),
    Rule("strategies.contract_book", ("strategies.contract_strategy", "strategies.recruiter",
                                      "strategies.reply_judge"), True,
         "the contract book is the bottom of the strategy's pieces"),
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


def package_of(module: str) -> str:
    """``fed_agent.screening.judge`` -> ``fed_agent.screening``; top-level modules are their own."""
    parts = module.split(".")
    return ".".join(parts[:2])


def test_no_import_cycles_among_fed_agent_packages() -> None:
    """The drawing of the tree has no circle: package A reaching B never reaches back to A."""
    full = import_graph()
    graph: dict[str, set[str]] = {}
    for module, deps in full.items():
        if not module.startswith("fed_agent."):
            continue
        own = package_of(module)
        graph.setdefault(own, set()).update(
            package_of(n) for n in deps if n.startswith("fed_agent.") and package_of(n) != own
        )
    cycles = {
        tuple(sorted((package, dep)))
        for package in graph
        for dep in graph[package]
        if package in reachable(dep, graph)
    }
    assert sorted(cycles) == []
