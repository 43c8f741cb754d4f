"""fed_agent.rl knows nothing of contracts or Flower: torch, numpy, itself and the seeding
helpers shared by the whole project."""

from __future__ import annotations

import ast
from pathlib import Path

RL_DIR = Path(__file__).resolve().parents[2] / "fed_agent" / "rl"
ALLOWED_ROOTS = {
    "__future__",
    "torch",
    "numpy",
    "collections",
    "dataclasses",
    "math",
    "copy",
    "json",
    "pathlib",
    "random",
    "typing",
    "zipfile",
}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_rl_imports_only_torch_numpy_stdlib_and_itself() -> None:
    for path in sorted(RL_DIR.glob("*.py")):
        for name in imported_modules(path):
            if name.startswith("fed_agent."):
                shared = name == "fed_agent.seeding"
                assert shared or name.startswith("fed_agent.rl"), f"{path.name} imports {name}"
            else:
                assert name.split(".")[0] in ALLOWED_ROOTS, f"{path.name} imports {name}"
