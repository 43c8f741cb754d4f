"""Imports flow one way: fed_agent is framework-free; contracts and rl do not know each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FORBIDDEN = {
    "fed_agent": {"flwr", "strategies", "clients"},
    "fed_agent/contracts": {"torch", "flwr", "fed_agent.rl", "transformers", "peft"},
    "fed_agent/rl": {"fed_agent.contracts", "flwr", "fed_agent.designer"},
}


def imported_modules(path: Path) -> set[str]:
    """Every module name imported by a Python file (absolute names)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def violates(name: str, forbidden: set[str]) -> bool:
    return any(name == f or name.startswith(f + ".") for f in forbidden)


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_does_not_import_forbidden_layers(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no python files under {package}"
    offenders = {
        str(f.relative_to(ROOT)): sorted(
            n for n in imported_modules(f) if violates(n, FORBIDDEN[package])
        )
        for f in files
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_checker_catches_a_forbidden_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import flwr.app\nfrom flwr.serverapp import Grid\n")
    assert {n for n in imported_modules(bad) if violates(n, {"flwr"})} == {
        "flwr.app",
        "flwr.serverapp",
    }
