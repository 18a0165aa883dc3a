"""View: item access over a PState (`view[user]["items"][2].set(x)`), the same class everywhere.

A View is a path (canonical steps from the PState root) plus an executor that runs operations
at its end. Each `[...]` is checked against the schema at once, so a wrong step fails where it
is written; operations are handed to the executor, which the engine provides: in a handler it
checks partition ownership and runs the PState layout on the invocation's Txn; in a client it
routes reads to the owning task and refuses writes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NoReturn, Protocol

from headwater.errors import PathError
from headwater.pstate import ops
from headwater.pstate.navigators import Navigator, TransformOp
from headwater.schema import Schema, as_schema
from headwater.schema.types import format_step

__all__ = ["Executor", "View"]


class Executor(Protocol):
    """Runs one operation at the end of a path (the engine provides one per context)."""

    def read(self, steps: tuple, op: str, args: tuple = (), kwargs: dict | None = None) -> Any: ...

    def write(self, steps: tuple, op: str, args: tuple = (), kwargs: dict | None = None) -> None: ...


class View:
    """A path into a PState, with its read operations and, in handlers, its write operations.

    `cluster.pstate(module, name)` returns one for clients (reads routed to the task owning the
    first key; writes raise `ReadOnlyError`); `ctx.pstate(p)` returns one for a handler's task.
    Each `[...]` is a map key, list index or record field, checked against the schema at once:

        funds = cluster.pstate("bank", "funds")
        funds[1].get()                                  # 100
        cluster.pstate("blog", "posts")["p1"]["comments"][0]["author"].get()
    """

    __slots__ = ("_executor", "_name", "_schema", "_steps")

    def __init__(self, executor: Executor, schema: Any, steps: tuple = (), *, name: str = "") -> None:
        self._executor = executor
        self._name = name
        self._schema: Schema = as_schema(schema)
        self._steps: tuple = ()
        view = self
        for step in steps:
            view = view[step]
        self._steps, self._schema = view._steps, view._schema

    def __getitem__(self, step: Any) -> View:
        try:
            canonical, schema = self._schema.child(step, "")
        except PathError:  # again, with the label for the message (formatting it costs more than the step)
            canonical, schema = self._schema.child(step, self._label())
        child = object.__new__(View)
        child._executor, child._name = self._executor, self._name
        child._steps, child._schema = (*self._steps, canonical), schema
        return child

    @property
    def steps(self) -> tuple:
        """Canonical steps from the PState root (map keys, list indexes, field names)."""
        return self._steps

    @property
    def schema(self) -> Schema:
        """The schema at the end of this path."""
        return self._schema

    def _label(self) -> str:
        path = "$"
        for step in self._steps:
            path = format_step(path, step)
        return f"{self._name}{path[1:]}" if self._name else path

    def _read(self, op: str, *args: Any, **kwargs: Any) -> Any:
        if not ops.applies(self._schema, op):
            ops.check_op(self._schema, op, self._label())  # raises, naming the path
        return self._executor.read(self._steps, op, args, kwargs)

    def _write(self, op: str, *args: Any, **kwargs: Any) -> None:
        if not ops.applies(self._schema, op):
            ops.check_op(self._schema, op, self._label())  # raises, naming the path
        self._executor.write(self._steps, op, args, kwargs)

    # --- reads ----------------------------------------------------------------------------------

    def get(self, default: Any = None) -> Any:
        """The value at this path, or `default` if nothing is there."""
        return self._read("get", default)

    def exists(self) -> bool:
        """Whether a value is stored at this path."""
        return self._read("exists")

    def size(self) -> int:
        """Element count of a map, list, set or record (O(1) when subindexed); 0 if absent."""
        return self._read("size")

    def keys(self, start: Any = None, stop: Any = None, *, limit: int | None = None, reverse: bool = False) -> list:
        """Sorted keys of a map (elements of a set) in [start, stop)."""
        return self._read("keys", start, stop, limit=limit, reverse=reverse)

    def values(self, start: Any = None, stop: Any = None, *, limit: int | None = None, reverse: bool = False) -> list:
        """Values of a map (elements of a set) whose keys are in [start, stop), in key order."""
        return self._read("values", start, stop, limit=limit, reverse=reverse)

    def items(self, start: Any = None, stop: Any = None, *, limit: int | None = None, reverse: bool = False) -> list:
        """(key, value) pairs of a map with keys in [start, stop), in key order."""
        return self._read("items", start, stop, limit=limit, reverse=reverse)

    def slice(self, start: int | None = None, stop: int | None = None) -> list:
        """Elements `start` (inclusive) to `stop` (exclusive) of a list, like `list[start:stop]`."""
        return self._read("slice", start, stop)

    def contains(self, element: Any) -> bool:
        """Whether a set holds `element`."""
        return self._read("contains", element)

    def select(self, *navigators: Any) -> list:
        """Every value the path of `navigators` reaches from here (plain values are keys)."""
        view, rest = self._split_path(navigators)
        return view._read("select", *rest)

    def select_one(self, *navigators: Any) -> Any:
        """The one value the path reaches; PathError if it reaches none or several."""
        view, rest = self._split_path(navigators)
        return view._read("select_one", *rest)

    def watch(self, callback: Any = None, *, on_commit: Any = None) -> Any:
        """Subscribe to the value at this path: an `hw.Subscription` with `.value`, then the diffs
        (`hw.diffs`) of every commit that changes it, in commit order. With `callback`, each diff
        is passed to `callback(diff, value)` on a background thread instead of queued; with
        `on_commit`, each commit's diffs together, as `on_commit(diffs, value)`. Clients watch; a
        handler reads its PStates directly."""
        watch = getattr(self._executor, "watch", None)
        if watch is None:
            raise TypeError(f"{self._label()} cannot be watched here: watch() is for clients "
                            "(cluster.pstate(...)); a handler reads its PStates directly")
        return watch(self._steps, callback, on_commit)

    def _split_path(self, navigators: tuple) -> tuple[View, tuple]:
        """Leading plain keys become item access, so the engine can route by the first of them."""
        view = self
        for index, step in enumerate(navigators):
            if isinstance(step, Navigator):
                return view, navigators[index:]
            view = view[step]
        return view, ()

    # --- writes (handlers only) ---------------------------------------------------------------------

    def transform(self, *navigators_and_op: Any) -> None:
        """Change every value the path reaches: the last argument is set_val(v), apply(fn) or REMOVE."""
        if not navigators_and_op or not isinstance(navigators_and_op[-1], TransformOp):
            raise PathError("transform() ends with an operation: hw.set_val(v), hw.apply(fn) or hw.REMOVE")
        view, rest = self._split_path(navigators_and_op[:-1])
        view._write("transform", *rest, navigators_and_op[-1])

    def set(self, value: Any) -> None:
        """Replace the value at this path, creating absent maps and records above it."""
        self._write("set", value)

    def delete(self) -> None:
        """Remove the value at this path (later elements of a list move down); absent is fine."""
        self._write("delete")

    def update(self, fn: Callable[[Any], Any], default: Any = None) -> None:
        """Set the value to `fn(old)`, with `old = default` when absent."""
        self._write("update", fn, default)

    def increment(self, n: Any = 1) -> None:
        """Add `n` to the number at this path; absent counts as 0."""
        self._write("increment", n)

    def append(self, value: Any) -> None:
        """Add `value` at the end of a list (O(1) when subindexed)."""
        self._write("append", value)

    def extend(self, values: Any) -> None:
        """Add each of `values` at the end of a list, in order."""
        self._write("extend", values)

    def insert(self, index: int, value: Any) -> None:
        """Insert like `list.insert` (in a subindexed list, later elements shift: O(n - index))."""
        self._write("insert", index, value)

    def add(self, element: Any) -> None:
        """Add `element` to a set (nothing changes if it is there)."""
        self._write("add", element)

    def discard(self, element: Any) -> None:
        """Remove `element` from a set, if it is there."""
        self._write("discard", element)

    def merge(self, mapping: Mapping) -> None:
        """Set several keys of a map or fields of a record at once."""
        self._write("merge", mapping)

    # --- guards against Python protocols that would mislead ------------------------------------------

    def __iter__(self) -> NoReturn:
        # Without this, Python would iterate by calling view[0], view[1], ... forever.
        raise TypeError(f"a PState view is not iterable; iterate over {self._label()}.keys(), .values() or .items()")

    def __contains__(self, element: Any) -> NoReturn:
        raise TypeError(f"use {self._label()}.contains(x) for sets, or view[key].exists() for maps")

    def __bool__(self) -> NoReturn:
        raise TypeError(f"a PState view has no truth value; use {self._label()}.exists() or .get()")

    def __repr__(self) -> str:
        return f"<View {self._label()}: {self._schema!r}>"
