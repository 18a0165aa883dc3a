"""The operations a path can end with (`get`, `set`, `increment`, ...), the schemas they apply to, their arguments.

Both layouts — values stored whole (`inline`) and split collections (`stored`) — implement every
operation; this module holds what they share, so that both check arguments the same way.
"""

from __future__ import annotations

import decimal
from collections.abc import Mapping
from typing import Any

from headwater.errors import PathError, SchemaError
from headwater.schema import Schema
from headwater.schema.keys import KeyMismatch
from headwater.schema.types import Leaf, Map, Record, Set
from headwater.schema.values import check_fields, check_key

__all__ = [
    "CALLS_USER_CODE",
    "READ_OPS",
    "applies",
    "WRITE_OPS",
    "check_increment",
    "check_limit",
    "check_op",
    "list_index_for_insert",
    "merge_entries",
    "range_bound",
    "set_element",
    "slice_indexes",
]

READ_OPS = frozenset({"get", "exists", "size", "keys", "items", "values", "slice", "contains", "select", "select_one"})
WRITE_OPS = frozenset(
    {"set", "delete", "update", "increment", "append", "extend", "insert", "add", "discard", "merge", "transform"}
)
# Writes that run the caller's code (update's function), which must run exactly once.
CALLS_USER_CODE = frozenset({"update"})

# Operations that apply to some kinds of schema only; the rest apply to every kind.
_KINDS = {
    "keys": ("map", "set"),
    "values": ("map", "set"),
    "items": ("map",),
    "slice": ("list",),
    "contains": ("set",),
    "append": ("list",),
    "extend": ("list",),
    "insert": ("list",),
    "add": ("set",),
    "discard": ("set",),
    "merge": ("map", "record"),
    "increment": ("leaf",),
}
_NUMBERS = (int, float, decimal.Decimal)
_NUMERIC_LEAVES = frozenset({int, float, decimal.Decimal, Any})


# Whether an operation applies to each kind of schema, decided once: every operation asks, twice
# (in the View and in the layout). Increment also needs a numeric leaf, checked in `applies`.
_APPLIES = frozenset(
    (kind, op)
    for kind in ("map", "list", "set", "record", "leaf")
    for op in READ_OPS | WRITE_OPS
    if kind in _KINDS.get(op, (kind,))
)


def applies(schema: Schema, op: str) -> bool:
    """Whether `op` is an operation that applies to `schema` (check_op says why not)."""
    if (schema.kind, op) not in _APPLIES:
        return False
    return op != "increment" or not isinstance(schema, Leaf) or schema.leaf_type in _NUMERIC_LEAVES


def check_op(schema: Schema, op: str, path: str) -> None:
    """PathError unless `op` is an operation that applies to `schema`."""
    if op not in READ_OPS and op not in WRITE_OPS:
        known = ", ".join(sorted(READ_OPS | WRITE_OPS))
        raise PathError(f"unknown PState operation {op!r}; known: {known}")
    kinds = _KINDS.get(op)
    if kinds and schema.kind not in kinds:
        raise PathError(f"{op}() applies to a {' or '.join(kinds)}, but {path} is {schema!r}")
    if op == "increment" and isinstance(schema, Leaf) and schema.leaf_type not in _NUMERIC_LEAVES:
        raise PathError(f"increment() needs a number, but {path} holds {schema!r}")


def range_bound(schema: Map | Set, bound: Any, path: str) -> Any:
    """The canonical form of a `start`/`stop` bound (None: unbounded)."""
    if bound is None:
        return None
    try:
        return schema.keys.check_bound(bound)
    except KeyMismatch as e:
        raise PathError(f"range bound {bound!r} does not fit {schema!r} at {path}: {e}") from None


def check_limit(limit: int | None) -> None:
    if limit is not None and (type(limit) is not int or limit < 0):
        raise PathError(f"limit must be a non-negative int or None, got {limit!r}")


def slice_indexes(size: int, start: int | None, stop: int | None) -> range:
    """The indexes `list[start:stop]` covers in a list of `size` elements (Python semantics)."""
    for bound in (start, stop):
        if bound is not None and type(bound) is not int:
            raise PathError(f"slice bounds must be ints or None, got {bound!r}")
    return range(size)[start:stop]


def list_index_for_insert(size: int, index: Any) -> int:
    """Where `list.insert(index, x)` puts x in a list of `size` elements."""
    if type(index) is not int:
        raise PathError(f"insert() needs an int index, got {type(index).__name__} {index!r}")
    if index < 0:
        return max(0, size + index)
    return min(index, size)


def set_element(schema: Set, element: Any, path: str) -> Any:
    """The canonical form of a set element argument; SchemaError if it does not fit."""
    return check_key(schema.keys, element, path, what="element")


def check_increment(amount: Any, current: Any, path: str) -> None:
    if type(amount) is int and type(current) is int:  # the common case, without the isinstance checks
        return
    if isinstance(amount, bool) or not isinstance(amount, _NUMBERS):
        raise SchemaError(f"increment() needs a number, got {type(amount).__name__} {amount!r} at {path}", path=path)
    if isinstance(current, bool) or not isinstance(current, _NUMBERS):
        raise SchemaError(
            f"cannot increment the {type(current).__name__} value {current!r:.100} at {path}", path=path
        )


def merge_entries(schema: Map | Record, mapping: Any, path: str) -> dict[Any, Any]:
    """The entries of a merge(), keys in canonical form; SchemaError for a bad key or field."""
    if not isinstance(mapping, Mapping):
        raise SchemaError(f"merge() needs a dict, got {type(mapping).__name__} {mapping!r:.100} at {path}", path=path)
    if isinstance(schema, Record):
        check_fields(schema, mapping, path)
        return dict(mapping)
    return {check_key(schema.keys, key, path, what="key"): value for key, value in mapping.items()}
