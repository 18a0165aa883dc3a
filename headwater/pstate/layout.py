"""PStateLayout: runs a path and an operation against one task's storage.

A path is a tuple of steps from the PState root (map keys, list indexes, record field names).
`locate` walks it through the schema and the stored locations: while the node it stands on is
split, each step moves to the element's own location; once it reaches a node stored whole (a
blob), the remaining steps are navigated inside the decoded value. Operations then run on
storage (`stored`) or on the value (`inline`); both give the same results.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from headwater.errors import DefinitionError, PathError
from headwater.pstate import inline, ops, stored
from headwater.pstate.locations import Location, root_location
from headwater.pstate.txn import Reader, Txn
from headwater.schema import Map, Schema, as_schema, encode_value
from headwater.schema.types import List, format_step

__all__ = ["PStateLayout", "Target"]

# Writes that never create anything, so they need no existing list element to land in.
_REMOVING_OPS = frozenset({"delete", "discard"})


@dataclass(frozen=True, slots=True)
class Target:
    """Where a path ends: a stored location, plus the steps left to take inside its value."""

    location: Location
    inner: tuple  # canonical steps inside the value stored at `location`; () if it is the target
    schema: Schema  # schema at the end of the path
    path: str  # e.g. "$[42]['items'][0]"

    @property
    def is_split(self) -> bool:
        """The path ends on a split node, so the operation runs on storage element by element."""
        return not self.inner and self.location.split


class PStateLayout:
    """The storage layout of one PState on one task: its schema and its key prefix, nothing else."""

    def __init__(self, schema: Any, pstate_id: int, *, top_level_map_partitioned: bool) -> None:
        self.schema = as_schema(schema)
        if top_level_map_partitioned and not isinstance(self.schema, Map):
            raise DefinitionError(f"only a top-level Map can be partitioned by its key, got {self.schema!r}")
        self.pstate_id = pstate_id
        self.top_level_map_partitioned = top_level_map_partitioned
        # The partitioned dimension is always split: a task holds its share of the keys one by one.
        split = self.schema.split or top_level_map_partitioned
        self.root = root_location(self.schema, pstate_id, split=split)

    def read(self, reader: Reader, steps: tuple, op: str, args: tuple = (), kwargs: dict | None = None) -> Any:
        """Run read operation `op` at the end of `steps`."""
        target = self.locate(reader, steps)
        ops.check_op(target.schema, op, target.path)
        if op not in ops.READ_OPS:
            raise PathError(f"{op}() changes the PState; call it through write(), not read()")
        if target.is_split:
            if target.location is self.root and self.top_level_map_partitioned and op in ("get", "exists"):
                return self._read_partitioned_root(reader, op)
            return stored.READS[op](reader, target.location, *args, **(kwargs or {}))
        value = inline.navigate(stored.load(reader, target.location), target.inner)
        return inline.READS[op](target.schema, value, target.path, *args, **(kwargs or {}))

    def _read_partitioned_root(self, reader: Reader, op: str) -> Any:
        # A task's share of a partitioned map always exists (it may be empty): it is the
        # PState itself, not a value someone set.
        return True if op == "exists" else stored.assemble(reader, self.root)

    def write(self, txn: Txn, steps: tuple, op: str, args: tuple = (), kwargs: dict | None = None) -> None:
        """Run write operation `op` at the end of `steps`; nothing is written if it raises."""
        target = self.locate(txn, steps)
        ops.check_op(target.schema, op, target.path)
        if op not in ops.WRITE_OPS:
            raise PathError(f"{op}() only reads; call it through read(), not write()")
        if op not in _REMOVING_OPS:
            stored.require_list_elements(txn, target.location)
        if target.is_split:
            stored.WRITES[op](txn, target.location, *args, **(kwargs or {}))
        else:
            self._write_inline(txn, target, op, args, kwargs or {})

    def _write_inline(self, txn: Txn, target: Target, op: str, args: tuple, kwargs: dict) -> None:
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

    def locate(self, reader: Reader, steps: tuple) -> Target:
        """Check `steps` against the schema and find where they lead (PathError if they do not fit)."""
        location = self.root
        index = 0
        while index < len(steps) and location.split:
            step, schema = location.schema.child(steps[index], location.path)
            if isinstance(location.schema, List) and step < 0:  # count from the end, like Python
                step += stored.count(reader, location) or 0
            location = location.child(step, schema)
            index += 1
        schema, path, inner = location.schema, location.path, []
        for raw_step in steps[index:]:
            step, schema_below = schema.child(raw_step, path)
            inner.append(step)
            path, schema = format_step(path, step), schema_below
        return Target(location, tuple(inner), schema, path)

    def __repr__(self) -> str:
        return f"PStateLayout({self.schema!r}, pstate_id={self.pstate_id})"
