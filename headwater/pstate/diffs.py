"""Diffs: what changed in a watched PState value, element by element (`hw.diffs`).

A subscription (`view.watch()`) first has the current value at its path, then receives the
changes of each committed write batch that touched it, as diffs. Each diff names where it applies
with a `path` relative to the watched path (a tuple of map keys, record fields and list indexes;
`()` is the watched value itself):

- `Put(path, value)`: the value at `path` is now `value` (set, or replaced whole);
- `Remove(path)`: the map entry or record field at `path` is gone;
- `Add(path, element)` / `Discard(path, element)`: the set at `path` gained / lost `element`;
- `Append(path, values)`: the list at `path` grew by `values` at its end;
- `Truncate(path, length)`: the list at `path` now has its first `length` elements;
- `Resync(value)`: start again from `value` (after a gap: a slow subscriber, an update, a
  reconnect).

A change to one element of a map, set or list is a diff for that element, never a resend of
the collection. Applying a commit's diffs in order to the value before it gives the value after
it: `apply(value, diff)` does exactly that, and the property tests check it against `get()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Add", "Append", "Diff", "Discard", "Put", "Remove", "Resync", "Truncate", "apply", "diff"]


class Diff:
    """A change to a watched value (one of the classes below)."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Put(Diff):
    path: tuple
    value: Any


@dataclass(frozen=True, slots=True)
class Remove(Diff):
    path: tuple


@dataclass(frozen=True, slots=True)
class Add(Diff):
    path: tuple
    element: Any


@dataclass(frozen=True, slots=True)
class Discard(Diff):
    path: tuple
    element: Any


@dataclass(frozen=True, slots=True)
class Append(Diff):
    path: tuple
    values: list


@dataclass(frozen=True, slots=True)
class Truncate(Diff):
    path: tuple
    length: int


@dataclass(frozen=True, slots=True)
class Resync(Diff):
    value: Any


def diff(old: Any, new: Any, path: tuple = ()) -> list[Diff]:
    """The diffs that turn `old` into `new` (None: no value), finest where both are collections."""
    if old == new and type(old) is type(new):
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        found: list[Diff] = [Remove((*path, key)) for key in old if key not in new]
        for key, value in new.items():
            if key not in old:
                found.append(Put((*path, key), value))
            else:
                found += diff(old[key], value, (*path, key))
        return found
    if isinstance(old, (set, frozenset)) and isinstance(new, (set, frozenset)):
        return [*(Discard(path, e) for e in _sorted(old - new)), *(Add(path, e) for e in _sorted(new - old))]
    if isinstance(old, list) and isinstance(new, list):
        found = []
        for index in range(min(len(old), len(new))):
            found += diff(old[index], new[index], (*path, index))
        if len(new) > len(old):
            found.append(Append(path, new[len(old):]))
        elif len(new) < len(old):
            found.append(Truncate(path, len(new)))
        return found
    return [Put(path, new)]


def apply(value: Any, change: Diff) -> Any:
    """`value` with `change` applied; collections are changed in place, and the result returned."""
    if isinstance(change, Resync):
        return change.value
    path = change.path  # type: ignore[attr-defined]
    if isinstance(change, Put) and not path:
        return change.value
    if isinstance(change, (Put, Remove)):
        parent = _at(value, path[:-1])
        if isinstance(change, Put):
            parent[path[-1]] = change.value  # a map entry, a record field or a list element
        else:
            del parent[path[-1]]
        return value
    target = _at(value, path)
    if isinstance(change, Add):
        target.add(change.element)
    elif isinstance(change, Discard):
        target.discard(change.element)
    elif isinstance(change, Append):
        target.extend(change.values)
    elif isinstance(change, Truncate):
        del target[change.length:]
    else:
        raise TypeError(f"not a diff: {change!r}")
    return value


def _at(value: Any, path: tuple) -> Any:
    for step in path:
        value = value[step]
    return value


def _sorted(elements: Any) -> list:
    try:
        return sorted(elements)
    except TypeError:  # elements of mixed types: any order is correct
        return list(elements)
