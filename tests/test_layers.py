"""Layers depend one way: a lower layer never imports a higher one."""

from __future__ import annotations

import ast
from pathlib import Path

import headwater

PACKAGE = Path(headwater.__file__).parent
# Lowest first. A module may import its own layer and any layer before it.
LAYERS = ["errors", "schema", "storage", "pstate", "engine", "cluster", "client", "server", "cli"]
# The in-process cluster hands out the client classes for its deployments.
ALLOWED = {("cluster", "client")}


def layer_of(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("headwater."):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("headwater."))
    return found


def test_lower_layers_never_import_higher_ones():
    problems = []
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE)
        if len(relative.parts) == 1:
            continue  # headwater/__init__.py re-exports everything; errors.py imports nothing
        own = relative.parts[0]
        for target in imports(path):
            other = layer_of(target)
            if other not in LAYERS or own not in LAYERS:
                continue
            dotted = ".".join(target.split(".")[1:3])
            if LAYERS.index(other) > LAYERS.index(own) and (own, dotted) not in ALLOWED and (own, other) not in ALLOWED:
                problems.append(f"{relative} imports {target}")
    assert not problems, "layering broken:\n" + "\n".join(problems)
