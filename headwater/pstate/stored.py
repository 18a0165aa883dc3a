"""Operations on split collections, one storage key per element (see `locations`).

A split node's key holds its element count, so `size()` reads one key, and a range reads one
key per element it returns. Elements that are not split are msgpack blobs; split elements
recurse. Costs: point reads and writes, `append`, `add`, `discard` touch O(1) keys; deleting or
inserting in the middle of a subindexed list shifts every later element (O(n - i), and each
moved element that is itself split is copied with everything below it).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from headwater.errors import PathError, SchemaError
from headwater.pstate import ops
from headwater.pstate.inline import ABSENT
from headwater.pstate.locations import (
    Location,
    decode_count,
    encode_count,
    named_on_error,
)
from headwater.pstate.txn import Reader, Txn
from headwater.schema import Schema, encode_value
from headwater.schema.keys import KeyType, unpack_key
from headwater.schema.types import List, Map, Record, Set
from headwater.schema.values import check_key

__all__ = [
    "READS",
    "WRITES",
    "assemble",
    "count",
    "load",
    "remove",
    "replace",
    "require_list_elements",
    "subtree_writes",
    "write_blob",
]

_SET_MEMBER = b""  # the value of a set element's key: the key alone says it is there


# --- reading ------------------------------------------------------------------------------------


def count(reader: Reader, location: Location) -> int | None:
    """Elements in a split node, or None when it is absent."""
    raw = reader.get(location.key)
    return None if raw is None else decode_count(raw)


def load(reader: Reader, location: Location) -> Any:
    """The whole value at a location (split or not), or ABSENT."""
    raw = reader.get(location.key)
    if raw is None:
        return assemble(reader, location) if location.implicit else ABSENT
    return assemble(reader, location) if location.split else location.schema.decoder.decode(raw)


def assemble(reader: Reader, location: Location) -> Any:
    """The value of a present split node, read element by element."""
    schema = location.schema
    pairs = _elements(reader, location, *location.elements)
    if isinstance(schema, Set):
        return {element for element, _ in pairs}
    if isinstance(schema, List):
        return [value for _, value in pairs]
    value = dict(pairs)
    if isinstance(schema, Record):  # fields are stored by name; give them back in declared order
        return {name: value[name] for name in schema.fields if name in value}
    return value


def _elements(reader: Reader, location: Location, start: bytes, stop: bytes, *, reverse: bool = False,
              limit: int | None = None, values: bool = True) -> Iterator[tuple[Any, Any]]:
    """(step, value) of the elements whose keys are in [start, stop); value None unless `values`."""
    step_of, value_of = _step_decoder(location), _value_decoder(reader, location)
    for key, raw in itertools.islice(reader.iterate(start, stop, reverse=reverse), limit):
        step = step_of(key)
        yield step, value_of(step, raw) if values else None


# Ranges decode many elements of one collection: what depends only on the collection is decided
# once, in these two, rather than per element.

def _step_decoder(location: Location) -> Callable[[bytes], Any]:
    """Element key -> canonical step, for the elements of the split node at `location`."""
    offset, schema = location.step_offset, location.schema
    if isinstance(schema, (Map, Set)) and type(schema.keys).from_item is not KeyType.from_item:
        from_item = schema.keys.from_item
        return lambda key: from_item(unpack_key(key, offset))
    return lambda key: unpack_key(key, offset)  # list indexes, field names, and keys stored as they are


def _value_decoder(reader: Reader, location: Location) -> Callable[[Any, bytes], Any]:
    """(step, stored bytes) -> the element's value, for the elements of the split node at `location`."""
    schema = location.schema
    if isinstance(schema, Set):
        return lambda step, raw: step
    if isinstance(schema, Record):
        return lambda step, raw: _element_value(reader, location, schema.fields[step], step, raw)
    element_schema = schema.value_schema  # type: ignore[attr-defined]
    if not element_schema.split:
        decode = element_schema.decoder.decode
        return lambda step, raw: decode(raw)
    return lambda step, raw: assemble(reader, location.child(step, element_schema))


def _element_value(reader: Reader, location: Location, schema: Schema, step: Any, raw: bytes) -> Any:
    if not schema.split:
        return schema.decoder.decode(raw)
    return assemble(reader, location.child(step, schema))


def _child_schema(schema: Schema, step: Any) -> Schema:
    return schema.fields[step] if isinstance(schema, Record) else schema.value_schema  # type: ignore[attr-defined]


def _get(reader: Reader, location: Location, default: Any = None) -> Any:
    value = load(reader, location)
    return default if value is ABSENT else value


def _exists(reader: Reader, location: Location) -> bool:
    return location.implicit or reader.get(location.key) is not None


def _size(reader: Reader, location: Location) -> int:
    return count(reader, location) or 0


def _range(reader: Reader, location: Location, start: Any, stop: Any, limit: int | None,
           reverse: bool, *, values: bool = True) -> Iterator[tuple[Any, Any]]:
    ops.check_limit(limit)
    schema: Any = location.schema
    low = named_on_error(location, ops.range_bound, schema, start)
    high = named_on_error(location, ops.range_bound, schema, stop)
    first, end = location.elements
    low_key = first if low is None else location.element_key(low)
    high_key = end if high is None else location.element_key(high)
    return _elements(reader, location, low_key, high_key, reverse=reverse, limit=limit, values=values)


def _keys(reader: Reader, location: Location, start: Any = None, stop: Any = None, *,
          limit: int | None = None, reverse: bool = False) -> list:
    return [k for k, _ in _range(reader, location, start, stop, limit, reverse, values=False)]


def _values(reader: Reader, location: Location, start: Any = None, stop: Any = None, *,
            limit: int | None = None, reverse: bool = False) -> list:
    return [v for _, v in _range(reader, location, start, stop, limit, reverse)]


def _items(reader: Reader, location: Location, start: Any = None, stop: Any = None, *,
           limit: int | None = None, reverse: bool = False) -> list:
    return list(_range(reader, location, start, stop, limit, reverse))


def _slice(reader: Reader, location: Location, start: int | None = None, stop: int | None = None) -> list:
    indexes = ops.slice_indexes(_size(reader, location), start, stop)
    if not indexes:
        return []
    low, high = location.element_key(indexes[0]), location.element_key(indexes[-1] + 1)
    return [value for _, value in _elements(reader, location, low, high)]


def _contains(reader: Reader, location: Location, element: Any) -> bool:
    return reader.get(location.element_key(_set_element(location, element))) is not None


def _set_element(location: Location, element: Any) -> Any:
    """The canonical form of an element argument of the set at `location` (SchemaError if it does not fit)."""
    return named_on_error(location, ops.set_element, location.schema, element)


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


# --- the writes every operation is built from ---------------------------------------------------


def subtree_writes(location: Location, value: Any) -> dict[bytes, bytes]:
    """Every key and value that stores `value` at `location`, validated (SchemaError, nothing written)."""
    return named_on_error(location, _subtree_writes, location, value)


def _subtree_writes(location: Location, value: Any, path: str) -> dict[bytes, bytes]:
    """subtree_writes; `path` is the location's path for error messages, or "" for none below either."""
    if not location.split:
        return {location.key: encode_value(location.schema, value, path)}
    children = _split_children(location, value, path)
    writes = {location.key: encode_count(len(children))}
    for step, child_value in children.items():
        if isinstance(location.schema, Set):
            writes[location.element_key(step)] = _SET_MEMBER
        else:
            child = location.child(step, _child_schema(location.schema, step))
            writes.update(_subtree_writes(child, child_value, child.path if path else ""))
    return writes


def _split_children(location: Location, value: Any, path: str) -> dict[Any, Any]:
    """The elements of a value for a split node, by canonical step (duplicates collapse)."""
    schema = location.schema
    if isinstance(schema, Map):
        return ops.merge_entries(schema, _require(Mapping, "a dict", value, location), path)
    if isinstance(schema, Record):
        return ops.merge_entries(schema, _require(Mapping, "a dict of its fields", value, location), path)
    if isinstance(schema, List):
        return dict(enumerate(_require((list, tuple), "a list", value, location)))
    elements = _require((set, frozenset), "a set", value, location)
    return {check_key(schema.keys, element, path, what="element"): None for element in elements}  # type: ignore[attr-defined]


def _require(kind: Any, expected: str, value: Any, location: Location) -> Any:
    if not isinstance(value, kind):
        raise SchemaError(
            f"expected {expected} for {location.schema!r} at {location.path}, got {type(value).__name__} "
            f"{value!r:.100}",
            path=location.path,
        )
    return value


def _clear(txn: Txn, location: Location) -> None:
    txn.delete(location.key)
    if location.split:
        txn.delete_range(*location.region)


def _put(txn: Txn, location: Location, writes: dict[bytes, bytes], existed: bool | None = None) -> None:
    """Replace whatever is at `location` with `writes`; register it with its parent if it is new.

    `existed`: whether `location` holds a value now, when the caller already read it (None: read it).
    """
    if existed is None:
        existed = txn.get(location.key) is not None
    if existed and location.split:
        txn.delete_range(*location.region)
    for key, raw in writes.items():
        txn.put(key, raw)
    if not existed:
        _register(txn, location)


def _register(txn: Txn, location: Location) -> None:
    """Count a new element in its parent, creating the parent (and its parents) when absent."""
    parent = location.parent
    if parent is None:
        return
    size = count(txn, parent)
    txn.put(parent.key, encode_count((size or 0) + 1))
    if size is None:
        _register(txn, parent)


def _set_count(txn: Txn, location: Location, old: int | None, new: int) -> None:
    txn.put(location.key, encode_count(new))
    if old is None:
        _register(txn, location)


def replace(txn: Txn, location: Location, value: Any) -> None:
    """Store `value` at `location`, replacing what was there."""
    if location.split:
        _put(txn, location, subtree_writes(location, value))
    else:
        write_blob(txn, location, named_on_error(location, encode_value, location.schema, value))


def write_blob(txn: Txn, location: Location, data: bytes, *, existed: bool | None = None) -> None:
    """Store an encoded value at a location that is not split (`existed`: as for `_put`)."""
    assert not location.split
    if existed is None:
        existed = txn.get(location.key) is not None
    txn.put(location.key, data)
    if not existed:
        _register(txn, location)


def remove(txn: Txn, location: Location) -> None:
    """Remove the value at `location` (shifting later elements when it is in a split list)."""
    if txn.get(location.key) is None:
        return
    parent = location.parent
    if parent is None:
        _clear(txn, location)
        return
    size = count(txn, parent) or 0
    if isinstance(parent.schema, List):
        for index in range(location.step + 1, size):
            _move(txn, parent, index, index - 1)
        _clear(txn, parent.child(size - 1, location.schema))
    else:
        _clear(txn, location)
    txn.put(parent.key, encode_count(size - 1))


def _move(txn: Txn, parent: Location, source_index: int, target_index: int) -> None:
    """Move one element of a split list, with everything below it, to another index."""
    element_schema = parent.schema.value_schema  # type: ignore[attr-defined]
    source, target = parent.child(source_index, element_schema), parent.child(target_index, element_schema)
    _clear(txn, target)
    txn.put(target.key, txn.get(source.key))  # type: ignore[arg-type]
    if source.split:
        below = list(txn.iterate(*source.region))
        for key, raw in below:
            txn.put(target.base + key[len(source.base):], raw)


# --- operations ---------------------------------------------------------------------------------


def _update(txn: Txn, location: Location, fn: Callable[[Any], Any], default: Any = None) -> None:
    old = load(txn, location)
    replace(txn, location, fn(default if old is ABSENT else old))


def _increment(txn: Txn, location: Location, amount: Any = 1) -> None:
    """Add to the number stored whole at `location` (absent or None counts as 0)."""
    raw = txn.get(location.key)
    current = 0 if raw is None else location.schema.decoder.decode(raw)
    if current is None:
        current = 0
    named_on_error(location, ops.check_increment, amount, current)
    write_blob(txn, location, named_on_error(location, encode_value, location.schema, current + amount),
               existed=raw is not None)


def _append(txn: Txn, location: Location, element: Any) -> None:
    _extend(txn, location, [element])


def _extend(txn: Txn, location: Location, elements: Any) -> None:
    if not isinstance(elements, (list, tuple)):
        raise SchemaError(
            f"extend() needs a list, got {type(elements).__name__} {elements!r:.100} at {location.path}",
            path=location.path,
        )
    size = count(txn, location)
    start = size or 0
    element_schema = location.schema.value_schema  # type: ignore[attr-defined]
    writes: dict[bytes, bytes] = {}
    for offset, element in enumerate(elements):
        writes.update(subtree_writes(location.child(start + offset, element_schema), element))
    for key, raw in writes.items():
        txn.put(key, raw)
    _set_count(txn, location, size, start + len(elements))


def _insert(txn: Txn, location: Location, index: int, element: Any) -> None:
    size = count(txn, location)
    index = ops.list_index_for_insert(size or 0, index)
    element_schema = location.schema.value_schema  # type: ignore[attr-defined]
    target = location.child(index, element_schema)
    writes = subtree_writes(target, element)  # validate before anything moves
    for later in range((size or 0) - 1, index - 1, -1):
        _move(txn, location, later, later + 1)
    _clear(txn, target)
    for key, raw in writes.items():
        txn.put(key, raw)
    _set_count(txn, location, size, (size or 0) + 1)


def _add(txn: Txn, location: Location, element: Any) -> None:
    key = location.element_key(_set_element(location, element))
    if txn.get(key) is not None:
        return
    size = count(txn, location)
    txn.put(key, _SET_MEMBER)
    _set_count(txn, location, size, (size or 0) + 1)


def _discard(txn: Txn, location: Location, element: Any) -> None:
    key = location.element_key(_set_element(location, element))
    if txn.get(key) is None:
        return
    txn.delete(key)
    txn.put(location.key, encode_count(count(txn, location) - 1))  # type: ignore[operator]


def _merge(txn: Txn, location: Location, mapping: Any) -> None:
    schema: Any = location.schema
    entries = named_on_error(location, ops.merge_entries, schema, mapping)
    children = [location.child(step, _child_schema(schema, step)) for step in entries]
    writes = [subtree_writes(child, value) for child, value in zip(children, entries.values(), strict=True)]
    size = count(txn, location)
    added = 0
    for child, child_writes in zip(children, writes, strict=True):
        added += txn.get(child.key) is None
        if child.split:
            txn.delete_range(*child.region)
        for key, raw in child_writes.items():
            txn.put(key, raw)
    _set_count(txn, location, size, (size or 0) + added)


WRITES: dict[str, Callable[..., None]] = {
    "set": replace,
    "delete": remove,
    "update": _update,
    "increment": _increment,
    "append": _append,
    "extend": _extend,
    "insert": _insert,
    "add": _add,
    "discard": _discard,
    "merge": _merge,
}


def require_list_elements(reader: Reader, location: Location) -> None:
    """PathError unless every list element on the way to `location` exists (writes never create them)."""
    while location.under_split_list:  # else no ancestor is a list element
        parent = location.parent
        assert parent is not None
        if isinstance(parent.schema, List) and parent.split and reader.get(location.key) is None:
            size = count(reader, parent) or 0
            raise PathError(
                f"list index {location.step} is out of range for the list of {size} elements at {parent.path}; "
                "add elements with append() or insert()"
            )
        location = parent

