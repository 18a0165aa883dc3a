"""`/api/modules/{m}/pstates/{p}/watch?path=[...]`: a PState path watched over a WebSocket.

The server sends JSON text messages:

- `{"type": "value", "value": V}` first: the value at the path now (null when there is none);
- `{"type": "diffs", "diffs": [D, ...]}` for each commit that changed it, all of its diffs together,
  each `{"op": "put", "path": [...], "value": V}`, `{"op": "remove", "path": [...]}`,
  `{"op": "add" | "discard", "path": [...], "element": E}`, `{"op": "append", "path": [...],
  "values": [...]}` or `{"op": "truncate", "path": [...], "length": N}` (paths relative to the
  watched one, as JSON steps);
- `{"type": "resync", "value": V}` when diffs were dropped (the client fell more than
  `WATCH_COMMITS_MAX` commits behind, or the module was updated): start again from `V`;
- `{"type": "heartbeat"}` after `WATCH_HEARTBEAT_S` without another message;
- `{"type": "error", "error": code, "message": ...}` (the codes of the HTTP API), then the server
  closes the socket: for a bad request at once, and `not_found` later if an update deletes the
  watched PState.

The token is the `Authorization: Bearer` header or, for browsers (which cannot set headers on a
WebSocket), `?token=`; it needs `read` on the module. One socket watches one path; reconnecting
starts with the current value again.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from starlette.websockets import WebSocket

from headwater.errors import PathError
from headwater.pstate import diffs as d
from headwater.server.http import ApiError
from headwater.server.paths import decode_path, has_navigators
from headwater.server.sockets import authorize_socket, pump, send, serving
from headwater.server.state import state_of

__all__ = ["WATCH_COMMITS_MAX", "WATCH_HEARTBEAT_S", "decode_json", "encode_diff", "watch"]

WATCH_HEARTBEAT_S = 15.0  # a message at least this often, so proxies and clients know the socket lives
WATCH_COMMITS_MAX = 1_000  # commits a socket holds for a slow client; beyond, it resyncs


def encode_diff(change: d.Diff) -> dict[str, Any]:
    """One diff as the JSON the endpoint sends (and the JavaScript client applies)."""
    if isinstance(change, d.Put):
        return {"op": "put", "path": list(change.path), "value": change.value}
    if isinstance(change, d.Remove):
        return {"op": "remove", "path": list(change.path)}
    if isinstance(change, (d.Add, d.Discard)):
        return {"op": "add" if isinstance(change, d.Add) else "discard", "path": list(change.path),
                "element": change.element}
    if isinstance(change, d.Append):
        return {"op": "append", "path": list(change.path), "values": list(change.values)}
    if isinstance(change, d.Truncate):
        return {"op": "truncate", "path": list(change.path), "length": change.length}
    assert isinstance(change, d.Resync)
    return {"op": "resync", "value": change.value}


class _Outbox:
    """What a socket has to send: commits, filled from the delivering thread, bounded."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._commits: deque[list[d.Diff]] = deque()
        self._value: Any = None
        self.resync = False
        self.ended: str | None = None  # the cluster ended the subscription (what it watched was deleted)
        self.ready = asyncio.Event()

    def on_commit(self, diffs: list[d.Diff], value: Any) -> None:  # on the delivering thread
        self._loop.call_soon_threadsafe(self._add, diffs, value)

    def _add(self, diffs: list[d.Diff], value: Any) -> None:
        self._value = value
        if any(isinstance(change, d.Resync) for change in diffs) or len(self._commits) >= WATCH_COMMITS_MAX:
            self._commits.clear()
            self.resync = True
        else:
            self._commits.append(diffs)
        self.ready.set()

    def on_end(self, reason: str) -> None:  # on the delivering thread
        self._loop.call_soon_threadsafe(self._end, reason)

    def _end(self, reason: str) -> None:
        self.ended = reason
        self.ready.set()

    def take(self) -> list[dict[str, Any]]:
        self.ready.clear()
        if self.ended is not None:  # sent as an error, and the socket closes
            raise ApiError(404, "not_found", f"the watch ended: {self.ended}")
        if self.resync:
            self.resync = False
            self._commits.clear()
            return [{"type": "resync", "value": self._value}]
        messages = [{"type": "diffs", "diffs": [encode_diff(change) for change in commit]}
                    for commit in self._commits]
        self._commits.clear()
        return messages


async def watch(websocket: WebSocket) -> None:
    subscription = None
    try:
        async with serving(websocket):
            subscription, outbox = await _subscribe(websocket)
            await send(websocket, {"type": "value", "value": subscription.value})
            subscription.when_ended(outbox.on_end)

            async def take() -> list[dict[str, Any]]:
                return outbox.take()

            await pump(websocket, outbox.ready, take, WATCH_HEARTBEAT_S)
    finally:
        if subscription is not None:
            await asyncio.to_thread(subscription.close)


async def _subscribe(websocket: WebSocket) -> tuple[Any, _Outbox]:
    params = websocket.path_params
    module, name = params["module"], params["pstate"]
    state = state_of(websocket)
    authorize_socket(websocket, "read", module)
    task = websocket.query_params.get("task")
    try:
        task_id = None if task is None or task == "" else int(task)
    except ValueError:
        raise ApiError(400, "bad_request", f"query parameter task={task!r} must be an integer") from None
    root = state.cluster.pstate(module, name, task=task_id)
    raw = websocket.query_params.get("path")
    steps: Any = [] if raw in (None, "") else decode_json(raw, "path")
    if not isinstance(steps, list) or has_navigators(steps):
        raise PathError(f"path must be a JSON array of keys, fields and indexes (no navigators), not {raw!r}")
    view = root
    for step in decode_path(root.schema, steps):
        view = view[step]
    outbox = _Outbox(asyncio.get_running_loop())
    subscription = await asyncio.to_thread(view.watch, on_commit=outbox.on_commit)
    return subscription, outbox


def decode_json(raw: str, name: str) -> Any:
    """Query parameter `name` decoded as JSON; a 400 malformed_json naming it otherwise."""
    import msgspec

    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError as e:
        raise ApiError(400, "malformed_json", f"{name} is not valid JSON: {e}") from None
