"""Query invocation and dead letters: the endpoints that run user code on demand."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from headwater.errors import NotFound
from headwater.server.http import ApiError, decode_json, endpoint, json_response, query_float, read_body
from headwater.server.state import authorize, state_of

__all__ = ["ROUTES"]

RETRY_TIMEOUT_MAX_S = 300.0
QUERY_TIMEOUT_MAX_S = 300.0


def _arguments(payload: Any) -> tuple[list[Any], dict[str, Any]]:
    """`[...]` (positional) or `{"args": [...], "kwargs": {...}}`."""
    if payload is None:
        return [], {}
    if isinstance(payload, list):
        return payload, {}
    if isinstance(payload, dict) and set(payload) <= {"args", "kwargs"}:
        args, kwargs = payload.get("args", []), payload.get("kwargs", {})
        if isinstance(args, list) and isinstance(kwargs, dict):
            if "timeout" in kwargs:  # the keyword of the query's wait, in process as over HTTP
                raise ApiError(400, "bad_request", "a query argument cannot be passed by the name 'timeout': it "
                               "names the wait (?timeout= seconds); pass that argument by position in args")
            return args, kwargs
    raise ApiError(400, "bad_request", 'a query body is [arg, ...] or {"args": [...], "kwargs": {...}}')


@endpoint
async def invoke(request: Request) -> Response:
    module, name = request.path_params["module"], request.path_params["query"]
    authorize(request, "read", module)
    state = state_of(request)
    query = state.cluster.query(module, name)  # NotFound with a suggestion
    body = await read_body(request, state.max_body_bytes)
    args, kwargs = _arguments(decode_json(body) if body.strip() else None)
    timeout = query_float(request, "timeout", 30.0, maximum=QUERY_TIMEOUT_MAX_S)
    # The engine binds and converts the JSON arguments to the query's type hints (a UUID arrives
    # as a string), so a bad argument is the same SchemaError here as in process.
    return json_response({"value": await asyncio.to_thread(query, *args, timeout=timeout, **kwargs)})


def _letter_body(letter: Any) -> dict[str, Any]:
    return {"id": letter.id, "topology": letter.topology, "kind": letter.kind, "task": letter.task,
            "depot": letter.depot, "partition": letter.partition, "offset": letter.offset, "step": letter.step,
            "error_type": letter.error_type, "traceback": letter.traceback, "attempts": letter.attempts}


@endpoint
async def dead_letters(request: Request) -> Response:
    module, topology = request.path_params["module"], request.path_params["topology"]
    authorize(request, "read", module)
    letters = await asyncio.to_thread(state_of(request).cluster.dead_letters, module, topology)
    return json_response({"dead_letters": [_letter_body(letter) for letter in letters]})


@endpoint
async def retry(request: Request) -> Response:
    module, topology, letter_id = (request.path_params[k] for k in ("module", "topology", "id"))
    authorize(request, "admin", module)
    timeout = query_float(request, "timeout", 30.0, maximum=RETRY_TIMEOUT_MAX_S)
    found = await asyncio.to_thread(state_of(request).cluster.dead_letters, module, topology)
    letters = {letter.id: letter for letter in found}
    if letter_id not in letters:
        raise NotFound("dead letter", str(letter_id), [str(i) for i in letters],
                       where=f"topology {module}.{topology} (already retried?)")
    value = await asyncio.to_thread(letters[letter_id].retry, timeout=timeout)
    return json_response({"value": value})


ROUTES: list[tuple[str, Any, list[str]]] = [
    ("/api/modules/{module}/queries/{query}", invoke, ["POST"]),
    ("/api/modules/{module}/topologies/{topology}/dead-letters", dead_letters, ["GET"]),
    ("/api/modules/{module}/topologies/{topology}/dead-letters/{id:int}/retry", retry, ["POST"]),
]
