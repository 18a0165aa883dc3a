"""PState schemas: maps, lists, sets and records nested to any depth, with typed leaves.

A schema is a tree of `Schema` nodes. `Map`, `List`, `Set` and `Record` are what users write;
any other type in a schema position (int, a dataclass, `typing.Any`, ...) becomes a `Leaf`.
Each node knows how a path step into it is checked (`child`), the Python type msgspec uses to
encode and validate its values (`value_type`), and whether it is stored across several storage
keys (`split`: it is subindexed, or something inside it is).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import decimal
import enum
import functools
import types
import typing
import uuid
from typing import Any

import msgspec

from headwater.errors import DefinitionError, PathError
from headwater.schema.extensions import ext_hook
from headwater.schema.keys import KeyMismatch, KeyType, key_type_for

__all__ = ["Leaf", "List", "Map", "Migrated", "Migration", "Record", "Schema", "Set", "as_schema", "format_step",
           "migrated"]

_SCALAR_LEAVES = frozenset(
    {int, float, str, bytes, bool, type(None), uuid.UUID, dt.datetime, dt.date, dt.time, dt.timedelta, decimal.Decimal}
)
_GENERIC_LEAVES = frozenset({tuple, list, dict, set, frozenset})
# Leaf types whose values need no validation beyond being of exactly that type and encoding
# (which rejects what msgpack cannot hold: ints out of range, lone surrogates); under Any, any of them.
_SELF_VALIDATING = frozenset({int, float, str, bytes, bool, type(None)})
_LEAF_HELP = (
    "a leaf may be int, float, str, bytes, bool, None, uuid.UUID, datetime, date, decimal.Decimal, an enum, "
    "a dataclass, a msgspec.Struct, typing.Any, or tuple[...]/list[...]/dict[...] and unions of those"
)


def format_step(path: str, step: Any) -> str:
    """The path string one step further, e.g. `$[3]['items']`."""
    return f"{path}[{step!r}]"


@dataclasses.dataclass(frozen=True, eq=False)
class Migration:
    """A declared schema change at one node: `fn(old_value) -> new_value`, named by `id`."""

    id: str
    fn: Any  # Callable[[Any], Any]


class Migrated:
    """What `hw.migrated` declares: a schema replacing the stored one, and its conversion."""

    __slots__ = ("fn", "id", "schema")

    def __init__(self, schema: Any, *, id: str, fn: Any) -> None:  # noqa: A002 - the public keyword is `id`
        if not isinstance(id, str) or not id or len(id) > 200:
            raise DefinitionError(f"migrated(id={id!r}): the id must be a non-empty string naming the migration")
        if not callable(fn):
            raise DefinitionError(f"migrated(id={id!r}): fn must be a function old_value -> new_value, not {fn!r}")
        if isinstance(schema, Migrated):
            raise DefinitionError(f"migrated(id={id!r}) wraps another migrated(); declare one migration per place")
        self.schema, self.id, self.fn = schema, id, fn

    def __repr__(self) -> str:
        return f"migrated({self.schema!r}, id={self.id!r})"


def migrated(schema: Any, *, id: str, fn: Any) -> Migrated:  # noqa: A002 - the public keyword is `id`
    """Declare that `schema` replaces what is stored at this place of a PState, with the function
    `fn(old_value) -> new_value` that turns each stored value into a new one.

    Use it where the schema changed: a PState's schema, or a part of one (the values of a map, the
    elements of a list, a record's field). `fn` gets the old value as
    stored, decoded without its old class (records and objects as dicts), and returns the new
    value. It applies on read at once, and the stored data is rewritten in the background; `fn`
    may run more than once for one value (a read, then the rewrite), so it must be idempotent in
    effect: a pure function of its argument. `id` names the migration: keep it while the
    declaration stays, and pick a new one for the next change.

        songs = hw.migrated(hw.Record(title=str, artists=hw.List(str)), id="songs-v2",
                            fn=lambda title: {"title": title, "artists": []})
        catalog.pstate("albums", hw.Map(str, hw.List(songs)))
    """
    return Migrated(schema, id=id, fn=fn)


class Schema:
    """A node of a PState schema."""

    kind: str = ""  # "map", "list", "set", "record" or "leaf": which operations apply
    migration: Migration | None = None  # declared with hw.migrated(): stored values convert through it
    split: bool = False  # stored under several storage keys (subindexed, or holds something subindexed)
    # Values of exactly these types fit once they encode, so `encode_value` skips validating them.
    self_validating_types: frozenset = frozenset()

    def __getstate__(self) -> dict[str, Any]:
        # Codecs cached on a node are rebuilt where it is used: they cannot travel to another
        # process (a module's schemas are pickled when it deploys to worker processes).
        return {k: v for k, v in self.__dict__.items() if k not in ("decoder", "value_type")}

    def child(self, step: Any, path: str) -> tuple[Any, Schema]:
        """Check one path step; return its canonical form and the schema it leads to."""
        raise PathError(f"cannot step into {self!r} at {path} with {step!r}")

    @functools.cached_property
    def value_type(self) -> Any:
        """The Python type msgspec encodes and validates whole values of this node with."""
        raise NotImplementedError

    @functools.cached_property
    def decoder(self) -> msgspec.msgpack.Decoder:
        return msgspec.msgpack.Decoder(self.value_type, ext_hook=ext_hook)

    def _identity(self) -> tuple:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._identity() == self._identity()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._identity()))


class Leaf(Schema):
    """A typed value stored whole: a scalar, a dataclass, a Struct, an enum, `Any`, ..."""

    kind = "leaf"

    def __init__(self, leaf_type: Any) -> None:
        _check_leaf_type(leaf_type)
        self.leaf_type = leaf_type
        self.is_any = leaf_type is Any
        if self.is_any:
            self.self_validating_types = _SELF_VALIDATING
        elif leaf_type in _SELF_VALIDATING:
            self.self_validating_types = frozenset({leaf_type})

    def child(self, step: Any, path: str) -> tuple[Any, Schema]:
        if not self.is_any:
            raise PathError(
                f"cannot step into {self!r} at {path} with {step!r}: it is a leaf value; read it whole with get()"
            )
        try:
            hash(step)
        except TypeError:
            raise PathError(f"step {step!r} into the Any value at {path} is not a valid key or index") from None
        return step, self

    @functools.cached_property
    def value_type(self) -> Any:
        return self.leaf_type

    def _identity(self) -> tuple:
        return (self.leaf_type,)

    def __repr__(self) -> str:
        return _type_name(self.leaf_type)


class Map(Schema):
    """A map from keys of `key_type` to values of `value_schema`, sorted by key.

    Keys are hashable leaves (int, str, UUID, datetime, tuples of them, ...). `subindexed=True`
    stores each entry under its own storage key, so one entry is read or changed without the
    others; reads give the same results either way. A top-level map is partitioned by its key.

        hw.Map(str, hw.Record(pwd_hash=str, registered_ms=int))
        hw.Map(int, hw.Map(str, int, subindexed=True))
    """

    kind = "map"

    def __init__(self, key_type: Any, value_schema: Any, subindexed: bool = False) -> None:
        self.key_type = key_type
        self.keys: KeyType = key_type_for(key_type)
        self.value_schema = as_schema(value_schema)
        self.subindexed = bool(subindexed)
        self.split = self.subindexed or self.value_schema.split

    def child(self, step: Any, path: str) -> tuple[Any, Schema]:
        try:
            return self.keys.check(step), self.value_schema
        except KeyMismatch as e:
            raise PathError(f"key {step!r} does not fit {self!r} at {path}: {e}") from None

    @functools.cached_property
    def value_type(self) -> Any:
        return dict[self.key_type, self.value_schema.value_type]  # type: ignore[name-defined]

    def _identity(self) -> tuple:
        return (self.key_type, self.value_schema, self.subindexed)

    def __repr__(self) -> str:
        return f"Map({_type_name(self.key_type)}, {self.value_schema!r}{_subindexed(self)})"


class List(Schema):
    """A list of values of `value_schema`, in index order.

    Indexed by int (negative counts from the end). `subindexed=True` stores each element under
    its own storage key: appending and reading one element are O(1).

        hw.Map(str, hw.List(hw.Record(author=str, text=str), subindexed=True))
    """

    kind = "list"

    def __init__(self, value_schema: Any, subindexed: bool = False) -> None:
        self.value_schema = as_schema(value_schema)
        self.subindexed = bool(subindexed)
        self.split = self.subindexed or self.value_schema.split

    def child(self, step: Any, path: str) -> tuple[Any, Schema]:
        if type(step) is not int:
            raise PathError(f"{self!r} at {path} is indexed by int, got {type(step).__name__} {step!r}")
        return step, self.value_schema

    @functools.cached_property
    def value_type(self) -> Any:
        return list[self.value_schema.value_type]  # type: ignore[name-defined]

    def _identity(self) -> tuple:
        return (self.value_schema, self.subindexed)

    def __repr__(self) -> str:
        return f"List({self.value_schema!r}{_subindexed(self)})"


class Set(Schema):
    """A set of elements of `value_type`, sorted like map keys.

    Read with `contains(x)`, `keys(...)` and `size()`; write with `add(x)` and `discard(x)`.

        hw.Map(str, hw.Set(str, subindexed=True))     # followers per user
    """

    kind = "set"

    def __init__(self, value_type: Any, subindexed: bool = False) -> None:
        self.element_type = value_type
        self.keys: KeyType = key_type_for(value_type)
        self.subindexed = bool(subindexed)
        self.split = self.subindexed

    def child(self, step: Any, path: str) -> tuple[Any, Schema]:
        raise PathError(
            f"cannot step into {self!r} at {path} with {step!r}: set elements hold no values; "
            "test membership with .contains(x)"
        )

    @functools.cached_property
    def value_type(self) -> Any:
        return set[self.element_type]  # type: ignore[name-defined]

    def _identity(self) -> tuple:
        return (self.element_type, self.subindexed)

    def __repr__(self) -> str:
        return f"Set({_type_name(self.element_type)}{_subindexed(self)})"


class Record(Schema):
    """Fixed fields, each with its own schema. Reads give a dict of the fields that are set.

    A field that was never set is absent from that dict, and reads as None on its own. Fields
    can hold any schema, collections included.

        hw.Record(title=str, tags=hw.Set(str), likes=int)
        view["p1"].set({"title": "Hello"}); view["p1"]["likes"].increment()
    """

    kind = "record"

    def __init__(self, **fields: Any) -> None:
        if not fields:
            raise DefinitionError("Record() needs at least one field, e.g. Record(name=str, age=int)")
        self.fields: dict[str, Schema] = {name: as_schema(schema) for name, schema in fields.items()}
        self.split = any(f.split for f in self.fields.values())
        # Every field is a typed leaf, which msgspec's typed decoder validates in one C pass.
        self.typed_leaves_only = all(isinstance(f, Leaf) and not f.is_any for f in self.fields.values())

    def child(self, step: Any, path: str) -> tuple[Any, Schema]:
        field = self.fields.get(step) if isinstance(step, str) else None
        if field is None:
            raise PathError(f"{self!r} at {path} has no field {step!r}; its fields are {', '.join(self.fields)}")
        return step, field

    @functools.cached_property
    def value_type(self) -> Any:
        fields = {name: schema.value_type for name, schema in self.fields.items()}
        return typing.TypedDict("Record", fields, total=False)  # type: ignore[operator]

    def _identity(self) -> tuple:
        return tuple(self.fields.items())

    def __repr__(self) -> str:
        return "Record(" + ", ".join(f"{name}={schema!r}" for name, schema in self.fields.items()) + ")"


def _subindexed(schema: Map | List | Set) -> str:
    return ", subindexed=True" if schema.subindexed else ""


_LEAF_CACHE: dict[Any, Leaf] = {}


def as_schema(declared: Any) -> Schema:
    """The schema node for what a user wrote in a schema position (DefinitionError if invalid)."""
    if isinstance(declared, Schema):
        return declared
    if isinstance(declared, Migrated):
        # A node of its own (never a shared cached leaf), carrying the migration.
        inner = as_schema(declared.schema)
        node = Leaf(inner.leaf_type) if isinstance(inner, Leaf) else copy.copy(inner)
        node.migration = Migration(declared.id, declared.fn)
        return node
    if declared is None:
        declared = type(None)
    try:
        leaf = _LEAF_CACHE.get(declared)
    except TypeError:  # an unhashable "type", e.g. a list written where a type belongs
        raise DefinitionError(f"{declared!r} is not a schema; {_LEAF_HELP}") from None
    if leaf is None:
        leaf = _LEAF_CACHE[declared] = Leaf(declared)
    return leaf


def _check_leaf_type(leaf_type: Any) -> None:
    if isinstance(leaf_type, type) and issubclass(leaf_type, Schema):
        raise DefinitionError(
            f"{leaf_type.__name__} must be called with its arguments, e.g. Map(str, int), List(int), Set(str)"
        )
    if not _is_leaf_type(leaf_type):
        raise DefinitionError(f"{_type_name(leaf_type)} is not a supported PState leaf type; {_LEAF_HELP}")


def _is_leaf_type(leaf_type: Any) -> bool:
    if leaf_type is Any or leaf_type in _SCALAR_LEAVES or leaf_type in _GENERIC_LEAVES:
        return True
    if isinstance(leaf_type, type) and not isinstance(leaf_type, types.GenericAlias):
        return (
            issubclass(leaf_type, (enum.Enum, msgspec.Struct))
            or dataclasses.is_dataclass(leaf_type)
            or typing.is_typeddict(leaf_type)
            or (issubclass(leaf_type, tuple) and hasattr(leaf_type, "_fields"))  # NamedTuple
        )
    origin = typing.get_origin(leaf_type)
    if origin is typing.Literal:
        return True
    if origin in _GENERIC_LEAVES or origin in (typing.Union, types.UnionType):
        return all(arg is Ellipsis or _is_leaf_type(arg) for arg in typing.get_args(leaf_type))
    return False


def _type_name(kind: Any) -> str:
    if kind is type(None):
        return "None"
    if isinstance(kind, type) and not isinstance(kind, types.GenericAlias):
        return kind.__name__
    return repr(kind).replace("typing.", "")
