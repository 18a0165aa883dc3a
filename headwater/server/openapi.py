"""The OpenAPI 3.1 document of a running server, generated from its deployed modules.

Each depot's append body is the JSON Schema of its event type (from msgspec), each query's body
lists its arguments' schemas, so a client in any language can be generated from /api/openapi.json.
"""

from __future__ import annotations

from typing import Any

import msgspec

from headwater.client.remote import READ_PAGE_MAX
from headwater.engine.runtime import ModuleRuntime
from headwater.schema import as_schema
from headwater.server.catalog import query_parameters
from headwater.server.depots import OFFSET_MAX, RECORDS_PAGE_MAX, TIMEOUT_MAX_S
from headwater.server.pstates import OPS
from headwater.server.queries import QUERY_TIMEOUT_MAX_S, RETRY_TIMEOUT_MAX_S

__all__ = ["openapi_document"]

_ERROR = {"$ref": "#/components/schemas/Error"}
_ERROR_STATUSES = {
    "400": "malformed JSON or a bad parameter (malformed_json, bad_request)",
    "401": "missing or invalid bearer token (unauthorized)",
    "403": "the token lacks the scope (permission_denied)",
    "404": "unknown module, depot, PState, query, topology or dead letter (not_found; the message suggests a name)",
    "413": "body too large (body_too_large)",
    "422": "the body or path does not fit the schema (schema_error, path_error)",
    "503": "the cluster is closing or a task stopped (unavailable)",
}


def _errors(*statuses: str, extra: dict[str, str] | None = None) -> dict[str, Any]:
    described = {s: _ERROR_STATUSES[s] for s in statuses} | (extra or {})
    return {status: {"description": text, "content": {"application/json": {"schema": _ERROR}}}
            for status, text in described.items()}


def _json_body(schema: dict[str, Any], *, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def _ok(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _object(required: tuple[str, ...] = (), **properties: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


def _param(name: str, where: str, schema: dict[str, Any], description: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "schema": schema, "description": description}


_INT = {"type": "integer"}
_ACK = _param("ack", "query", {"type": "string", "enum": ["full", "append", "none"], "default": "full"},
              "full: durable and processed by every stream topology; append: durable; none: do not wait")


def _timeout(maximum: float, what: str) -> dict[str, Any]:
    return _param("timeout", "query", {"type": "number", "exclusiveMinimum": 0, "maximum": maximum, "default": 30},
                  f"seconds to wait for {what} (504 after)")


_PARTITION = _param("partition", "path", {"type": "integer", "minimum": 0}, "partition number", True)
_PARTITION_INFO = _object(("partition", "start_offset", "end_offset"),
                          partition=_INT, start_offset=_INT, end_offset=_INT)
_DEAD_LETTER = _object(("id", "topology", "kind", "task", "depot", "partition", "offset", "error_type", "traceback",
                        "attempts"),
                       id=_INT, topology={"type": "string"}, kind={"type": "string"}, task=_INT,
                       depot={"type": "string"}, partition=_INT,
                       offset=_INT, step={"type": ["string", "null"]}, error_type={"type": "string"},
                       traceback={"type": "string"}, attempts=_INT)
_VALUE = _object(("value",), value={})


def _depot_paths(module: str, depot: str, event: dict[str, Any], client_appends: bool) -> dict[str, Any]:
    prefix = f"/api/modules/{module}/depots/{depot}"
    append_errors = _errors("400", "401", "403", "404", "413", "422", "503", extra={
        "409": "idempotency key reused for a different event (idempotency_conflict)",
        "500": "a topology raised (handler_error, with remote_traceback); the event is durable",
        "504": "no ack in time. ack_timeout: the event is durable at partition and offset (durable: true) and "
               "still processing; not_confirmed: nothing says it was appended (durable: false, offset null), "
               "append again with the same Idempotency-Key",
    })
    key = _param("Idempotency-Key", "header", {"type": "string"}, "a repeat with the same key appends nothing "
                 "and returns the first append's result")
    offset = {"type": "integer", "minimum": 0, "maximum": OFFSET_MAX}
    read_errors = _errors("400", "401", "403", "404", "503")
    paths: dict[str, Any] = {
        f"{prefix}/partitions": {"get": {
            "summary": f"Offsets of every partition of {module}.{depot}", "tags": [module],
            "responses": {"200": _ok(_object(("module", "depot", "partitions"), module={"type": "string"},
                                             depot={"type": "string"},
                                             partitions={"type": "array", "items": _PARTITION_INFO})),
                          **read_errors}}},
        f"{prefix}/partitions/{{partition}}": {"get": {
            "summary": f"Offsets of one partition of {module}.{depot}", "tags": [module], "parameters": [_PARTITION],
            "responses": {"200": _ok(_PARTITION_INFO), **read_errors}}},
        f"{prefix}/partitions/{{partition}}/records": {"get": {
            "summary": f"Read records of one partition of {module}.{depot} by offset", "tags": [module],
            "parameters": [_PARTITION,
                           _param("start", "query", offset, "first offset (inclusive)"),
                           _param("stop", "query", offset, "last offset (exclusive)"),
                           _param("limit", "query", {"type": "integer", "minimum": 0, "maximum": RECORDS_PAGE_MAX},
                                  "at most this many"),
                           _param("last", "query", {"type": "integer", "minimum": 0, "maximum": RECORDS_PAGE_MAX},
                                  "the last N records instead of start/stop")],
            "responses": {"200": _ok(_object(("records", "next_offset"), records={"type": "array", "items": _object(
                ("partition", "offset", "timestamp", "event"), partition=_INT, offset=_INT,
                timestamp={"type": "string", "format": "date-time"}, event=event)}, next_offset=_INT)),
                          **read_errors}}},
    }
    if client_appends:
        result = {"$ref": "#/components/schemas/AppendResult"}
        paths[f"{prefix}/append"] = {"post": {
            "summary": f"Append one event to {module}.{depot}", "tags": [module],
            "parameters": [_ACK, _timeout(TIMEOUT_MAX_S, "the ack"), key], "requestBody": _json_body(event),
            "responses": {"200": _ok(result), "202": _ok(result, "accepted (ack=none)"), **append_errors}}}
        paths[f"{prefix}/append-many"] = {"post": {
            "summary": f"Append several events to {module}.{depot}", "tags": [module],
            "parameters": [_ACK, _timeout(TIMEOUT_MAX_S, "the acks")],
            "requestBody": _json_body({"type": "array", "items": event}),
            "responses": {"200": _ok(_object(("results",), results={"type": "array", "items": result})),
                          **append_errors}}}
    return paths


def _pstate_path(module: str, pstate: str, schema_repr: str) -> dict[str, Any]:
    parameters = [
        _param("op", "path", {"type": "string", "enum": list(OPS)}, "the read to run at the end of the path", True),
        _param("path", "query", {"type": "string"}, 'JSON array of steps, e.g. ["ada@example.com", "pwd_hash"]; '
               'navigators as {"nav": "all"} (select only)'),
        _param("start", "query", {"type": "string"}, "range start (inclusive; JSON, or a plain string); slice index"),
        _param("stop", "query", {"type": "string"}, "range stop (exclusive; JSON, or a plain string); slice index"),
        _param("limit", "query", {"type": "integer", "minimum": 0, "maximum": READ_PAGE_MAX},
               "page size; more pages come with `next`"),
        _param("reverse", "query", {"type": "boolean"}, "descending key order"),
        _param("element", "query", {"type": "string"}, "the element for contains (JSON, or a plain string)"),
        _param("task", "query", {"type": "integer", "minimum": 0},
               "the task to read a per-task PState or a whole map on"),
    ]
    cursor = {"type": "object", "description": 'where the next page starts: {"start": k}, or {"stop": k} in reverse'}
    return {f"/api/modules/{module}/pstates/{pstate}/{{op}}": {"get": {
        "summary": f"Read PState {module}.{pstate}: {schema_repr}", "tags": [module], "parameters": parameters,
        "responses": {"200": _ok(_object(("value",), value={}, found={"type": "boolean"}, next=cursor)),
                      **_errors("400", "401", "403", "404", "503", extra={
                          "422": "the path does not fit the schema (path_error), or a whole collection or select "
                                 "holds more than one answer may (read_too_large: read it in pages)"})}}}}


def _query_path(module: str, name: str, fn: Any) -> dict[str, Any]:
    items, required = [], 0
    for _, kind, needed in query_parameters(fn):
        try:
            items.append(msgspec.json.schema(kind))
        except (TypeError, ValueError):
            items.append({})
        required += needed
    positional: dict[str, Any] = {"type": "array", "minItems": required, "maxItems": len(items)}
    if items:
        positional["prefixItems"] = items
    named = {"type": "object", "additionalProperties": False,
             "properties": {"args": {k: v for k, v in positional.items() if k != "minItems"},
                            "kwargs": {"type": "object"}}}
    body = {"anyOf": [positional, named], "description": "[arg, ...] or {\"args\": [...], \"kwargs\": {...}}"}
    return {f"/api/modules/{module}/queries/{name}": {"post": {
        "summary": f"Invoke query {module}.{name}", "tags": [module],
        "parameters": [_timeout(QUERY_TIMEOUT_MAX_S, "the answer")],
        "requestBody": _json_body(body, required=required > 0),
        "responses": {"200": _ok(_VALUE),
                      **_errors("400", "401", "403", "404", "413", "422", "503", extra={
                          "500": "the query raised (handler_error)",
                          "504": "the query ran longer than timeout (query_timeout)"})}}}}


def _topology_paths(module: str, topology: str) -> dict[str, Any]:
    prefix = f"/api/modules/{module}/topologies/{topology}/dead-letters"
    return {
        prefix: {"get": {"summary": f"Dead letters of {module}.{topology}", "tags": [module],
                         "responses": {"200": _ok(_object(("dead_letters",),
                                                          dead_letters={"type": "array", "items": _DEAD_LETTER})),
                                       **_errors("401", "403", "404", "503")}}},
        prefix + "/{id}/retry": {"post": {
            "summary": f"Retry a dead letter of {module}.{topology} (admin)", "tags": [module],
            "parameters": [_param("id", "path", {"type": "integer", "minimum": 0}, "dead letter id", True),
                           _timeout(RETRY_TIMEOUT_MAX_S, "the retry")],
            "responses": {"200": _ok(_VALUE),
                          **_errors("400", "401", "403", "404", "503", extra={
                              "500": "it failed again (handler_error)",
                              "504": "it did not finish within timeout (not_confirmed)"})}}},
    }


def _server_paths(modules: list[str]) -> dict[str, Any]:
    """The endpoints about the server itself."""
    module = _param("module", "path", {"type": "string", "enum": modules} if modules else {"type": "string"},
                    "a deployed module's name (any other is a 404)", True)
    listing = {"type": "object", "description": "depots, PStates (schemas), topologies, queries (parameters), steps"}
    return {
        "/api/health": {"get": {
            "summary": "Is the server up; module names only for a valid token when tokens are configured",
            "security": [],
            "responses": {"200": _ok(_object(("ok",), ok={"type": "boolean"},
                                             modules={"type": "array", "items": {"type": "string"}},
                                             pid={"type": "integer", "description": "the serving process"}))}}},
        "/api/modules": {"get": {
            "summary": "Deployed modules the token has a scope on: depots, PStates, topologies, queries and schemas",
            "responses": {"200": _ok(_object(("modules",), modules={"type": "array", "items": listing})),
                          **_errors("401")}}},
        "/api/modules/{module}": {"get": {
            "summary": "One module, described as in the listing (needs read or append on it)", "parameters": [module],
            "responses": {"200": _ok(listing), **_errors("401", "403", "404")}}},
        "/api/modules/{module}/migrations": {"get": {
            "summary": "The module's migrations (PStates, depot event types): ids, rewritten and to rewrite, done",
            "parameters": [module],
            "responses": {"200": _ok(_object(("migrations",), migrations={"type": "array", "items": _object(
                ("kind", "name", "ids", "version", "moved", "total", "done"),
                kind={"type": "string", "enum": ["pstate", "depot"]}, name={"type": "string"},
                ids={"type": "array", "items": {"type": "string"}}, version={"type": "integer"},
                moved={"type": "integer"}, total={"type": "integer"}, done={"type": "boolean"})})),
                          **_errors("401", "403", "404")}}},
        "/api/stats": {"get": {
            "summary": "Live numbers: depot sizes, topology progress, lag, dead letters, ack latency",
            "responses": {"200": _ok(_object(("time_s", "modules"), time_s={"type": "number"},
                                             modules={"type": "array", "items": {"type": "object"}})),
                          **_errors("401")}}},
        "/api/routes": {"get": {
            "summary": "Per module and task, the port where the process hosting the task answers alone (or null)",
            "responses": {"200": _ok(_object(("modules",), modules={
                "type": "object", "additionalProperties": {
                    "type": "array", "items": {"type": ["integer", "null"]}}})),
                          **_errors("401")}}},
        "/api/update": {"post": {
            "summary": "Apply a new version of the app file: check every module in it against the stored data, "
                       "then update (or deploy) them; needs admin on every module",
            "parameters": [
                _param("filename", "query", {"type": "string", "default": "app.py"}, "the app file's name (.py)"),
                _param("dry_run", "query", {"type": "boolean", "default": False}, "only check: change nothing"),
                _param("delete", "query", {"type": "array", "items": {"type": "string"}},
                       "module/name of a depot, PState or topology whose data to drop (repeat)"),
                _param("tasks", "query", {"type": "integer", "minimum": 1}, "tasks of a module the file adds")],
            "requestBody": {"required": True, "content": {"text/x-python": {"schema": {"type": "string"}}}},
            "responses": {"200": _ok(_object(("modules", "dry_run"), dry_run={"type": "boolean"}, modules={
                "type": "array", "items": _object(("module", "action", "version"), module={"type": "string"},
                                                  action={"type": "string", "enum": ["updated", "deployed"]},
                                                  version={"type": "integer"})})),
                          **_errors("400", "401", "403", "413", extra={
                              "415": "the body is not sent as text/x-python (unsupported_media_type)",
                              "422": "the code does not load, or the stored data cannot follow a change "
                                     "(definition_error, with `changes`)"})}}},
        "/api/backup": {"post": {
            "summary": "Back up every module to a directory on the server's machine: consistent across tasks, "
                       "incremental; needs admin on every module",
            "requestBody": {"required": True, "content": {"application/json": {"schema": _object(
                ("destination",), destination={"type": "string", "description": "an absolute path every worker "
                                                                                  "can write"})}}},
            "responses": {"200": _ok(_object(
                ("id", "destination", "modules", "files_copied", "bytes_copied", "files_reused", "bytes_reused",
                 "duration_s", "stall_s"), id={"type": "string"}, destination={"type": "string"},
                modules={"type": "object", "additionalProperties": {"type": "integer"}},
                files_copied={"type": "integer"}, bytes_copied={"type": "integer"}, files_reused={"type": "integer"},
                bytes_reused={"type": "integer"}, duration_s={"type": "number"}, stall_s={"type": "number"})),
                          **_errors("400", "401", "403", "413", extra={
                              "422": "the destination cannot be written (backup_error), or the body does not fit",
                              "503": "the tasks could not be held for the cut, or a worker is restarting"})}}},
        "/api/openapi.json": {"get": {
            "summary": "This document, for the modules the token has a scope on",
            "responses": {"200": _ok({"type": "object"}), **_errors("401")}}},
        "/metrics": {"get": {
            "summary": "Prometheus metrics (needs read on every module)",
            "responses": {"200": {"description": "Prometheus text format",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}},
                          **_errors("401", "403")}}},
    }


_COMMON_SCHEMAS = {
    "Error": {"type": "object", "required": ["error", "message"], "properties": {
        "error": {"type": "string", "description": "stable code, e.g. schema_error, not_found, ack_timeout"},
        "message": {"type": "string"},
        "path": {"type": "string", "description": "schema_error: where in the body, e.g. $.user_id"},
        "partition": {"type": ["integer", "null"]}, "offset": {"type": ["integer", "null"]},
        "durable": {"type": "boolean", "description": "ack_timeout (true) and not_confirmed (false)"},
        "remote_traceback": {"type": "string"}, "error_type": {"type": "string"},
        "topology": {"type": ["string", "null"]},
        "kind": {"type": "string"}, "name": {"type": "string"},
        "known": {"type": "array", "items": {"type": "string"}}}},
    "AppendResult": {"type": "object", "required": ["partition", "offset", "results"], "properties": {
        "accepted": {"type": "boolean", "description": "ack=none: handed to the task, not yet durable"},
        "partition": {"type": ["integer", "null"]}, "offset": {"type": ["integer", "null"]},
        "results": {"type": "object", "description": "what each stream topology returned, by name"}}},
}


def openapi_document(runtimes: list[ModuleRuntime], *, secured: bool) -> dict[str, Any]:
    depots = [(runtime, depot) for runtime in runtimes for depot in runtime.depots.values()]
    refs, components = msgspec.json.schema_components([d.decl.event_type for _, d in depots],
                                                      ref_template="#/components/schemas/{name}")
    paths = _server_paths([runtime.name for runtime in runtimes])
    for (runtime, depot), event in zip(depots, refs, strict=True):
        paths.update(_depot_paths(runtime.name, depot.name, event, depot.decl.client_appends))
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
