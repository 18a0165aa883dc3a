"""PState reads: `GET /api/modules/{m}/pstates/{p}/{op}?path=[...]` with the read ops of a View.

The ops are get, exists, size, keys, items, values, slice, contains and select.

Ranges come back at most `READ_PAGE_MAX` elements at a time with a `next` cursor (`{"start": k}`
going forward, `{"stop": k}` in reverse), so no request reads without bound. A read of a whole
collection (`get` of a map, set or list stored element by element, or of a whole map on one task;
`select`) answers at most `READ_PAGE_MAX` elements too: a larger one is a 422 `read_too_large`
that says how to page it, rather than a first page that a client might take for the whole value.
Point reads run on the event loop (a committed-state read is microseconds); reads that may be
large run in a thread.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from headwater.client.remote import READ_PAGE_MAX
from headwater.client.seam import WouldWait, without_waiting
from headwater.errors import NotFound, PathError
from headwater.pstate import View
from headwater.schema import List, Map, Record, Set
from headwater.server.http import ApiError, endpoint, json_response, query_bool, query_int, query_json
from headwater.server.paths import convert_key, decode_path, has_navigators, key_schema_type
from headwater.server.state import authorize, state_of

__all__ = ["OPS", "ROUTES"]

OPS = ("get", "exists", "size", "keys", "values", "items", "slice", "contains", "select", "select_one")
_ABSENT = object()  # get() returns this when nothing is at the path, so null and absent differ


def _raw_path(request: Request) -> list[Any]:
    raw = query_json(request, "path")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise PathError(f"path must be a JSON array of steps, e.g. path=[\"ada@example.com\"], not {raw!r}")
    return raw


@endpoint
async def read(request: Request) -> Response:
    answer = answer_read(request)
    if isinstance(answer, InThread):
        answer = await asyncio.to_thread(*answer.call)
    return json_response(answer)


class InThread:
    """A read too large for the event loop: `call` (a function and its arguments) runs in a thread."""

    __slots__ = ("call",)

    def __init__(self, *call: Any) -> None:
        self.call = call


def answer_read(request: Any) -> Any:
    """The JSON body of a PState read, or `InThread` for one that may be large.

    `request` is a Starlette request or anything with its `path_params`, `query_params`,
    `headers` and `app`: the server also answers point reads straight from the HTTP parser.
    """
    params = request.path_params
    module, name, op = params["module"], params["pstate"], params["op"]
    authorize(request, "read", module)
    if op not in OPS:
        raise NotFound("PState operation", op, OPS)
    root: View = state_of(request).cluster.pstate(module, name, task=query_int(request, "task"))
    raw_path = _raw_path(request)
    if op in ("select", "select_one"):
        return InThread(_select, root, op, raw_path)
    if has_navigators(raw_path):
        raise PathError("navigators ({\"nav\": ...}) work only with the select and select_one operations; "
                        "use plain keys for get, keys, items, ...")
    view = root
    for step in decode_path(root.schema, raw_path):
        view = view[step]
    if op in ("exists", "size"):
        return _here_or_in_thread(_value, view, op)
    if op == "contains":
        element = convert_key(query_json(request, "element"), key_schema_type(view.schema))
        return _here_or_in_thread(_value, view, op, element)
    if op == "get":
        # A subindexed collection, or a whole map on one task, can be large: keep the event loop free.
        whole = view.schema.split or (not raw_path and isinstance(view.schema, Map))
        if whole:
            return InThread(_get_whole, view, f"PState {module}.{name} at path {raw_path}")
        return _here_or_in_thread(_get, view)
    if op == "slice":
        return InThread(_slice, view, _int_or_none(request, "start"), _int_or_none(request, "stop"))
    return InThread(_range, view, op, *_range_args(request, view))


def _here_or_in_thread(read: Any, *args: Any) -> Any:
    """`read(*args)` now if its task is in this process, else `InThread`: the event loop never
    waits for another process (a worker of a LocalCluster serving a read of a peer's task)."""
    try:
        with without_waiting():
            return read(*args)
    except WouldWait:
        return InThread(read, *args)


def _value(view: View, op: str, *args: Any) -> dict[str, Any]:
    return {"value": getattr(view, op)(*args)}


def _get(view: View) -> dict[str, Any]:
    value = view.get(_ABSENT)
    return {"value": None, "found": False} if value is _ABSENT else {"value": value, "found": True}


def _get_whole(view: View, label: str) -> dict[str, Any]:
    _check_whole(view, label)
    return _get(view)


def _check_whole(view: View, label: str) -> None:
    """Refuse (422 read_too_large) a whole read of a collection holding more than READ_PAGE_MAX elements."""
    schema = view.schema
    if isinstance(schema, Record):
        for name, field in schema.fields.items():
            if field.split:
                _check_whole(view[name], f"{label} field {name!r}")
        return
    size = view.size()
    if size > READ_PAGE_MAX:
        how = "slice with start and stop" if isinstance(schema, List) else "keys, values or items with start and limit"
        raise ApiError(422, "read_too_large", f"{label} holds {size:,} elements, more than the "
                       f"{READ_PAGE_MAX:,} one answer may hold; read it in pages: {how} (each answer's "
                       "\"next\" says where the next page starts; hw.connect follows it for you)")


def _select(root: View, op: str, raw_path: list[Any]) -> dict[str, Any]:
    navigators = decode_path(root.schema, raw_path)
    method = getattr(root, op, None)
    if method is None:
        raise PathError(f"{op} is not available in this version of headwater; read with plain keys and get/keys/items")
    value = method(*navigators)
    if op == "select" and len(value) > READ_PAGE_MAX:
        raise ApiError(422, "read_too_large", f"the navigators reached {len(value):,} values, more than the "
                       f"{READ_PAGE_MAX:,} one answer may hold; narrow them, e.g. "
                       f"{{\"nav\": \"range\", \"start\": K, \"limit\": {READ_PAGE_MAX}}} instead of "
                       "{\"nav\": \"all\"}, and ask again from the last key reached")
    return {"value": value}


def _int_or_none(request: Request, name: str) -> int | None:
    value = query_json(request, name)
    if value is not None and type(value) is not int:
        raise ApiError(400, "bad_request", f"query parameter {name}={value!r} must be an integer")
    return value


def _range_args(request: Request, view: View) -> tuple[Any, Any, int, bool]:
    key_type = key_schema_type(view.schema)
    start, stop = (query_json(request, b) for b in ("start", "stop"))
    limit = query_int(request, "limit", READ_PAGE_MAX, maximum=READ_PAGE_MAX)
    assert limit is not None
    return (None if start is None else convert_key(start, key_type),
            None if stop is None else convert_key(stop, key_type),
            limit, query_bool(request, "reverse"))


def _range(view: View, op: str, start: Any, stop: Any, limit: int, reverse: bool) -> dict[str, Any]:
    """One page of keys/values/items, and where the next page starts if there is one."""
    by_key = op == "keys" or isinstance(view.schema, Set)
    rows = (view.keys if by_key else view.items)(start, stop, limit=limit + 1, reverse=reverse)
    more, page = len(rows) > limit, rows[:limit]
    keys = page if by_key else [k for k, _ in page]
    value = keys if by_key else (page if op == "items" else [v for _, v in page])
    body: dict[str, Any] = {"value": value}
    if more:
        if reverse:
            body["next"] = {"stop": keys[-1]}  # stop is exclusive: the next page ends before this key
        else:
            body["next"] = {"start": rows[limit] if by_key else rows[limit][0]}
    return body


def _slice(view: View, start: int | None, stop: int | None) -> dict[str, Any]:
    first, end, _ = slice(start, stop).indices(view.size())
    body: dict[str, Any] = {}
    if end - first > READ_PAGE_MAX:
        end = first + READ_PAGE_MAX
        body["next"] = {"start": end}
    body["value"] = view.slice(first, end)
    return body


ROUTES: list[tuple[str, Any, list[str]]] = [
    ("/api/modules/{module}/pstates/{pstate}/{op}", read, ["GET"]),
]
