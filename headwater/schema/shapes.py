"""Shapes: what stored data looks like, as plain JSON data, and whether new code can read it.

A deployed module's stored catalog keeps the shape of each depot's event type and of each
PState's schema. At `deploy` over existing data and at `update`, the new module's shapes are
compared with the stored ones: a change is compatible only if every value written under the old
shape still decodes, unchanged in meaning, under the new one (an added optional field, a type
widened to a union that holds it, `Any`). Anything else needs a migration or a deletion, which
the caller must declare.

Shapes are structural: a dataclass renamed with the same fields is the same shape, because what
matters is what the stored bytes decode into, not what the class is called.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import types
import typing
import uuid
from typing import Any

import msgspec

from headwater.schema.types import Leaf, List, Map, Record, Schema, Set

__all__ = ["compare_schemas", "compare_types", "migrations_added", "schema_from_shape", "schema_shape", "type_shape"]

_SCALARS: dict[Any, str] = {
    int: "int", float: "float", str: "str", bytes: "bytes", bool: "bool", type(None): "null",
    uuid.UUID: "uuid", dt.datetime: "datetime", dt.date: "date", dt.time: "time", dt.timedelta: "timedelta",
    decimal.Decimal: "decimal",
}
_OBJECT_DEPTH_MAX = 32  # nested object types described before a shape stops (a recursive type)


def type_shape(kind: Any, _depth: int = 0) -> dict[str, Any]:
    """The shape of values of the Python type `kind`, as JSON-ready data."""
    if kind is Any or kind is object:
        return {"t": "any"}
    if kind in _SCALARS:
        return {"t": _SCALARS[kind]}
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is typing.Literal:
        return {"t": "literal", "values": sorted((_plain(a) for a in args), key=repr)}
    if origin in (typing.Union, types.UnionType):
        return {"t": "union", "options": [type_shape(a, _depth) for a in args]}
    if origin is tuple or kind is tuple:
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            return {"t": "list", "items": type_shape(args[0] if args else Any, _depth)}
        return {"t": "tuple", "items": [type_shape(a, _depth) for a in args]}
    if origin in (list, set, frozenset) or kind in (list, set, frozenset):
        return {"t": "list", "items": type_shape(args[0] if args else Any, _depth)}
    if origin is dict or kind is dict:
        return {"t": "dict", "keys": type_shape(args[0] if args else Any, _depth),
                "values": type_shape(args[1] if args else Any, _depth)}
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return {"t": "enum", "values": sorted((_plain(m.value) for m in kind), key=repr)}
    fields = _object_fields(kind)
    if fields is not None:
        if _depth >= _OBJECT_DEPTH_MAX:
            return {"t": "object", "name": kind.__name__, "fields": None}
        return {"t": "object", "name": kind.__name__,
                "fields": {name: {"type": type_shape(hint, _depth + 1), "required": required}
                           for name, (hint, required) in fields.items()}}
    return {"t": "opaque", "name": getattr(kind, "__qualname__", repr(kind))}


def schema_shape(schema: Schema) -> dict[str, Any]:
    """The shape of a PState schema: its collections, their layout (subindexed or not), and its
    leaves; a node declared with `hw.migrated` carries its migration's id."""
    shape = _node_shape(schema)
    if schema.migration is not None:
        shape["migrated"] = schema.migration.id
    return shape


def _node_shape(schema: Schema) -> dict[str, Any]:
    if isinstance(schema, Map):
        return {"k": "map", "key": type_shape(schema.key_type), "value": schema_shape(schema.value_schema),
                "subindexed": schema.subindexed}
    if isinstance(schema, List):
        return {"k": "list", "value": schema_shape(schema.value_schema), "subindexed": schema.subindexed}
    if isinstance(schema, Set):
        return {"k": "set", "element": type_shape(schema.element_type), "subindexed": schema.subindexed}
    if isinstance(schema, Record):
        return {"k": "record", "fields": {name: schema_shape(f) for name, f in schema.fields.items()}}
    assert isinstance(schema, Leaf)
    return {"k": "leaf", "type": type_shape(schema.leaf_type)}


def compare_types(old: dict[str, Any], new: dict[str, Any], path: str = "$") -> list[str]:
    """Why values stored with shape `old` would not read the same under shape `new`: [] if they would."""
    if new == old or new["t"] == "any":
        return []
    if new["t"] == "union":
        olds = old["options"] if old["t"] == "union" else [old]
        return [f"{path}: {_name(o)} is not among {_name(new)}" for o in olds
                if not any(not compare_types(o, option, path) for option in new["options"])]
    if old["t"] != new["t"]:
        if old["t"] == "int" and new["t"] == "float":
            return []  # every stored int decodes as a float of the same value
        if old["t"] == "literal" and all(_literal_fits(v, new) for v in old["values"]):
            return []
        return [f"{path}: {_name(old)} became {_name(new)}"]
    kind = new["t"]
    if kind in ("literal", "enum"):
        lost = [v for v in old["values"] if v not in new["values"]]
        return [f"{path}: values {lost!r} are no longer allowed"] if lost else []
    if kind == "list":
        return compare_types(old["items"], new["items"], f"{path}[*]")
    if kind == "dict":
        return compare_types(old["keys"], new["keys"], f"{path}.keys") + \
            compare_types(old["values"], new["values"], f"{path}[*]")
    if kind == "tuple":
        if len(old["items"]) != len(new["items"]):
            return [f"{path}: a tuple of {len(old['items'])} became a tuple of {len(new['items'])}"]
        return [p for i, (o, n) in enumerate(zip(old["items"], new["items"], strict=True))
                for p in compare_types(o, n, f"{path}[{i}]")]
    if kind == "object":
        return _compare_objects(old, new, path)
    return [f"{path}: {_name(old)} became {_name(new)}"]  # scalars of one kind are equal; opaque ones differ


def compare_schemas(old: dict[str, Any], new: dict[str, Any], path: str = "$") -> list[str]:
    """Why a PState stored with schema shape `old` would not read the same under `new`: [] if it would.

    Added record fields are compatible (they read as absent); anything that changes how stored
    keys are laid out (a collection kind, a map's key type, `subindexed`) or what a stored value
    decodes into is not."""
    if new.get("migrated") is not None and new.get("migrated") != old.get("migrated"):
        return []  # a declared migration converts whatever was stored here
    if _unmarked(old) == _unmarked(new):
        return []
    if old["k"] != new["k"]:
        return [f"{path}: a {old['k']} became a {new['k']}"]
    kind = new["k"]
    problems: list[str] = []
    if kind in ("map", "list", "set") and old["subindexed"] != new["subindexed"]:
        problems.append(f"{path}: subindexed={old['subindexed']} became subindexed={new['subindexed']} "
                        "(the stored layout differs)")
    if kind == "map":
        if old["key"] != new["key"]:
            problems.append(f"{path}: keys of type {_name(old['key'])} became {_name(new['key'])} "
                            "(stored keys are encoded by type)")
        problems += compare_schemas(old["value"], new["value"], f"{path}[*]")
    elif kind == "list":
        problems += compare_schemas(old["value"], new["value"], f"{path}[*]")
    elif kind == "set":
        if old["element"] != new["element"]:
            problems.append(f"{path}: elements of type {_name(old['element'])} became {_name(new['element'])} "
                            "(stored elements are encoded by type)")
    elif kind == "record":
        for name, field in old["fields"].items():
            if name not in new["fields"]:
                problems.append(f"{path}.{name}: the field was removed (its stored values would be left unread)")
            else:
                problems += compare_schemas(field, new["fields"][name], f"{path}.{name}")
    else:
        problems += compare_types(old["type"], new["type"], path)
    return problems


def migrations_added(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """The ids of the migrations declared in schema shape `new` that `old` did not declare."""
    def ids(shape: dict[str, Any] | None) -> set[str]:
        if shape is None:
            return set()
        found = {shape["migrated"]} if shape.get("migrated") else set()
        for child in (shape.get("value"), *(shape.get("fields") or {}).values()):
            if isinstance(child, dict):
                found |= ids(child)
        return found

    return sorted(ids(new) - ids(old))


def schema_from_shape(shape: dict[str, Any]) -> Schema:
    """A schema that reads what was stored under `shape`: the same layout, with leaves of scalar
    types typed as they were and any other leaf (an object, a union, ...) read as plain data."""
    kind = shape["k"]
    if kind == "map":
        return Map(_type_from_shape(shape["key"]), schema_from_shape(shape["value"]), subindexed=shape["subindexed"])
    if kind == "list":
        return List(schema_from_shape(shape["value"]), subindexed=shape["subindexed"])
    if kind == "set":
        return Set(_type_from_shape(shape["element"]), subindexed=shape["subindexed"])
    if kind == "record":
        return Record(**{name: schema_from_shape(field) for name, field in shape["fields"].items()})
    return Leaf(_type_from_shape(shape["type"]))


_SCALAR_TYPES = {name: kind for kind, name in _SCALARS.items()}


def _type_from_shape(shape: dict[str, Any]) -> Any:
    kind = _SCALAR_TYPES.get(shape["t"])
    if kind is not None and kind is not type(None):
        return kind
    if shape["t"] == "tuple":
        items = [_type_from_shape(item) for item in shape["items"]]
        return tuple[tuple(items)] if all(item is not Any for item in items) else Any  # type: ignore[misc]
    return Any


def _unmarked(shape: dict[str, Any]) -> dict[str, Any]:
    """`shape` without its migration marks: a finished migration reads like the schema it made."""
    if not isinstance(shape, dict):
        return shape
    return {k: (_unmarked(v) if isinstance(v, dict) else v) for k, v in shape.items() if k != "migrated"} | (
        {"fields": {n: _unmarked(f) for n, f in shape["fields"].items()}} if "fields" in shape and "k" in shape
        else {})


def _compare_objects(old: dict[str, Any], new: dict[str, Any], path: str) -> list[str]:
    if old["fields"] is None or new["fields"] is None:
        return [] if old == new else [f"{path}: {_name(old)} became {_name(new)}"]
    problems = []
    for name, field in old["fields"].items():
        if name not in new["fields"]:
            problems.append(f"{path}.{name}: the field was removed (stored values hold it)")
        else:
            problems += compare_types(field["type"], new["fields"][name]["type"], f"{path}.{name}")
    for name, field in new["fields"].items():
        if name not in old["fields"] and field["required"]:
            problems.append(f"{path}.{name}: a required field was added (stored values lack it): give it a default")
    return problems


def _object_fields(kind: Any) -> dict[str, tuple[Any, bool]] | None:
    """{field: (type hint, required)} of a dataclass, msgspec Struct, TypedDict or NamedTuple; else None."""
    if not isinstance(kind, type):
        return None
    try:
        if dataclasses.is_dataclass(kind):
            hints = typing.get_type_hints(kind)
            return {f.name: (hints.get(f.name, Any), f.default is dataclasses.MISSING
                             and f.default_factory is dataclasses.MISSING)
                    for f in dataclasses.fields(kind) if f.init}
        if issubclass(kind, msgspec.Struct):
            info = msgspec.inspect.type_info(kind)
            assert isinstance(info, msgspec.inspect.StructType)
            return {f.name: (_hint(kind, f.name), f.required) for f in info.fields}
        if typing.is_typeddict(kind):
            hints = typing.get_type_hints(kind)
            required = getattr(kind, "__required_keys__", frozenset(hints))
            return {name: (hint, name in required) for name, hint in hints.items()}
        if issubclass(kind, tuple) and hasattr(kind, "_fields"):
            hints = typing.get_type_hints(kind)
            defaults = getattr(kind, "_field_defaults", {})
            return {name: (hints.get(name, Any), name not in defaults) for name in kind._fields}
    except (NameError, TypeError):  # an annotation that does not resolve here
        return {name: (Any, True) for name in getattr(kind, "__annotations__", {})}
    return None


def _hint(kind: type, name: str) -> Any:
    try:
        return typing.get_type_hints(kind).get(name, Any)
    except (NameError, TypeError):
        return Any


def _plain(value: Any) -> Any:
    return value if isinstance(value, (int, float, str, bool, type(None))) else repr(value)


def _literal_fits(value: Any, shape: dict[str, Any]) -> bool:
    expected = {"int": int, "float": (int, float), "str": str, "bool": bool, "null": type(None)}.get(shape["t"])
    return expected is not None and isinstance(value, expected)  # type: ignore[arg-type]


def _name(shape: dict[str, Any]) -> str:
    kind = shape["t"]
    if kind == "union":
        return " | ".join(_name(o) for o in shape["options"])
    if kind in ("object", "opaque"):
        return str(shape["name"])
    if kind == "list":
        return f"list[{_name(shape['items'])}]"
    if kind == "dict":
        return f"dict[{_name(shape['keys'])}, {_name(shape['values'])}]"
    if kind == "tuple":
        return "tuple[" + ", ".join(_name(i) for i in shape["items"]) + "]"
    if kind in ("literal", "enum"):
        return f"{kind}{shape['values']!r}"
    return str(kind)
