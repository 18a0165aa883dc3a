"""Navigators: Rama-style paths for `select`, `select_one` and `transform`.

A navigator takes one *position* to zero or more positions. Positions are:

- `Target` (from `paths`): a value in the PState, addressable, so transforms can write it;
- `Entry`: one (key, value) pair of a map or record, reached by `ALL` or `FIRST`/`LAST`;
- `Member`: one element of a set;
- `Ranged`: the sorted sub-map or sub-set of a collection in [start, stop), from `range(...)`;
- `Computed`: a value computed on the way (a map key, `SIZE`, `view(fn)`); only a view can be
  written through, and writing it sets the value it was computed from.

A plain value in a path is a key, index or field and moves with `paths.step_to`, exactly as item
access does. `transform` first finds every position, then changes them in reverse order, so
removing several elements of one list never shifts an element still to be changed.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from headwater.errors import PathError, SchemaError
from headwater.pstate.paths import Target, read_at, step_to, write_at
from headwater.pstate.txn import Reader, Txn

__all__ = [
    "ALL",
    "FIRST",
    "LAST",
    "MAP_KEYS",
    "MAP_VALS",
    "REMOVE",
    "SIZE",
    "Navigator",
    "TransformOp",
    "apply",
    "filter",
    "must",
    "nth",
    "range",
    "select",
    "set_val",
    "transform",
    "view",
]


# --- positions ------------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class Entry:
    """One (key, value) pair of the map or record at `collection`."""

    collection: Target
    key: Any


@dataclass(slots=True, eq=False)
class Member:
    """One element of the set at `collection`."""

    collection: Target
    element: Any


@dataclass(slots=True, eq=False)
class Ranged:
    """The elements of the map or set at `collection` with keys in [start, stop), as one value."""

    collection: Target
    start: Any
    stop: Any
    limit: int | None
    reverse: bool

    def keys(self, reader: Reader) -> list:
        kwargs = {"limit": self.limit, "reverse": self.reverse}
        return read_at(reader, self.collection, "keys", (self.start, self.stop), kwargs)


@dataclass(slots=True, eq=False)
class Computed:
    """A value computed on the way; `writeback` is where writing it lands (None: read-only)."""

    value: Any
    what: str  # for messages: "a map key", "SIZE", ...
    writeback: Any = None


Position = Target | Entry | Member | Ranged | Computed


def value_of(reader: Reader, position: Position) -> Any:
    """What `select` returns for a position."""
    if isinstance(position, Target):
        return read_at(reader, position, "get")
    if isinstance(position, Entry):
        return position.key, read_at(reader, step_to(reader, position.collection, position.key), "get")
    if isinstance(position, Member):
        return position.element
    if isinstance(position, Ranged):
        if position.collection.schema.kind == "set":
            return set(position.keys(reader))
        return {key: read_at(reader, step_to(reader, position.collection, key), "get") for key in position.keys(reader)}
    return position.value


def _collection_keys(reader: Reader, target: Target, *, limit: int | None = None, reverse: bool = False) -> list:
    """Keys of a map, elements of a set, fields set in a record, or indexes of a list, in order."""
    kind = target.schema.kind
    if kind in ("map", "set"):
        return read_at(reader, target, "keys", (None, None), {"limit": limit, "reverse": reverse})
    if kind == "record":
        fields: Any = list(read_at(reader, target, "get") or {})
    elif kind == "list":
        fields = builtins.range(read_at(reader, target, "size"))  # sliced lazily: LAST stays O(1)
    else:
        raise PathError(f"{target.path} holds {target.schema!r}, which has no elements to navigate")
    fields = fields[::-1] if reverse else fields
    return list(fields if limit is None else fields[:limit])


def _element(reader: Reader, collection: Target, key: Any) -> Position:
    """The position of one element of a collection target."""
    kind = collection.schema.kind
    if kind == "set":
        return Member(collection, key)
    if kind == "list":
        return step_to(reader, collection, key)
    return Entry(collection, key)


def _elements(reader: Reader, position: Position, *, limit: int | None = None, reverse: bool = False) -> list[Position]:
    """Every element of a collection position, in order (for ALL, FIRST, LAST, nth)."""
    if isinstance(position, Target) and position.schema.kind != "leaf":
        keys = _collection_keys(reader, position, limit=limit, reverse=reverse)
        return [_element(reader, position, key) for key in keys]
    if isinstance(position, Ranged):
        keys = position.keys(reader)
        keys = (keys[::-1] if reverse else keys)[:limit]
        return [_element(reader, position.collection, key) for key in keys]
    if isinstance(position, Entry):
        items: list[Position] = [Computed(position.key, "a map key"),
                                 step_to(reader, position.collection, position.key)]
        items = items[::-1] if reverse else items
        return items[:limit]
    values = _python_elements(value_of(reader, position), reverse)
    computed: list[Position] = [Computed(v, "an element of a computed value") for v in values]
    return computed[:limit]


def _python_elements(value: Any, reverse: bool) -> list:
    if value is None:
        return []
    if isinstance(value, dict):
        elements = list(value.items())
    elif isinstance(value, (set, frozenset)):
        elements = sorted(value)
    elif isinstance(value, (list, tuple)):
        elements = list(value)
    else:
        raise PathError(f"cannot navigate the elements of the {type(value).__name__} value {value!r:.100}")
    return elements[::-1] if reverse else elements


# --- navigators -------------------------------------------------------------------------------------


class Navigator:
    """A path step that leads from one position to zero or more positions."""

    def positions(self, reader: Reader, position: Position) -> list[Position]:
        raise NotImplementedError


class _Key(Navigator):
    """A plain value in a path: a map key, list index or record field (absent: one None result)."""

    def __init__(self, key: Any, *, must_exist: bool = False) -> None:
        self.key, self.must_exist = key, must_exist

    def positions(self, reader: Reader, position: Position) -> list[Position]:
        if isinstance(position, Target):
            target = step_to(reader, position, self.key)
            return [target] if not self.must_exist or read_at(reader, target, "exists") else []
        if isinstance(position, (Member, Ranged)):
            raise PathError(f"cannot step with {self.key!r} into {type(position).__name__.lower()} position")
        pair = _elements(reader, position) if isinstance(position, Entry) else None
        if pair is not None and self.key in (0, 1, -1, -2):
            return [pair[self.key]]
        value: Any = position.value if isinstance(position, Computed) else None
        try:
            return [Computed(value[self.key], "a part of a computed value")]
        except (KeyError, IndexError, TypeError):
            return [] if self.must_exist else [Computed(None, "an absent part of a computed value")]

    def __repr__(self) -> str:
        return f"must({self.key!r})" if self.must_exist else repr(self.key)


class _All(Navigator):
    def positions(self, reader: Reader, position: Position) -> list[Position]:
        return _elements(reader, position)

    def __repr__(self) -> str:
        return "ALL"


class _MapPart(Navigator):
    """MAP_KEYS or MAP_VALS: the keys or the values of a map."""

    def __init__(self, values: bool) -> None:
        self.values = values

    def positions(self, reader: Reader, position: Position) -> list[Position]:
        collection = position.collection if isinstance(position, Ranged) else position
        if not isinstance(collection, Target) or collection.schema.kind not in ("map", "record"):
            raise PathError(f"{self!r} needs a map, got {_describe(position)}")
        entries = _elements(reader, position)
        if self.values:
            return [step_to(reader, collection, entry.key) for entry in entries]  # type: ignore[union-attr]
        return [Computed(entry.key, "a map key") for entry in entries]  # type: ignore[union-attr]

    def __repr__(self) -> str:
        return "MAP_VALS" if self.values else "MAP_KEYS"


class _Nth(Navigator):
    """FIRST, LAST, nth(i): one element of a sequence by position in its order (none if too short)."""

    def __init__(self, index: int, name: str = "") -> None:
        if type(index) is not int:
            raise PathError(f"nth() needs an int index, got {index!r}")
        self.index, self.name = index, name

    def positions(self, reader: Reader, position: Position) -> list[Position]:
        reverse = self.index < 0
        wanted = -self.index - 1 if reverse else self.index
        elements = _elements(reader, position, limit=wanted + 1, reverse=reverse)
        return elements[wanted:wanted + 1]

    def __repr__(self) -> str:
        return self.name or f"nth({self.index})"


class _Range(Navigator):
    def __init__(self, start: Any, stop: Any, limit: int | None, reverse: bool) -> None:
        self.start, self.stop, self.limit, self.reverse = start, stop, limit, reverse

    def positions(self, reader: Reader, position: Position) -> list[Position]:
        if not isinstance(position, Target) or position.schema.kind not in ("map", "set"):
            raise PathError(f"range() needs a map or a set, got {_describe(position)}")
        return [Ranged(position, self.start, self.stop, self.limit, self.reverse)]

    def __repr__(self) -> str:
        return f"range({self.start!r}, {self.stop!r}, limit={self.limit!r}, reverse={self.reverse!r})"


class _Filter(Navigator):
    def __init__(self, predicate: Callable[[Any], bool]) -> None:
        self.predicate = predicate

    def positions(self, reader: Reader, position: Position) -> list[Position]:
        return [position] if self.predicate(value_of(reader, position)) else []

    def __repr__(self) -> str:
        return f"filter({self.predicate!r})"


class _View(Navigator):
    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def positions(self, reader: Reader, position: Position) -> list[Position]:
        return [Computed(self.fn(value_of(reader, position)), f"view({self.fn!r})", writeback=position)]

    def __repr__(self) -> str:
        return f"view({self.fn!r})"


class _Size(Navigator):
    def positions(self, reader: Reader, position: Position) -> list[Position]:
        if isinstance(position, Target):
            return [Computed(read_at(reader, position, "size"), "SIZE")]
        value = value_of(reader, position)
        try:
            return [Computed(0 if value is None else len(value), "SIZE")]
        except TypeError:
            raise PathError(f"SIZE of the {type(value).__name__} value {value!r:.100}: it has no size") from None

    def __repr__(self) -> str:
        return "SIZE"


def _describe(position: Position) -> str:
    if isinstance(position, Target):
        return f"{position.schema!r} at {position.path}"
    return type(position).__name__.lower()


def as_navigator(step: Any) -> Navigator:
    return step if isinstance(step, Navigator) else _Key(step)


def navigate(reader: Reader, start: Target, navigators: tuple) -> list[Position]:
    positions: list[Position] = [start]
    for step in navigators:
        navigator = as_navigator(step)
        positions = [found for position in positions for found in navigator.positions(reader, position)]
    return positions


def select(reader: Reader, start: Target, navigators: tuple) -> list:
    """The values every path through `navigators` reaches, in order."""
    return [value_of(reader, position) for position in navigate(reader, start, navigators)]


# --- transforms -------------------------------------------------------------------------------------


class TransformOp:
    """What a transform does at each position: set_val(v), apply(fn) or REMOVE."""

    removes = False

    def new_value(self, old: Any) -> Any:
        raise NotImplementedError


class _SetVal(TransformOp):
    def __init__(self, value: Any) -> None:
        self.value = value

    def new_value(self, old: Any) -> Any:
        return self.value

    def __repr__(self) -> str:
        return f"set_val({self.value!r})"


class _Apply(TransformOp):
    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def new_value(self, old: Any) -> Any:
        return self.fn(old)

    def __repr__(self) -> str:
        return f"apply({self.fn!r})"


class _Remove(TransformOp):
    removes = True

    def __repr__(self) -> str:
        return "REMOVE"


def transform(txn: Txn, start: Target, navigators: tuple, op: TransformOp) -> None:
    """Change every position `navigators` reach; if anything raises, nothing is changed."""
    if not isinstance(op, TransformOp):
        raise PathError(f"transform() ends with set_val(v), apply(fn) or REMOVE, got {op!r}")
    savepoint = txn.savepoint()
    try:
        # Reverse order: removing list elements from the end never shifts one still to change.
        for position in reversed(navigate(txn, start, navigators)):
            _change(txn, position, op)
    except BaseException:
        txn.rollback(savepoint)
        raise


def _change(txn: Txn, position: Position, op: TransformOp) -> None:
    if isinstance(position, Target):
        if op.removes:
            write_at(txn, position, "delete")
        elif isinstance(op, _SetVal):
            write_at(txn, position, "set", (op.value,))
        else:
            write_at(txn, position, "update", (op.new_value,))
    elif isinstance(position, Entry):
        _change_entry(txn, position, op)
    elif isinstance(position, Member):
        _change_member(txn, position, op)
    elif isinstance(position, Ranged):
        _change_range(txn, position, op)
    elif position.writeback is not None:
        new = None if op.removes else op.new_value(position.value)
        _change(txn, position.writeback, op if op.removes else _SetVal(new))
    else:
        raise PathError(f"cannot transform {position.what}: it is computed from the PState, not stored in it")


def _change_entry(txn: Txn, entry: Entry, op: TransformOp) -> None:
    target = step_to(txn, entry.collection, entry.key)
    if op.removes:
        write_at(txn, target, "delete")
        return
    new = op.new_value((entry.key, read_at(txn, target, "get")))
    if not isinstance(new, tuple) or len(new) != 2:
        raise SchemaError(f"a transform of the map entries at {entry.collection.path} must give (key, value) pairs, "
                          f"got {new!r:.100}", path=entry.collection.path)
    new_target = step_to(txn, entry.collection, new[0])
    if new_target.path != target.path:  # the key changed: move the entry
        write_at(txn, target, "delete")
    write_at(txn, new_target, "set", (new[1],))


def _change_member(txn: Txn, member: Member, op: TransformOp) -> None:
    write_at(txn, member.collection, "discard", (member.element,))
    if not op.removes:
        write_at(txn, member.collection, "add", (op.new_value(member.element),))


def _change_range(txn: Txn, ranged: Ranged, op: TransformOp) -> None:
    collection = ranged.collection
    old = value_of(txn, ranged)
    new = None if op.removes else op.new_value(old)
    expected = (set, frozenset) if collection.schema.kind == "set" else Mapping
    if new is not None and not isinstance(new, expected):
        raise SchemaError(
            f"a transform of a range of {collection.schema!r} at {collection.path} must give a "
            f"{'set' if expected is not Mapping else 'dict'}, got {type(new).__name__} {new!r:.100}",
            path=collection.path,
        )
    for key in reversed(ranged.keys(txn)):
        _change(txn, _element(txn, collection, key), _REMOVE)
    if new is None:
        return
    if collection.schema.kind == "set":
        for element in new:
            write_at(txn, collection, "add", (element,))
    else:
        write_at(txn, collection, "merge", (new,))


# --- the names users write ------------------------------------------------------------------------

ALL: Navigator = _All()
"""Each element of a list or set, and each `(key, value)` pair of a map, in order.

    view.select(hw.ALL)            # [('ann', 3), ('bob', 5)] for a Map(str, int)
"""
MAP_KEYS: Navigator = _MapPart(values=False)
"""Each key of a map, in order: `view.select(hw.MAP_KEYS)`."""
MAP_VALS: Navigator = _MapPart(values=True)
"""Each value of a map, in key order; writable: `ctx.pstate(p)[k].transform(hw.MAP_VALS, hw.apply(f))`."""
FIRST: Navigator = _Nth(0, "FIRST")
"""The first element of a list, set or map in its order (nothing if empty); on a map, its first `(key, value)`."""
LAST: Navigator = _Nth(-1, "LAST")
"""The last element of a list, set or map in its order (nothing if empty); on a map, its last `(key, value)`."""
SIZE: Navigator = _Size()
"""The size of the current value (O(1) on a subindexed collection): `view.select_one(hw.SIZE)`."""
_REMOVE = _Remove()
REMOVE: TransformOp = _REMOVE
"""Transform operation: remove every value the path reaches.

    ctx.pstate(scores)[player].transform(hw.MAP_VALS, hw.filter(lambda s: s < 100), hw.REMOVE)
"""


def nth(index: int) -> Navigator:
    """The element at `index` in the sequence's order (negative: from the end); none if too short.

        view.select(hw.nth(1))         # the second element, as a one-element list
    """
    return _Nth(index)


def must(key: Any) -> Navigator:
    """Like a plain key, but an absent key yields no result instead of None.

        view.select("chess"), view.select(hw.must("chess"))   # ([None], []) when absent
    """
    return _Key(key, must_exist=True)


def filter(predicate: Callable[[Any], bool]) -> Navigator:  # noqa: A001 - the contract's name
    """Keep the current position only if `predicate(value)` is true.

        view.select(hw.MAP_VALS, hw.filter(lambda points: points >= 100))
    """
    return _Filter(predicate)


def view(fn: Callable[[Any], Any]) -> Navigator:
    """Navigate to `fn(value)`; a transform through it sets the value to the transformed result.

        view.select_one("pacman", hw.view(lambda points: points // 100))
    """
    return _View(fn)


def set_val(value: Any) -> TransformOp:
    """Transform operation: set every value the path reaches to `value`.

        ctx.pstate(badges)[player].transform(hw.ALL, hw.set_val("veteran"))
    """
    return _SetVal(value)


def apply(fn: Callable[[Any], Any]) -> TransformOp:
    """Transform operation: replace every value the path reaches with `fn(value)`.

        ctx.pstate(scores)[player].transform(hw.MAP_VALS, hw.apply(lambda points: points // 2))
    """
    return _Apply(fn)


def range(start: Any = None, stop: Any = None, *, limit: int | None = None, reverse: bool = False) -> Navigator:  # noqa: A001
    """The sorted sub-map or sub-set with keys in [start, stop), as one value; follow with ALL for its elements.

    `None` leaves that end open; `limit` and `reverse` work as in `view.keys(...)`.

        view.select(hw.range("b", "q"))              # [{'frogger': 40, 'pacman': 310}]
        view.select(hw.range("b", "q"), hw.MAP_VALS) # [40, 310]
    """
    return _Range(start, stop, limit, reverse)
