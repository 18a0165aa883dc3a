"""Layers depend one way: a lower layer never imports a higher one."""

from __future__ import annotations

import ast
from pathlib import Path

import headwater

PACKAGE = Path(headwater.__file__).parent
# Lowest first. A module may import its own layer and any layer before it.
LAYERS = ["errors", "schema", "storage", "pstate", "engine", "sources", "client", "cluster", "server", "cli"]
ALLOWED: set[tuple[str, str]] = set()  # (layer, layer or module) pairs let through; none today


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


# The engine is a passive core: concurrency lives in its hosts (headwater.cluster).
ENGINE_FORBIDDEN = {"threading", "queue", "multiprocessing", "concurrent", "ray", "asyncio"}


def _runtime_imports(path: Path) -> set[str]:
    """Every module `path` imports when it runs (at top level or in a function), not under TYPE_CHECKING."""
    tree = ast.parse(path.read_text())
    skipped = {id(node) for guard in ast.walk(tree) if isinstance(guard, ast.If) and "TYPE_CHECKING" in ast.unparse(guard.test)
               for node in ast.walk(guard)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def _module_name(path: Path) -> str:
    parts = ("headwater", *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_the_engine_imports_no_concurrency():
    problems = [f"{path.relative_to(PACKAGE)} imports {name}"
                for path in (PACKAGE / "engine").rglob("*.py")
                for name in _runtime_imports(path) if name.split(".")[0] in ENGINE_FORBIDDEN]
    assert not problems, "the engine must stay passive:\n" + "\n".join(problems)


def test_no_import_cycles_inside_a_layer():
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    edges = {
        name: {target for target in _runtime_imports(path) if target in modules and target != name
               and layer_of(target) == layer_of(name) and not modules[target].name == "__init__.py"}
        for name, path in modules.items()
        if path.name != "__init__.py"
    }
    cycles = []
    for start in edges:  # a depth-first walk from every module: small graph, simple code
        stack = [(start, [start])]
        while stack:
            node, trail = stack.pop()
            for target in edges.get(node, ()):
                if target == start:
                    cycles.append(" -> ".join([*trail, start]))
                elif target not in trail:
                    stack.append((target, [*trail, target]))
    assert not cycles, "import cycles inside a layer:\n" + "\n".join(sorted(set(cycles))[:10])
