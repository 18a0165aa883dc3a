"""Which PStates a topology writes, read from its source at deploy.

A PState is written by topologies of one kind only (stream or microbatch): their consistency
models differ, and mixing them would let a stream's at-least-once replays leak into state that
promises exactly-once. The source of each handler, and of the steps it hops to, is scanned for
write calls on PState views — `ctx.pstate(p)[k].set(v)`, or `x = ctx.pstate(p)[k]` then
`x.increment()` — so mixing is reported at deploy. Writes the scan cannot see (views passed
through helper functions) are caught at run time by `WriterGuard`.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable, Iterable
from typing import Any

from headwater.errors import DefinitionError

__all__ = ["WRITE_OPS", "WriterGuard", "check_writer_kinds", "pstates_written"]

WRITE_OPS = frozenset(
    {"set", "delete", "update", "increment", "append", "extend", "insert", "add", "discard", "merge", "transform"}
)


def _source_tree(fn: Callable[..., Any]) -> ast.AST | None:
    try:
        return ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return None  # no source (e.g. built in a REPL): the run-time guard still applies


def _resolve(fn: Callable[..., Any], node: ast.expr, pstate_names: set[str]) -> str | None:
    """The PState name an argument of ctx.pstate(...) denotes, if it can be known statically."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in pstate_names:
        return node.value
    if isinstance(node, ast.Name):
        closure = inspect.getclosurevars(fn)
        value = {**closure.globals, **closure.nonlocals}.get(node.id)
        name = getattr(value, "name", None)
        if name in pstate_names and hasattr(value, "schema"):
            return name
    return None


def _chain_root(node: ast.expr, fn: Callable[..., Any], aliases: dict[str, str], names: set[str]) -> str | None:
    """Follow `ctx.pstate(p)[a][b]` or `alias[a]` down to the PState it starts from."""
    while isinstance(node, ast.Subscript):
        node = node.value
    if isinstance(node, ast.Name):
        return aliases.get(node.id)
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "pstate"
            and node.args):
        return _resolve(fn, node.args[0], names)
    return None


def pstates_written(fn: Callable[..., Any], names: set[str]) -> tuple[set[str], set[str]]:
    """(PStates `fn` visibly writes, names it refers to that may be steps it hops to)."""
    tree = _source_tree(fn)
    if tree is None:
        return set(), set()
    aliases: dict[str, str] = {}
    written: set[str] = set()
    referenced: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            root = _chain_root(node.value, fn, aliases, names)
            if root is not None:
                aliases[node.targets[0].id] = root
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in WRITE_OPS:
            root = _chain_root(node.func.value, fn, aliases, names)
            if root is not None:
                written.add(root)
        if isinstance(node, ast.Name):
            referenced.add(node.id)
    return written, referenced


def _reachable_steps(fn: Callable[..., Any], steps: dict[str, Any], names: set[str]) -> Iterable[Callable[..., Any]]:
    seen: set[str] = set()
    frontier = [fn]
    while frontier:
        current = frontier.pop()
        yield current
        _, referenced = pstates_written(current, names)
        for name in referenced & set(steps):
            if name not in seen:
                seen.add(name)
                frontier.append(steps[name].fn)


def check_writer_kinds(module: Any) -> dict[str, str]:
    """Map each PState to the kind of topology that writes it; DefinitionError when kinds mix."""
    names = set(module.pstates)
    kinds: dict[str, tuple[str, str]] = {}
    for kind, topologies in (("stream", module.streams), ("microbatch", module.microbatches)):
        for topology in topologies.values():
            for fn in _reachable_steps(topology.fn, module.steps, names):
                for pstate in pstates_written(fn, names)[0]:
                    other = kinds.setdefault(pstate, (kind, topology.name))
                    if other[0] != kind:
                        raise DefinitionError(
                            f"PState {module.name}.{pstate} is written by {other[0]} topology {other[1]!r} and by "
                            f"{kind} topology {topology.name!r}; a PState has writers of one kind only: give each "
                            "kind its own PState, or move both writers to one kind"
                        )
    return {pstate: kind for pstate, (kind, _) in kinds.items()}


class WriterGuard:
    """Catches at run time the mixed writes the source scan could not see."""

    def __init__(self, module_name: str, known: dict[str, str]) -> None:
        self._module = module_name
        self.found = dict(known)  # what the source scan found at deploy: the same in every process
        self._kinds = dict(known)

    def check(self, pstate: str, kind: str) -> None:
        first = self._kinds.setdefault(pstate, kind)
        if first != kind:
            raise DefinitionError(
                f"PState {self._module}.{pstate} is written by {first} topologies, so a {kind} topology may not "
                "write it; give each kind its own PState"
            )
