"""Encoding and validating whole values against a schema (msgpack via msgspec).

`encode_value` first walks the collection nodes of the schema in Python (`_prepare`): it checks
container types, puts map keys and set elements into canonical form and sorted key order,
and rejects unknown record fields. Then msgspec encodes the result and decodes it once with
the schema's typed decoder, which validates every leaf in C (strictly: a bool is not an int).
Only when that fails does a slower walk find the offending leaf, so that the error names its
full path (`$[3]['items'][0].quantity`).

Values under `typing.Any` keep their Python types through a round trip: UUID, Decimal, date,
naive datetime, tuple, set and frozenset travel as msgpack extension types. (Inside other leaf
types, such as a dataclass field typed Any, msgspec's own rules apply: a UUID reads back as str.)
"""

from __future__ import annotations

import datetime as dt
import decimal
import operator
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from headwater.errors import SchemaError
from headwater.schema.extensions import (
    EXT_DATE,
    EXT_DECIMAL,
    EXT_FROZENSET,
    EXT_NAIVE_DATETIME,
    EXT_SET,
    EXT_TUPLE,
    EXT_UUID,
    ext_hook,
)
from headwater.schema.keys import KeyMismatch, KeyType
from headwater.schema.types import Leaf, List, Map, Record, Schema, Set, as_schema, format_step

__all__ = [
    "DEFAULT_MAX_VALUE_BYTES",
    "decode_value",
    "encode_value",
    "ext_hook",
    "max_value_bytes",
    "check_fields",
    "check_key",
    "prepare_value",
    "sort_by_key",
    "set_max_value_bytes",
]

DEFAULT_MAX_VALUE_BYTES = 64 * 2**20
_max_value_bytes = DEFAULT_MAX_VALUE_BYTES

_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_PLAIN = (int, str, bytes, bool, float, type(None))

# Extension type codes for values under Any (msgpack reserves negative codes).

_encoder = msgspec.msgpack.Encoder()
_first = operator.itemgetter(0)
_MSGSPEC_PATH = re.compile(r"^(.*) - at `\$(.*)`$", re.DOTALL)


def max_value_bytes() -> int:
    """The largest encoded size of one stored value (a leaf, or a collection that is not subindexed)."""
    return _max_value_bytes


def set_max_value_bytes(limit: int) -> int:
    """Change the bound on one stored value's encoded size; returns the previous bound."""
    global _max_value_bytes
    previous, _max_value_bytes = _max_value_bytes, int(limit)
    return previous


def encode_value(schema: Any, value: Any, path: str = "$") -> bytes:
    """Validate `value` against `schema` and encode it; SchemaError names the offending path."""
    if not isinstance(schema, Schema):
        schema = as_schema(schema)
    if type(value) in schema.self_validating_types:
        # Its type proves the value fits, so only encoding can fail; if it does, or the value is
        # too big, the full path below raises the error with its message.
        try:
            data = _encoder.encode(value)
        except (TypeError, ValueError, OverflowError):
            pass
        else:
            if len(data) <= _max_value_bytes:
                return data
    prepared = prepare_value(schema, value, path)
    try:
        data = _encoder.encode(prepared)
        schema.decoder.decode(data)
    except (msgspec.ValidationError, TypeError, ValueError, OverflowError) as e:
        _locate_error(schema, prepared, path)
        raise SchemaError(f"{value!r:.200} does not fit {schema!r} at {path}: {e}", path=path) from None
    if len(data) > _max_value_bytes:
        raise SchemaError(
            f"the value at {path} encodes to {len(data)} bytes, above the bound of {_max_value_bytes} bytes for "
            f"one stored value; make the collection subindexed (e.g. Map(..., subindexed=True)) so each element "
            f"is stored on its own, or raise the bound with headwater.schema.set_max_value_bytes",
            path=path,
        )
    return data


def decode_value(schema: Any, data: bytes) -> Any:
    """The value `encode_value` stored: dicts for maps and records, lists, sets, typed leaves."""
    return as_schema(schema).decoder.decode(data)


# --- the walk over collection nodes -----------------------------------------------------------


def prepare_value(schema: Schema, value: Any, path: str) -> Any:
    """Check collection structure and return the value in storable, canonical form."""
    return _PREPARERS[type(schema)](schema, value, path)


def _prepare_leaf(schema: Leaf, value: Any, path: str) -> Any:
    return _any_to_storage(value, path) if schema.is_any else value


def _prepare_map(schema: Map, value: Any, path: str) -> dict:
    if not isinstance(value, Mapping):
        raise _mismatch(schema, "a dict", value, path)
    element = schema.value_schema
    if isinstance(element, Leaf) and not element.is_any:
        # Leaves are validated by the typed decoder in one C pass; only keys need Python.
        try:
            entries = {schema.keys.check(key): item for key, item in value.items()}
        except KeyMismatch:
            entries = {check_key(schema.keys, key, path, what="key"): item for key, item in value.items()}
    else:
        entries = {}
        for key, item in value.items():
            canonical = check_key(schema.keys, key, path, what="key")
            entries[canonical] = prepare_value(element, item, format_step(path, canonical))
    return sort_by_key(schema.keys, entries)


def _prepare_list(schema: List, value: Any, path: str) -> list:
    if not isinstance(value, (list, tuple)):
        raise _mismatch(schema, "a list", value, path)
    element = schema.value_schema
    if isinstance(element, Leaf) and not element.is_any:
        return list(value)  # leaves are validated by the typed decoder in one C pass
    return [prepare_value(element, item, format_step(path, i)) for i, item in enumerate(value)]


def _prepare_set(schema: Set, value: Any, path: str) -> list:
    if not isinstance(value, (set, frozenset)):
        raise _mismatch(schema, "a set", value, path)
    elements = {check_key(schema.keys, element, path, what="element") for element in value}
    return sorted(elements, key=schema.keys.sort_key)


def _prepare_record(schema: Record, value: Any, path: str) -> dict:
    if not isinstance(value, Mapping):
        raise _mismatch(schema, "a dict of its fields", value, path)
    check_fields(schema, value, path)
    if schema.typed_leaves_only:  # the typed decoder validates them; only the order needs Python
        return {name: value[name] for name in schema.fields if name in value}
    return {
        name: prepare_value(field, value[name], format_step(path, name))
        for name, field in schema.fields.items()
        if name in value
    }


_PREPARERS: dict[type, Callable[[Any, Any, str], Any]] = {
    Leaf: _prepare_leaf, Map: _prepare_map, List: _prepare_list, Set: _prepare_set, Record: _prepare_record,
}


def check_fields(schema: Record, value: Mapping, path: str) -> None:
    """SchemaError naming the first key of `value` that is not a field of the record."""
    for name in value:
        if name not in schema.fields:
            field_path = format_step(path, name)
            raise SchemaError(
                f"unknown field {name!r} at {field_path}: {schema!r} has fields {', '.join(schema.fields)}",
                path=field_path,
            )


def check_key(keys: KeyType, key: Any, path: str, *, what: str) -> Any:
    """The canonical form of a map key or set element inside a value; SchemaError if it does not fit."""
    try:
        return keys.check(key)
    except KeyMismatch as e:
        raise SchemaError(f"{what} {key!r} at {path} does not fit: {e}", path=path) from None


def sort_by_key(keys: KeyType, entries: dict) -> dict:
    """`entries` ordered by the storage order of their keys."""
    if keys.natural_order:
        return dict(sorted(entries.items(), key=_first))
    return dict(sorted(entries.items(), key=lambda item: keys.sort_key(item[0])))


def _mismatch(schema: Schema, expected: str, value: Any, path: str) -> SchemaError:
    return SchemaError(
        f"expected {expected} for {schema!r} at {path}, got {type(value).__name__} {value!r:.100}", path=path
    )


# --- finding the leaf that failed -------------------------------------------------------------


def _locate_error(schema: Schema, prepared: Any, path: str) -> None:
    """Raise SchemaError for the first leaf of `prepared` that does not fit; return if none is found."""
    if isinstance(schema, Leaf):
        _check_leaf(schema, prepared, path)
    elif isinstance(schema, Map):
        for key, item in prepared.items():
            _locate_error(schema.value_schema, item, format_step(path, key))
    elif isinstance(schema, List):
        for index, item in enumerate(prepared):
            _locate_error(schema.value_schema, item, format_step(path, index))
    elif isinstance(schema, Record):
        for name, item in prepared.items():
            _locate_error(schema.fields[name], item, format_step(path, name))


def _check_leaf(schema: Leaf, value: Any, path: str) -> None:
    try:
        schema.decoder.decode(_encoder.encode(value))
    except msgspec.ValidationError as e:
        message, inner = _split_msgspec_path(str(e))
        raise SchemaError(f"{message} ({value!r:.100}) at {path}{inner}", path=path + inner) from None
    except (TypeError, ValueError, OverflowError) as e:
        raise SchemaError(f"{type(value).__name__} value {value!r:.100} cannot be stored at {path}: {e}",
                          path=path) from None


def _split_msgspec_path(message: str) -> tuple[str, str]:
    """'Expected `int`, got `str` - at `$.x[0]`' -> ('Expected `int`, got `str`', '.x[0]')."""
    match = _MSGSPEC_PATH.match(message)
    return (match.group(1), match.group(2)) if match else (message, "")


# --- values under Any -------------------------------------------------------------------------


def _any_to_storage(value: Any, path: str) -> Any:
    kind = type(value)
    if kind in _PLAIN:
        if kind is int and not _INT_MIN <= value <= _INT_MAX:
            raise SchemaError(f"int {value} at {path} is outside the storable range [-2**63, 2**64 - 1]", path=path)
        return value
    if kind is list:
        return [_any_to_storage(v, format_step(path, i)) for i, v in enumerate(value)]
    if kind is dict:
        return {k: _any_to_storage(v, format_step(path, k)) for k, v in value.items()}
    converter = _ANY_EXTENSIONS.get(kind)
    if converter is not None:
        return converter(value, path)
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value  # msgpack's own timestamp type; reads back as the same instant in UTC
    return value  # dataclasses, Structs, enums...: msgspec encodes them as plain data


def _nested_ext(code: int, items: Any, path: str) -> msgspec.msgpack.Ext:
    walked = [_any_to_storage(v, format_step(path, i)) for i, v in enumerate(items)]
    return msgspec.msgpack.Ext(code, _encoder.encode(walked))


def _naive_datetime_ext(value: dt.datetime, path: str) -> Any:
    if value.tzinfo is not None:
        return value
    return msgspec.msgpack.Ext(EXT_NAIVE_DATETIME, value.isoformat().encode())


_ANY_EXTENSIONS = {
    uuid.UUID: lambda v, path: msgspec.msgpack.Ext(EXT_UUID, v.bytes),
    decimal.Decimal: lambda v, path: msgspec.msgpack.Ext(EXT_DECIMAL, str(v).encode()),
    dt.date: lambda v, path: msgspec.msgpack.Ext(EXT_DATE, v.isoformat().encode()),
    dt.datetime: _naive_datetime_ext,
    tuple: lambda v, path: _nested_ext(EXT_TUPLE, v, path),
    set: lambda v, path: _nested_ext(EXT_SET, sorted(v, key=_any_sort_key), path),
    frozenset: lambda v, path: _nested_ext(EXT_FROZENSET, sorted(v, key=_any_sort_key), path),
}


def _any_sort_key(value: Any) -> Any:
    # Sets are stored sorted so that equal sets encode to equal bytes; mixed types sort by type name.
    return (type(value).__name__, value if type(value) in _PLAIN else repr(value))


