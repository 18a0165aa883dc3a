"""PStateLayout: runs a path and an operation against one task's storage.

A path is a tuple of steps from the PState root (map keys, list indexes, record field names).
`paths.locate` walks it through the schema and the stored locations (see `paths`); the
operation then runs there. `select`, `select_one` and `transform` continue from there with
navigators (see `navigators`), which move through the same `paths` functions.
"""

from __future__ import annotations

from typing import Any

import msgspec

from headwater.errors import DefinitionError, PathError, SchemaError
from headwater.pstate import navigators
from headwater.pstate.locations import root_location
from headwater.pstate.paths import Locator, Target, locate, read_at, write_at
from headwater.pstate.txn import Reader, Txn
from headwater.schema import Map, as_schema

__all__ = ["PStateLayout"]


class PStateLayout:
    """The storage layout of one PState on one task: its schema and its key prefix, nothing else."""

    def __init__(self, schema: Any, pstate_id: int, *, top_level_map_partitioned: bool) -> None:
        self.schema = as_schema(schema)
        if top_level_map_partitioned and not isinstance(self.schema, Map):
            raise DefinitionError(f"only a top-level Map can be partitioned by its key, got {self.schema!r}")
        self.pstate_id = pstate_id
        self.top_level_map_partitioned = top_level_map_partitioned
        # The partitioned dimension is always split: a task holds its share of the keys one by one.
        self.root = root_location(self.schema, pstate_id, partitioned=top_level_map_partitioned)
        self._locate = Locator(self.root)

    def read(self, reader: Reader, steps: tuple, op: str, args: tuple = (), kwargs: dict | None = None) -> Any:
        """Run read operation `op` at the end of `steps` (`select`/`select_one`: args are navigators)."""
        try:
            target = self._locate(reader, steps)
            if op == "select":
                return navigators.select(reader, target, args)
            if op == "select_one":
                return _only(navigators.select(reader, target, args), target, args)
            return read_at(reader, target, op, args, kwargs)
        except (msgspec.ValidationError, msgspec.DecodeError) as e:
            raise self._stored_mismatch(e) from None

    def write(self, txn: Txn, steps: tuple, op: str, args: tuple = (), kwargs: dict | None = None) -> None:
        """Run write operation `op` at the end of `steps`; nothing is written if it raises.

        `transform`: args are the navigators followed by the operation (set_val, apply, REMOVE).
        """
        try:
            target = self._locate(txn, steps)
            if op == "transform":
                if not args:
                    raise PathError("transform() needs its navigators and an operation: set_val(v), apply(fn) or "
                                    "REMOVE")
                navigators.transform(txn, target, args[:-1], args[-1])
            else:
                write_at(txn, target, op, args, kwargs)
        except (msgspec.ValidationError, msgspec.DecodeError) as e:
            raise self._stored_mismatch(e) from None

    def _stored_mismatch(self, error: Exception) -> SchemaError:
        """A stored value this schema cannot decode: written under another schema (updates check
        every change, so only data older than that check can get here)."""
        return SchemaError(f"a value stored in this PState does not match its schema {self.schema!r}: {error}. It "
                           "was written by a version of the module with another schema; declare the change with "
                           "hw.migrated(...), or delete the PState's data with update(..., delete=[name])")

    def locate(self, reader: Reader, steps: tuple) -> Target:
        """Check `steps` against the schema and find where they lead (PathError if they do not fit)."""
        return locate(reader, self.root, steps)

    def __repr__(self) -> str:
        return f"PStateLayout({self.schema!r}, pstate_id={self.pstate_id})"


def _only(values: list, target: Target, navs: tuple) -> Any:
    if len(values) != 1:
        path = ", ".join(repr(nav) for nav in navs)
        raise PathError(
            f"select_one({path}) at {target.path} found {len(values)} values, not exactly one; "
            "use select() to get them all, or hw.must(key) to skip absent keys"
        )
    return values[0]
