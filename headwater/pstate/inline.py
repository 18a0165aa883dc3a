"""Operations on values held whole in Python (a value stored as one msgpack blob, or part of one).

Reads take the value at the path (or ABSENT) and answer from it. Writes return the new value,
ABSENT to remove it, or UNCHANGED when nothing needs writing. `edit` applies a write at the end
of a path of steps inside a value, creating absent maps and records on the way.
The split layout (`stored`) implements the same operations on storage; a property test holds
the two to identical results.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from headwater.errors import PathError, SchemaError
from headwater.pstate import ops
from headwater.schema import Schema
from headwater.schema.types import Leaf, List, Map, Set, format_step

__all__ = ["ABSENT", "READS", "UNCHANGED", "WRITES", "edit", "navigate"]


class _Marker:
    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


ABSENT: Any = _Marker("ABSENT")  # nothing stored at the path
UNCHANGED: Any = _Marker("UNCHANGED")  # a write that changes nothing (deleting what is absent)

Change = Callable[[Schema, Any, str], Any]


# --- navigating inside a value ------------------------------------------------------------------


def navigate(value: Any, steps: tuple) -> Any:
    """The value reached by canonical `steps` from `value`, or ABSENT."""
    for step in steps:
        if type(value) is dict:  # records and maps, most steps: skip the call
            value = value.get(step, ABSENT)
        elif value is ABSENT:
            return ABSENT
        else:
            value = child_value(value, step)
    return value


def child_value(value: Any, step: Any) -> Any:
    if isinstance(value, dict):
        return value.get(step, ABSENT)
    if isinstance(value, list) and type(step) is int:
        return value[step] if -len(value) <= step < len(value) else ABSENT
    return ABSENT  # stepping into a scalar held under Any finds nothing


def edit(schema: Schema, value: Any, steps: tuple, path: str, change: Change) -> Any:
    """Apply `change` at the end of `steps` inside `value`; return the new value (or ABSENT/UNCHANGED)."""
    if not steps:
        return change(schema, value, path)
    step, rest = steps[0], steps[1:]
    _, child_schema = schema.child(step, path)
    child = ABSENT if value is ABSENT else child_value(value, step)
    # An empty path means the caller wants no names (see `locations.named_on_error`): skip formatting.
    new_child = edit(child_schema, child, rest, format_step(path, step) if path else path, change)
    if new_child is UNCHANGED:
        return UNCHANGED
    container = _container(schema, value, path)
    if new_child is ABSENT:
        _remove(container, step)
    else:
        _assign(container, step, new_child, path)
    return container


def _container(schema: Schema, value: Any, path: str) -> Any:
    if value is ABSENT:
        return [] if isinstance(schema, List) else {}  # writing below an absent map or record creates it
    if not isinstance(value, (dict, list)):
        raise PathError(f"cannot step into the {type(value).__name__} value {value!r:.100} at {path}")
    return value


def _remove(container: Any, step: Any) -> None:
    if isinstance(container, dict):
        container.pop(step, None)
    elif -len(container) <= step < len(container):
        del container[step]


def _assign(container: Any, step: Any, child: Any, path: str) -> None:
    if isinstance(container, dict):
        container[step] = child
    elif type(step) is int and -len(container) <= step < len(container):
        container[step] = child
    else:
        raise PathError(
            f"list index {step!r} is out of range for the list of {len(container)} elements at {path}; "
            "add elements with append() or insert()"
        )


# --- reads --------------------------------------------------------------------------------------


def _get(schema: Schema, value: Any, path: str, default: Any = None) -> Any:
    return default if value is ABSENT else value


def _exists(schema: Schema, value: Any, path: str) -> bool:
    return value is not ABSENT


def _size(schema: Schema, value: Any, path: str) -> int:
    if value is ABSENT:
        return 0
    try:
        return len(value)
    except TypeError:
        raise PathError(f"size() of the {type(value).__name__} value at {path}: it has no size") from None


def _pairs(schema: Map | Set, value: Any, path: str, start: Any, stop: Any, limit: int | None, reverse: bool) -> list:
    """(key, value) pairs of a map or set (element, element) in [start, stop), in key order."""
    ops.check_limit(limit)
    low, high = ops.range_bound(schema, start, path), ops.range_bound(schema, stop, path)
    if value is ABSENT:
        return []
    sort_key = schema.keys.sort_key
    if isinstance(schema, Set):
        pairs = [(element, element) for element in sorted(value, key=sort_key)]
    else:
        pairs = list(value.items())  # stored maps keep their keys in storage order
    low_key = None if low is None else sort_key(low)
    high_key = None if high is None else sort_key(high)
    pairs = [
        (k, v) for k, v in pairs
        if (low_key is None or sort_key(k) >= low_key) and (high_key is None or sort_key(k) < high_key)
    ]
    if reverse:
        pairs.reverse()
    return pairs if limit is None else pairs[:limit]


def _keys(schema: Any, value: Any, path: str, start: Any = None, stop: Any = None, *,
          limit: int | None = None, reverse: bool = False) -> list:
    return [k for k, _ in _pairs(schema, value, path, start, stop, limit, reverse)]


def _values(schema: Any, value: Any, path: str, start: Any = None, stop: Any = None, *,
            limit: int | None = None, reverse: bool = False) -> list:
    return [v for _, v in _pairs(schema, value, path, start, stop, limit, reverse)]


def _items(schema: Any, value: Any, path: str, start: Any = None, stop: Any = None, *,
           limit: int | None = None, reverse: bool = False) -> list:
    return _pairs(schema, value, path, start, stop, limit, reverse)


def _slice(schema: Schema, value: Any, path: str, start: int | None = None, stop: int | None = None) -> list:
    indexes = ops.slice_indexes(0 if value is ABSENT else len(value), start, stop)
    return [value[i] for i in indexes]


def _contains(schema: Set, value: Any, path: str, element: Any) -> bool:
    element = ops.set_element(schema, element, path)
    return value is not ABSENT and element in value


READS: dict[str, Callable[..., Any]] = {
    "get": _get,
    "exists": _exists,
    "size": _size,
    "keys": _keys,
    "values": _values,
    "items": _items,
    "slice": _slice,
    "contains": _contains,
}


# --- writes -------------------------------------------------------------------------------------


def _set(schema: Schema, value: Any, path: str, new: Any) -> Any:
    return new


def _delete(schema: Schema, value: Any, path: str) -> Any:
    return UNCHANGED if value is ABSENT else ABSENT


def _update(schema: Schema, value: Any, path: str, fn: Callable[[Any], Any], default: Any = None) -> Any:
    return fn(default if value is ABSENT else value)


def _increment(schema: Leaf, value: Any, path: str, amount: Any = 1) -> Any:
    current = 0 if value is ABSENT or value is None else value
    ops.check_increment(amount, current, path)
    return current + amount


def _append(schema: List, value: Any, path: str, element: Any) -> list:
    return [*([] if value is ABSENT else value), element]


def _extend(schema: List, value: Any, path: str, elements: Any) -> list:
    if not isinstance(elements, (list, tuple)):
        raise SchemaError(f"extend() needs a list, got {type(elements).__name__} {elements!r:.100} at {path}",
                          path=path)
    return [*([] if value is ABSENT else value), *elements]


def _insert(schema: List, value: Any, path: str, index: int, element: Any) -> list:
    result = [] if value is ABSENT else list(value)
    result.insert(ops.list_index_for_insert(len(result), index), element)
    return result


def _add(schema: Set, value: Any, path: str, element: Any) -> Any:
    element = ops.set_element(schema, element, path)
    if value is not ABSENT and element in value:
        return UNCHANGED
    return {*([] if value is ABSENT else value), element}


def _discard(schema: Set, value: Any, path: str, element: Any) -> Any:
    element = ops.set_element(schema, element, path)
    if value is ABSENT or element not in value:
        return UNCHANGED
    return value - {element}


def _merge(schema: Any, value: Any, path: str, mapping: Any) -> dict:
    entries = ops.merge_entries(schema, mapping, path)
    return {**({} if value is ABSENT else value), **entries}


WRITES: dict[str, Callable[..., Any]] = {
    "set": _set,
    "delete": _delete,
    "update": _update,
    "increment": _increment,
    "append": _append,
    "extend": _extend,
    "insert": _insert,
    "add": _add,
    "discard": _discard,
    "merge": _merge,
}
