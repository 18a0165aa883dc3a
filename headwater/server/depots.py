"""Depot endpoints: append one event or many, partition sizes, and reading records by offset.

An append body is decoded straight into the depot's event type, so a malformed or mistyped body
is refused (400/422) before anything reaches a task: nothing is appended on a 4xx.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from headwater.client.api import AppendResult, DepotClient, DepotRecord
from headwater.engine.definitions import Ack
from headwater.engine.events import schema_error
from headwater.errors import HeadwaterError
from headwater.server.catalog import event_type, runtime_of
from headwater.server.http import ApiError, endpoint, json_response, query_float, query_int, read_body, too_deep
from headwater.server.state import ServerState, authorize, state_of

__all__ = ["APPEND_MANY_MAX", "ROUTES", "record_row"]

TIMEOUT_MAX_S = 300.0  # the longest an HTTP append may wait for its ack
APPEND_MANY_MAX = 10_000  # events in one append-many request
RECORDS_PAGE_MAX = 10_000  # records in one read
RECORDS_PAGE_DEFAULT = 100
OFFSET_MAX = 2**63 - 1  # offsets are unsigned 64-bit; this leaves room for start + limit


def _depot(request: Request, action: str) -> tuple[ServerState, DepotClient]:
    module, name = request.path_params["module"], request.path_params["depot"]
    authorize(request, action, module)
    state = state_of(request)
    return state, state.cluster.depot(module, name)


def _ack(request: Request) -> Ack:
    return Ack.parse(request.query_params.get("ack", "full"))  # a ValueError answers 400 bad_request


def _decode_events(state: ServerState, depot: DepotClient, body: bytes, *, many: bool) -> Any:
    kind = event_type(runtime_of(state.cluster, depot.module), depot.name)
    label = f"event for depot {depot.module}.{depot.name}"
    decoder = state.event_decoder(depot.module, depot.name, list[kind] if many else kind)  # type: ignore[valid-type]
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as e:
        raise schema_error(f"{label} does not match {getattr(kind, '__name__', repr(kind))}", e) from None
    except msgspec.DecodeError as e:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {e}") from None
    except RecursionError:
        raise too_deep("the body") from None


def _result_body(result: AppendResult | None) -> dict[str, Any]:
    if result is None:
        return {"accepted": True, "partition": None, "offset": None, "results": {}}
    return {"partition": result.partition, "offset": result.offset, "results": result.results}


@endpoint
async def append(request: Request) -> Response:
    state, depot = _depot(request, "append")
    ack, timeout = _ack(request), query_float(request, "timeout", 30.0, maximum=TIMEOUT_MAX_S)
    key = request.headers.get("idempotency-key")
    event = _decode_events(state, depot, await read_body(request, state.max_body_bytes), many=False)
    started = time.perf_counter()
    try:
        result = await depot.append_async(event, ack=ack, timeout=timeout, idempotency_key=key)
    except HeadwaterError as e:
        state.metrics.observe_append(depot.module, depot.name, ack.value, type(e).__name__, 0.0)
        raise
    state.metrics.observe_append(depot.module, depot.name, ack.value, "ok", time.perf_counter() - started)
    return json_response(_result_body(result), 202 if result is None else 200)


@endpoint
async def append_many(request: Request) -> Response:
    state, depot = _depot(request, "append")
    ack, timeout = _ack(request), query_float(request, "timeout", 30.0, maximum=TIMEOUT_MAX_S)
    events = _decode_events(state, depot, await read_body(request, state.max_body_bytes), many=True)
    if len(events) > APPEND_MANY_MAX:
        raise ApiError(413, "body_too_large",
                       f"{len(events):,} events in one request; send at most {APPEND_MANY_MAX:,}")
    started = time.perf_counter()
    try:  # validated whole before anything is appended: a bad event anywhere appends nothing
        results = await depot.append_many_async(events, ack=ack, timeout=timeout)
    except HeadwaterError as e:
        state.metrics.observe_append(depot.module, depot.name, ack.value, type(e).__name__, 0.0, len(events))
        raise
    state.metrics.observe_append(depot.module, depot.name, ack.value, "ok", time.perf_counter() - started, len(events))
    return json_response({"results": [_result_body(r) for r in results]})


def _info(depot: DepotClient, partition: int) -> dict[str, Any]:
    info = depot.partition_info(partition)
    return {"partition": info.partition, "start_offset": info.start_offset, "end_offset": info.end_offset}


@endpoint
async def partitions(request: Request) -> Response:
    _, depot = _depot(request, "read")
    # On a thread: partitions of other processes' tasks are a call away (LocalCluster workers).
    infos = await asyncio.to_thread(lambda: [_info(depot, p) for p in range(depot.partitions)])
    return json_response({"module": depot.module, "depot": depot.name, "partitions": infos})


@endpoint
async def partition(request: Request) -> Response:
    _, depot = _depot(request, "read")
    return json_response(await asyncio.to_thread(_info, depot, request.path_params["partition"]))


@endpoint
async def records(request: Request) -> Response:
    """Records of one partition by offset: `start`/`stop`/`limit`, or the `last` N."""
    _, depot = _depot(request, "read")
    number = request.path_params["partition"]
    limit = query_int(request, "limit", RECORDS_PAGE_DEFAULT, maximum=RECORDS_PAGE_MAX)
    last = query_int(request, "last", None, maximum=RECORDS_PAGE_MAX)
    stop: int | None
    if last is not None:
        end = (await asyncio.to_thread(depot.partition_info, number)).end_offset
        start, stop = max(0, end - last), end
    else:
        start = query_int(request, "start", 0, maximum=OFFSET_MAX)
        stop = query_int(request, "stop", None, maximum=OFFSET_MAX)
    found = await asyncio.to_thread(depot.read, number, start, stop, limit=limit)
    return json_response({"records": [record_row(r) for r in found],
                          "next_offset": found[-1].offset + 1 if found else start})


def record_row(record: DepotRecord) -> dict[str, Any]:
    """One depot record as the API sends it (the records endpoint and the tail socket)."""
    return {"partition": record.partition, "offset": record.offset, "timestamp": record.timestamp,
            "event": record.event}


PREFIX = "/api/modules/{module}/depots/{depot}"
ROUTES: list[tuple[str, Any, list[str]]] = [
    (PREFIX + "/append", append, ["POST"]),
    (PREFIX + "/append-many", append_many, ["POST"]),
    (PREFIX + "/partitions", partitions, ["GET"]),
    (PREFIX + "/partitions/{partition:int}", partition, ["GET"]),
    (PREFIX + "/partitions/{partition:int}/records", records, ["GET"]),
]
