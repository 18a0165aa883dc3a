"""The OpenAPI 3.1 document of a running server, generated from its deployed modules.

Each depot's append body is the JSON Schema of its event type (from msgspec), each query's body
lists its arguments' schemas, so a client in any language can be generated from /api/openapi.json.
"""

from __future__ import annotations

from typing import Any

import msgspec

from headwater.engine.runtime import ModuleRuntime
from headwater.schema import as_schema
from headwater.server.catalog import query_parameters
from headwater.server.pstates import OPS

__all__ = ["openapi_document"]

_ERROR = {"$ref": "#/components/schemas/Error"}
_ERROR_STATUSES = {
    "400": "malformed JSON or a bad parameter (malformed_json, bad_request)",
    "401": "missing or invalid bearer token (unauthorized)",
    "403": "the token lacks the scope (permission_denied)",
    "404": "unknown module, depot, PState, query or topology (not_found; the message suggests a name)",
    "422": "the body or path does not fit the schema (schema_error, path_error)",
}


def _errors(*statuses: str, extra: dict[str, str] | None = None) -> dict[str, Any]:
    described = {s: _ERROR_STATUSES[s] for s in statuses} | (extra or {})
    return {status: {"description": text, "content": {"application/json": {"schema": _ERROR}}}
            for status, text in described.items()}


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _ok(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _param(name: str, where: str, schema: dict[str, Any], description: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "schema": schema, "description": description}


_ACK = _param("ack", "query", {"type": "string", "enum": ["full", "append", "none"], "default": "full"},
              "full: durable and processed by every stream topology; append: durable; none: do not wait")
_TIMEOUT = _param("timeout", "query", {"type": "number", "default": 30}, "seconds to wait for the ack (504 after)")


def _depot_paths(module: str, depot: str, event: dict[str, Any]) -> dict[str, Any]:
    prefix = f"/api/modules/{module}/depots/{depot}"
    append_errors = _errors("400", "401", "403", "404", "422", extra={
        "409": "idempotency key reused for a different event (idempotency_conflict)",
        "413": "body too large (body_too_large)",
        "500": "a topology raised (handler_error, with remote_traceback); the event is durable",
        "504": "no ack in time (ack_timeout, with partition and offset); the event is durable, still processing",
    })
    key = _param("Idempotency-Key", "header", {"type": "string"}, "a repeat with the same key appends nothing "
                 "and returns the first append's result")
    return {
        f"{prefix}/append": {"post": {
            "summary": f"Append one event to {module}.{depot}", "tags": [module],
            "parameters": [_ACK, _TIMEOUT, key], "requestBody": _json_body(event),
            "responses": {"200": _ok({"$ref": "#/components/schemas/AppendResult"}),
                          "202": _ok({"$ref": "#/components/schemas/AppendResult"}, "accepted (ack=none)"),
                          **append_errors}}},
        f"{prefix}/append-many": {"post": {
            "summary": f"Append several events to {module}.{depot}", "tags": [module], "parameters": [_ACK, _TIMEOUT],
            "requestBody": _json_body({"type": "array", "items": event}),
            "responses": {"200": _ok({"type": "object", "properties": {
                "results": {"type": "array", "items": {"$ref": "#/components/schemas/AppendResult"}}}}), **append_errors}}},
        f"{prefix}/partitions/{{partition}}/records": {"get": {
            "summary": f"Read records of one partition of {module}.{depot} by offset", "tags": [module],
            "parameters": [_param("partition", "path", {"type": "integer"}, "partition number", True),
                           _param("start", "query", {"type": "integer"}, "first offset (inclusive)"),
                           _param("stop", "query", {"type": "integer"}, "last offset (exclusive)"),
                           _param("limit", "query", {"type": "integer", "maximum": 10_000}, "at most this many"),
                           _param("last", "query", {"type": "integer"}, "the last N records instead of start/stop")],
            "responses": {"200": _ok({"type": "object", "properties": {
                "records": {"type": "array", "items": {"type": "object", "properties": {
                    "partition": {"type": "integer"}, "offset": {"type": "integer"},
                    "timestamp": {"type": "string", "format": "date-time"}, "event": event}}},
                "next_offset": {"type": "integer"}}}), **_errors("400", "401", "403", "404")}}},
    }


def _pstate_path(module: str, pstate: str, schema_repr: str) -> dict[str, Any]:
    parameters = [
        _param("op", "path", {"type": "string", "enum": list(OPS)}, "the read to run at the end of the path", True),
        _param("path", "query", {"type": "string"}, 'JSON array of steps, e.g. ["ada@example.com", "pwd_hash"]; '
               'navigators as {"nav": "all"} (select only)'),
        _param("start", "query", {"type": "string"}, "range start (inclusive; JSON, or a plain string); slice index"),
        _param("stop", "query", {"type": "string"}, "range stop (exclusive; JSON, or a plain string); slice index"),
        _param("limit", "query", {"type": "integer", "maximum": 10_000}, "page size; more pages come with `next`"),
        _param("reverse", "query", {"type": "boolean"}, "descending key order"),
        _param("element", "query", {"type": "string"}, "the element for contains (JSON, or a plain string)"),
        _param("task", "query", {"type": "integer"}, "the task to read a per-task PState or a whole map on"),
    ]
    return {f"/api/modules/{module}/pstates/{pstate}/{{op}}": {"get": {
        "summary": f"Read PState {module}.{pstate}: {schema_repr}", "tags": [module], "parameters": parameters,
        "responses": {"200": _ok({"type": "object", "properties": {"value": {}, "found": {"type": "boolean"},
                                                                   "next": {"type": "object"}}}),
                      **_errors("400", "401", "403", "404", "422")}}}}


def _query_path(module: str, name: str, fn: Any) -> dict[str, Any]:
    items = []
    for _, kind, _ in query_parameters(fn):
        try:
            items.append(msgspec.json.schema(kind))
        except (TypeError, ValueError):
            items.append({})
    body = {"type": "object", "properties": {"args": {"type": "array", "prefixItems": items}, "kwargs": {"type": "object"}}}
    return {f"/api/modules/{module}/queries/{name}": {"post": {
        "summary": f"Invoke query {module}.{name}", "tags": [module], "requestBody": _json_body(body),
        "responses": {"200": _ok({"type": "object", "properties": {"value": {}}}),
                      **_errors("400", "401", "403", "404", "422", extra={"500": "the query raised (handler_error)"})}}}}


def _topology_paths(module: str, topology: str) -> dict[str, Any]:
    prefix = f"/api/modules/{module}/topologies/{topology}/dead-letters"
    return {
        prefix: {"get": {"summary": f"Dead letters of {module}.{topology}", "tags": [module],
                         "responses": {"200": _ok({"type": "object"}), **_errors("401", "403", "404")}}},
        prefix + "/{id}/retry": {"post": {
            "summary": f"Retry a dead letter of {module}.{topology} (admin)", "tags": [module],
            "parameters": [_param("id", "path", {"type": "integer"}, "dead letter id", True), _TIMEOUT],
            "responses": {"200": _ok({"type": "object", "properties": {"value": {}}}),
                          **_errors("401", "403", "404", extra={"500": "it failed again (handler_error)"})}}},
    }


_COMMON_SCHEMAS = {
    "Error": {"type": "object", "required": ["error", "message"], "properties": {
        "error": {"type": "string", "description": "stable code, e.g. schema_error, not_found, ack_timeout"},
        "message": {"type": "string"}, "path": {"type": "string"}, "partition": {"type": "integer"},
        "offset": {"type": "integer"}, "remote_traceback": {"type": "string"}}},
    "AppendResult": {"type": "object", "properties": {
        "partition": {"type": ["integer", "null"]}, "offset": {"type": ["integer", "null"]},
        "results": {"type": "object", "description": "what each stream topology returned, by name"}}},
}


def openapi_document(runtimes: list[ModuleRuntime], *, secured: bool) -> dict[str, Any]:
    depots = [(runtime, depot) for runtime in runtimes for depot in runtime.depots.values()]
    refs, components = msgspec.json.schema_components([d.decl.event_type for _, d in depots],
                                                      ref_template="#/components/schemas/{name}")
    paths: dict[str, Any] = {
        "/api/modules": {"get": {"summary": "Deployed modules: depots, PStates, topologies, queries and schemas",
                                 "responses": {"200": _ok({"type": "object"})}}},
        "/api/stats": {"get": {"summary": "Live numbers: depot sizes, topology progress, lag, dead letters, ack latency",
                               "responses": {"200": _ok({"type": "object"})}}},
    }
    for (runtime, depot), event in zip(depots, refs):
        if depot.decl.client_appends:
            paths.update(_depot_paths(runtime.name, depot.name, event))
    for runtime in runtimes:
        for pstate in runtime.pstates.values():
            paths.update(_pstate_path(runtime.name, pstate.name, repr(as_schema(pstate.decl.schema))))
        for name, query in runtime.queries.items():
            paths.update(_query_path(runtime.name, name, query.fn))
        for topology in runtime.streams:
            paths.update(_topology_paths(runtime.name, topology))
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "headwater", "version": "1", "description": "Append to depots, read PStates, run queries. "
                 "Errors are {\"error\": code, \"message\": ...}; see docs/http-api.md."},
        "paths": paths,
        "components": {"schemas": {**components, **_COMMON_SCHEMAS}},
    }
    if secured:
        document["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        document["security"] = [{"bearer": []}]
    return document
