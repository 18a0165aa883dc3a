"""Targets: where a path of plain steps leads, and running one operation there.

A step is a map key, a list index or a record field name. `step_to` takes one step from a
`Target`: while the target is a split node, the step moves to the element's own storage
location; once the target is a value stored whole (a blob), further steps are kept as `inner`
steps inside that value. `read_at`/`write_at` then run an operation on storage (`stored`) or
on the decoded value (`inline`). Item access and the navigators of `navigators` both move
through these same functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from headwater.errors import PathError
from headwater.pstate import inline, ops, stored
from headwater.pstate.locations import Location, named_on_error
from headwater.pstate.txn import Reader, Txn
from headwater.schema import Schema, encode_value
from headwater.schema.types import List, format_step

__all__ = ["Locator", "Target", "locate", "read_at", "step_to", "write_at"]

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
        return _path(self.location, self.inner)

    @property
    def is_split(self) -> bool:
        """The target is a split node: operations run on storage, element by element."""
        return not self.inner and self.location.split


def step_to(reader: Reader, target: Target, step: Any) -> Target:
    """The target one step further (PathError if the step does not fit the schema)."""
    return _walk(reader, target.location, target.inner, target.schema, (step,))[0]


def locate(reader: Reader, root: Location, steps: tuple) -> Target:
    """The target `steps` lead to from `root` (PathError if they do not fit the schema)."""
    return _walk(reader, root, (), root.schema, steps)[0]


def _walk(reader: Reader, location: Location, inner: tuple, schema: Schema, steps: tuple) -> tuple[Target, bool]:
    """The target, and whether it depends on steps alone (not on stored state: no index from the end)."""
    # Every operation starts here, so the loop is written out: a Target or a helper call per step
    # would cost more than the step itself.
    fixed = True
    for step in steps:
        try:
            canonical, child_schema = schema.child(step, "")
        except PathError:  # again, with the path for the message (formatting it costs more than a step)
            canonical, child_schema = schema.child(step, _path(location, inner))
        if inner or not location.split:
            inner = (*inner, canonical)
        else:
            if isinstance(schema, List) and canonical < 0:  # count from the end, like Python
                canonical += stored.count(reader, location) or 0
                fixed = False
            location = location.child(canonical, child_schema)
        schema = child_schema
    return Target(location, inner, schema), fixed


class Locator:
    """`locate` from one root, remembering the last path it walked.

    A handler usually runs several operations on one view (`exists()`, then `set()`), and a
    view passes the same tuple of steps each time, so the walk is redone only for a new tuple.
    The memory is one tuple, replaced whole, so threads sharing a Locator never see half of it.
    """

    __slots__ = ("_last", "root")

    def __init__(self, root: Location) -> None:
        self.root = root
        self._last: tuple[tuple, Target] = ((), Target(root, (), root.schema))

    def __call__(self, reader: Reader, steps: tuple) -> Target:
        last = self._last
        if last[0] is steps:
            return last[1]
        target, fixed = _walk(reader, self.root, (), self.root.schema, steps)
        if fixed:
            self._last = (steps, target)
        return target


# Operations that `stored` runs the same whether the value at the location is split or not, so a
# target with no inner steps skips decoding the old value (exists, set, delete) or navigating it.
_WHOLE_VALUE_READS = frozenset({"get", "exists"})
_WHOLE_VALUE_WRITES = frozenset({"set", "delete", "update", "increment"})


def read_at(reader: Reader, target: Target, op: str, args: tuple = (), kwargs: dict | None = None) -> Any:
    """Run read operation `op` at `target`."""
    if op not in ops.READ_OPS or not ops.applies(target.schema, op):
        _reject_op(target, op, "changes the PState; call it through write(), not read()")
    kwargs = kwargs or {}
    if not target.inner and (target.location.split or op in _WHOLE_VALUE_READS):
        return stored.READS[op](reader, target.location, *args, **kwargs)
    value = inline.navigate(stored.load(reader, target.location), target.inner)
    if op in _WHOLE_VALUE_READS:  # get and exists cannot fail, so they need no path
        return inline.READS[op](target.schema, value, "", *args, **kwargs)
    return named_on_error(target, _read_inline, op, target.schema, value, args, kwargs)  # reads are pure


def _read_inline(op: str, schema: Schema, value: Any, args: tuple, kwargs: dict, path: str) -> Any:
    return inline.READS[op](schema, value, path, *args, **kwargs)


def write_at(txn: Txn, target: Target, op: str, args: tuple = (), kwargs: dict | None = None) -> None:
    """Run write operation `op` at `target`; nothing is written if it raises."""
    if op not in ops.WRITE_OPS or not ops.applies(target.schema, op):
        _reject_op(target, op, "only reads; call it through read(), not write()")
    if op not in _REMOVING_OPS and target.location.under_split_list:
        stored.require_list_elements(txn, target.location)
    if not target.inner and (target.location.split or op in _WHOLE_VALUE_WRITES):
        stored.WRITES[op](txn, target.location, *args, **(kwargs or {}))
    else:
        _write_inline(txn, target, op, args, kwargs or {})


def _write_inline(txn: Txn, target: Target, op: str, args: tuple, kwargs: dict) -> None:
    """Read-modify-write the blob that holds the target."""
    if op in ops.CALLS_USER_CODE:  # which must run once: name paths up front, not on a second run
        existed, new = _edited_blob(txn, target, op, args, kwargs, target.location.path)
    else:
        existed, new = named_on_error(target.location, _edited_blob, txn, target, op, args, kwargs)
    if new is inline.UNCHANGED:
        return
    if new is inline.ABSENT:
        stored.remove(txn, target.location)
    else:
        stored.write_blob(txn, target.location, new, existed=existed)


def _edited_blob(txn: Txn, target: Target, op: str, args: tuple, kwargs: dict, path: str) -> tuple[bool, Any]:
    """Whether the blob holding the target exists, and its new encoding (or ABSENT or UNCHANGED)."""
    location = target.location
    old = stored.load(txn, location)

    def change(schema: Schema, value: Any, path: str) -> Any:
        return inline.WRITES[op](schema, value, path, *args, **kwargs)

    new = inline.edit(location.schema, old, target.inner, path, change)
    if new is not inline.UNCHANGED and new is not inline.ABSENT:
        new = encode_value(location.schema, new, path)
    return old is not inline.ABSENT, new


def _reject_op(target: Target, op: str, otherwise: str) -> None:
    """Raise PathError for an operation that does not apply at `target` or is of the other kind."""
    ops.check_op(target.schema, op, target.path)  # raises, naming the path, if it does not apply
    raise PathError(f"{op}() {otherwise}")


def _path(location: Location, inner: tuple) -> str:
    path = location.path
    for step in inner:
        path = format_step(path, step)
    return path
