"""Targets: where a path of plain steps leads, and running one operation there.

A step is a map key, a list index or a record field name. `step_to` takes one step from a
`Target`: while the target is a split node, the step moves to the element's own storage
location; once the target is a value stored whole (a blob), further steps are kept as `inner`
steps inside that value. `read_at`/`write_at` then run an operation on storage (`stored`) or
on the decoded value (`inline`). Item access and the navigators of `navigators` both move
through these same functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from headwater.errors import PathError
from headwater.pstate import inline, ops, stored
from headwater.pstate.locations import Location
from headwater.pstate.txn import Reader, Txn
from headwater.schema import Schema, encode_value
from headwater.schema.types import List, format_step

__all__ = ["Target", "locate", "read_at", "step_to", "write_at"]

# Writes that never create anything, so they need no existing list element to land in.
_REMOVING_OPS = frozenset({"delete", "discard"})


@dataclass(slots=True, eq=False)  # not frozen: frozen dataclasses construct slowly, and reads make many
class Target:
    """A stored location, plus the canonical steps left to take inside the value stored there."""

    location: Location
    inner: tuple  # () when the location itself is the target
    schema: Schema  # schema at the target

    @property
    def path(self) -> str:
        """E.g. "$[42]['items'][0]", for messages."""
        path = self.location.path
        for step in self.inner:
            path = format_step(path, step)
        return path

    @property
    def is_split(self) -> bool:
        """The target is a split node: operations run on storage, element by element."""
        return not self.inner and self.location.split


def step_to(reader: Reader, target: Target, step: Any) -> Target:
    """The target one step further (PathError if the step does not fit the schema)."""
    canonical, schema = _step_into(target.schema, step, lambda: target.path)
    if target.inner or not target.location.split:
        return Target(target.location, (*target.inner, canonical), schema)
    if isinstance(target.schema, List) and canonical < 0:  # count from the end, like Python
        canonical += stored.count(reader, target.location) or 0
    return Target(target.location.child(canonical, schema), (), schema)


def locate(reader: Reader, root: Location, steps: tuple) -> Target:
    target = Target(root, (), root.schema)
    for step in steps:
        target = step_to(reader, target, step)
    return target


def read_at(reader: Reader, target: Target, op: str, args: tuple = (), kwargs: dict | None = None) -> Any:
    """Run read operation `op` at `target`."""
    _check_op(target, op, ops.READ_OPS, "changes the PState; call it through write(), not read()")
    if target.is_split:
        return stored.READS[op](reader, target.location, *args, **(kwargs or {}))
    value = inline.navigate(stored.load(reader, target.location), target.inner)
    return inline.READS[op](target.schema, value, target.path, *args, **(kwargs or {}))


def write_at(txn: Txn, target: Target, op: str, args: tuple = (), kwargs: dict | None = None) -> None:
    """Run write operation `op` at `target`; nothing is written if it raises."""
    _check_op(target, op, ops.WRITE_OPS, "only reads; call it through read(), not write()")
    if op not in _REMOVING_OPS:
        stored.require_list_elements(txn, target.location)
    if target.is_split:
        stored.WRITES[op](txn, target.location, *args, **(kwargs or {}))
    else:
        _write_inline(txn, target, op, args, kwargs or {})


def _write_inline(txn: Txn, target: Target, op: str, args: tuple, kwargs: dict) -> None:
    """Read-modify-write the blob that holds the target."""
    location = target.location
    old = stored.load(txn, location)

    def change(schema: Schema, value: Any, path: str) -> Any:
        return inline.WRITES[op](schema, value, path, *args, **kwargs)

    new = inline.edit(location.schema, old, target.inner, location.path, change)
    if new is inline.UNCHANGED:
        return
    if new is inline.ABSENT:
        stored.remove(txn, location)
    else:
        stored.write_blob(txn, location, encode_value(location.schema, new, location.path))


def _check_op(target: Target, op: str, allowed: frozenset, otherwise: str) -> None:
    if not ops.applies(target.schema, op):
        ops.check_op(target.schema, op, target.path)  # raises, naming the path
    if op not in allowed:
        raise PathError(f"{op}() {otherwise}")


def _step_into(schema: Schema, step: Any, path: Callable[[], str]) -> tuple[Any, Schema]:
    """`schema.child(step, ...)`, building the path for the error message only if there is one."""
    try:
        return schema.child(step, "")
    except PathError:
        pass
    return schema.child(step, path())
