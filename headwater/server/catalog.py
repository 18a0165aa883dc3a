"""What the server knows about deployed modules, described as JSON for clients, the UI and OpenAPI.

Schemas are described as plain data (`{"kind": "map", "key": {"type": "int"}, ...}`) that a
remote client turns back into `headwater.schema` nodes, and event types as JSON Schema (msgspec
generates it), so a client in any language learns what to send.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import inspect
import types
import typing
import uuid
from typing import Any

import msgspec

from headwater.client.cluster import Cluster
from headwater.engine.runtime import ModuleRuntime
from headwater.schema import List, Map, Record, Schema, Set, as_schema
from headwater.schema.types import Leaf

__all__ = ["describe_module", "describe_schema", "describe_type", "event_type", "query_parameters",
           "runtime_of"]


def runtime_of(cluster: Cluster, module: str) -> ModuleRuntime:
    """The compiled module behind `module`: its depots, PStates, topologies and queries (NotFound,
    with a suggestion, if it is not deployed)."""
    return cluster.runtime(module)


_SCALAR_NAMES: dict[Any, str] = {
    int: "int", float: "float", str: "str", bytes: "bytes", bool: "bool", type(None): "null",
    uuid.UUID: "uuid", dt.datetime: "datetime", dt.date: "date", dt.time: "time", dt.timedelta: "timedelta",
    decimal.Decimal: "decimal", Any: "any",
}


def describe_type(kind: Any) -> dict[str, Any]:
    """A plain-data description of a Python type: scalars by name, containers with their items."""
    if kind in _SCALAR_NAMES:
        return {"type": _SCALAR_NAMES[kind]}
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is tuple:
        variadic = len(args) == 2 and args[1] is Ellipsis
        return {"type": "tuple", "items": [describe_type(a) for a in (args[:1] if variadic else args)],
                "variadic": variadic}
    if origin in (list, set, frozenset) or kind in (list, set, frozenset, tuple):
        return {"type": "list", "items": describe_type(args[0] if args else Any)}
    if origin is dict or kind is dict:
        return {"type": "dict", "keys": describe_type(args[0] if args else Any),
                "values": describe_type(args[1] if args else Any)}
    if origin in (typing.Union, types.UnionType):
        return {"type": "union", "options": [describe_type(a) for a in args]}
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return {"type": "enum", "name": kind.__name__, "values": [m.value for m in kind]}
    if _is_object_type(kind):
        return {"type": "object", "name": kind.__name__}
    return {"type": "any", "name": getattr(kind, "__name__", repr(kind))}


def _is_object_type(kind: Any) -> bool:
    return isinstance(kind, type) and (
        dataclasses.is_dataclass(kind) or issubclass(kind, msgspec.Struct) or typing.is_typeddict(kind)
    )


def describe_schema(schema: Schema) -> dict[str, Any]:
    """A PState schema as plain data; `headwater.client.remote.schema_from_description` reverses it."""
    if isinstance(schema, Map):
        return {"kind": "map", "key": describe_type(schema.key_type), "value": describe_schema(schema.value_schema),
                "subindexed": schema.subindexed, "repr": repr(schema)}
    if isinstance(schema, List):
        return {"kind": "list", "value": describe_schema(schema.value_schema), "subindexed": schema.subindexed,
                "repr": repr(schema)}
    if isinstance(schema, Set):
        return {"kind": "set", "element": describe_type(schema.element_type), "subindexed": schema.subindexed,
                "repr": repr(schema)}
    if isinstance(schema, Record):
        return {"kind": "record", "fields": {name: describe_schema(f) for name, f in schema.fields.items()},
                "repr": repr(schema)}
    assert isinstance(schema, Leaf)
    return {"kind": "leaf", "type": describe_type(schema.leaf_type), "repr": repr(schema),
            "json_schema": _json_schema(schema.leaf_type)}


def _json_schema(kind: Any) -> dict[str, Any]:
    try:
        return msgspec.json.schema(kind)
    except (TypeError, ValueError):
        return {}


def event_type(runtime: ModuleRuntime, depot: str) -> Any:
    return runtime.depot(depot).decl.event_type


def query_parameters(fn: Any) -> list[tuple[str, Any, bool]]:
    """(name, annotated type, required) for each argument a query takes after its context."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # an annotation that names something not importable here: treat it as Any
        hints = {}
    parameters = list(inspect.signature(fn).parameters.values())[1:]
    return [(p.name, hints.get(p.name, Any), p.default is inspect.Parameter.empty)
            for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def describe_module(runtime: ModuleRuntime) -> dict[str, Any]:
    return {
        "name": runtime.name,
        "tasks": runtime.tasks,
        "version": runtime.catalog.version,
        "replication": runtime.catalog.replication,
        "depots": [_describe_depot(depot) for depot in runtime.depots.values()],
        "pstates": [
            {"name": p.name, "partitioned": p.decl.partitioned, "keyed": p.keyed,
             "schema": describe_schema(as_schema(p.decl.schema))}
            for p in runtime.pstates.values()
        ],
        "topologies": [
            {"name": t.name, "kind": "stream" if t.name in runtime.streams else "microbatch",
             "depots": [d.name for d in t.depots]}
            for t in runtime.module.topologies.values()
        ],
        "queries": [
            {"name": q.name, "route_by": q.route_by,
             "parameters": [{"name": n, "type": describe_type(t), "required": r, "json_schema": _json_schema(t)}
                            for n, t, r in query_parameters(q.fn)]}
            for q in runtime.queries.values()
        ],
        "steps": sorted(runtime.steps),
        # What it uses of other modules (mirror_depot, mirror_pstate, mirror_query).
        "mirrors": [{"module": upstream, "kind": kind, "name": name}
                    for upstream, names in runtime.module.dependencies().items() for kind, name in names],
    }


def _describe_depot(depot: Any) -> dict[str, Any]:
    decl = depot.decl
    named = isinstance(decl.partition_by, str) or decl.partition_by is None
    partition_by = decl.partition_by if named else "<function>"
    return {
        "name": depot.name,
        "partitions": depot.partitions,
        "partition_by": partition_by,
        "client_appends": decl.client_appends,
        "source": decl.source.describe() if decl.source is not None else None,  # an external depot's
        "event_type": describe_type(decl.event_type),
        "event_schema": _json_schema(decl.event_type),
        "topologies": [t.name for t in depot.decl.module.topologies.values() if depot.decl in t.depots],
    }
