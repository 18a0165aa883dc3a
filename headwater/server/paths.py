"""JSON paths into PStates: plain steps become typed keys, `{"nav": ...}` objects become navigators.

A path is a JSON array. A plain element is a map key, list index or record field, sent in the
JSON encoding of its value (a UUID or datetime as its string); the schema says which type it
is, so it is converted back here (`"1f0e..."` into a UUID for a `Map(uuid.UUID, ...)`). A value
that does not convert is passed on unchanged, so the View reports the mismatch with the same
PathError an in-process read raises. A JSON object can never be a key (keys are hashable), so
objects are navigators: `{"nav": "all"}`, `{"nav": "range", "start": 1, "stop": 9}`, ...
"""

from __future__ import annotations

from typing import Any

import msgspec

from headwater.errors import PathError
from headwater.schema import List, Map, Record, Schema, Set
from headwater.schema.types import Leaf

__all__ = ["KEY_NESTING_MAX", "NAVIGATORS", "convert_key", "decode_path", "has_navigators", "key_schema_type"]

KEY_NESTING_MAX = 32  # arrays in arrays in a key (a tuple key of tuples); deeper is a PathError, not a crash

# Navigator name -> (attribute of headwater.pstate, the JSON fields it takes).
NAVIGATORS: dict[str, tuple[str, tuple[str, ...]]] = {
    "all": ("ALL", ()),
    "map_keys": ("MAP_KEYS", ()),
    "map_vals": ("MAP_VALS", ()),
    "first": ("FIRST", ()),
    "last": ("LAST", ()),
    "size": ("SIZE", ()),
    "nth": ("nth", ("index",)),
    "must": ("must", ("key",)),
    "range": ("range", ("start", "stop", "limit", "reverse")),
}


def _hashable(value: Any, depth: int = 0) -> Any:
    if isinstance(value, list):
        if depth >= KEY_NESTING_MAX:
            raise PathError(f"a key nests arrays more than {KEY_NESTING_MAX} deep; keys are values of the "
                            "PState's key type, e.g. [3, \"a\"] for a tuple[int, str]")
        return tuple(_hashable(v, depth + 1) for v in value)
    if isinstance(value, dict):
        raise PathError(f"a key cannot be a JSON object ({value!r} is not hashable); objects in a path are "
                        "navigators, {\"nav\": ...}, and only directly in the path")
    return value


def convert_key(value: Any, key_type: Any) -> Any:
    """A JSON value as a key of `key_type`, or unchanged (hashable) if it does not convert."""
    if key_type is Any:
        return _hashable(value)
    try:
        return msgspec.convert(value, key_type, strict=False)
    except (msgspec.ValidationError, TypeError):
        return _hashable(value)


def key_schema_type(schema: Schema) -> Any:
    """The key type ranges over `schema` are bounded by (map keys, set elements), else Any."""
    if isinstance(schema, Map):
        return schema.key_type
    if isinstance(schema, Set):
        return schema.element_type
    return Any


def _plain_step(schema: Schema | None, raw: Any) -> tuple[Any, Schema | None]:
    if isinstance(schema, Map):
        return convert_key(raw, schema.key_type), schema.value_schema
    if isinstance(schema, List):
        return convert_key(raw, int), schema.value_schema
    if isinstance(schema, Record):
        return raw, schema.fields.get(raw) if isinstance(raw, str) else None
    if isinstance(schema, Leaf) and schema.is_any:
        return _hashable(raw), schema
    return _hashable(raw), None  # the View raises the PathError for a step into this


def has_navigators(raw_steps: list[Any]) -> bool:
    return any(isinstance(step, dict) for step in raw_steps)


def decode_path(schema: Schema, raw_steps: Any) -> list[Any]:
    """Typed steps for a JSON path; navigators resolved to headwater's navigator objects."""
    if not isinstance(raw_steps, list):
        raise PathError(f"a path is a JSON array of steps, e.g. [\"ada@example.com\", \"pwd_hash\"], not {raw_steps!r}")
    steps: list[Any] = []
    position: Schema | None = schema  # None once a navigator leaves the schema position unknown
    for raw in raw_steps:
        if isinstance(raw, dict):
            navigator, position = _navigator(position, raw)
            steps.append(navigator)
        else:
            step, position = _plain_step(position, raw)
            steps.append(step)
    return steps


def _navigator(position: Schema | None, raw: dict[str, Any]) -> tuple[Any, Schema | None]:
    import headwater.pstate

    name = raw.get("nav")
    if not isinstance(name, str) or name not in NAVIGATORS:
        raise PathError(f"unknown navigator {raw!r}; a navigator is {{\"nav\": NAME}} with NAME one of "
                        f"{', '.join(NAVIGATORS)} (filter and view take functions and exist only in Python)")
    attribute, fields = NAVIGATORS[name]
    navigator = getattr(headwater.pstate, attribute, None)
    if navigator is None:
        raise PathError(f"navigator {name!r} is not available in this version of headwater; "
                        "read with plain keys and get/keys/items instead")
    unknown = set(raw) - {"nav", *fields}
    if unknown:
        raise PathError(f"navigator {name!r} takes {', '.join(fields) or 'no fields'}, "
                        f"not {', '.join(sorted(unknown))}")
    if name == "must":
        key, position = _plain_step(position, raw.get("key"))
        return navigator(key), position
    if name == "range":
        key_type = key_schema_type(position) if position is not None else Any
        bounds = [convert_key(raw.get(b), key_type) if raw.get(b) is not None else None for b in ("start", "stop")]
        return navigator(*bounds, limit=raw.get("limit"), reverse=bool(raw.get("reverse", False))), position
    if name == "nth":
        return navigator(raw.get("index")), _element_schema(position)
    return navigator, _after(name, position)


def _element_schema(position: Schema | None) -> Schema | None:
    return position.value_schema if isinstance(position, List) else None


def _after(name: str, position: Schema | None) -> Schema | None:
    """Where a field-less navigator leads, when that is one schema position (else None)."""
    if name == "map_vals" and isinstance(position, Map):
        return position.value_schema
    if name in ("all", "first", "last"):
        return _element_schema(position)
    return None
