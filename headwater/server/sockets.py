"""What the WebSocket endpoints share (the PState watch and the depot tail): the token, the loop
that sends what is ready or a heartbeat, and refusing a request with an error message."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from headwater.client.remote import wire_error
from headwater.errors import HeadwaterError
from headwater.server.http import ApiError, json_answer
from headwater.server.state import state_of

__all__ = ["authorize_socket", "pump", "refuse", "send", "serving"]

CLOSE_POLICY = 1008  # the WebSocket close code for a refused request


@contextlib.asynccontextmanager
async def serving(websocket: WebSocket) -> AsyncIterator[None]:
    """Accept the socket; an expected failure in the block is sent to the client as an error
    message (`refuse`), and the client closing the socket ends it quietly."""
    await websocket.accept()
    try:
        yield
    except (HeadwaterError, ApiError, ValueError) as e:
        await refuse(websocket, e)
    except WebSocketDisconnect:
        pass


def authorize_socket(websocket: WebSocket, action: str, module: str) -> None:
    """The `Authorization: Bearer` header or, for browsers (which cannot set headers on a
    WebSocket), `?token=`, must allow `action` on `module` when the server has tokens."""
    state = state_of(websocket)
    if state.auth.tokens:
        token = websocket.query_params.get("token")
        header = websocket.headers.get("authorization") or (f"Bearer {token}" if token else None)
        state.auth.require(header, action, module)


async def pump(websocket: WebSocket, ready: asyncio.Event, take: Callable[[], Awaitable[list[dict[str, Any]]]],
               heartbeat_s: float) -> None:
    """Until the client closes the socket: send `await take()` whenever `ready` is set, and a
    heartbeat after `heartbeat_s` without another message."""
    listening = asyncio.create_task(_until_closed(websocket))
    try:
        while not listening.done():
            waiting = asyncio.create_task(ready.wait())
            done, _ = await asyncio.wait({waiting, listening}, timeout=heartbeat_s, return_when=asyncio.FIRST_COMPLETED)
            if listening in done:
                waiting.cancel()
                return
            if waiting not in done:
                waiting.cancel()
                await send(websocket, {"type": "heartbeat"})
                continue
            for message in await take():
                await send(websocket, message)
    finally:
        listening.cancel()


async def _until_closed(websocket: WebSocket) -> None:
    """Read (and ignore) what the client sends until it closes the socket."""
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return


async def send(websocket: WebSocket, message: dict[str, Any]) -> None:
    _, body = json_answer(message)
    await websocket.send_text(body.decode())


async def refuse(websocket: WebSocket, error: Exception) -> None:
    """Send `{"type": "error", "error": code, "message": ...}` (the codes of the HTTP API) and close."""
    if isinstance(error, ApiError):
        code, message = error.code, error.message
    elif isinstance(error, HeadwaterError):
        code, message = wire_error(error)[1], str(error)
    else:
        code, message = "bad_request", str(error)
    with contextlib.suppress(Exception):
        await send(websocket, {"type": "error", "error": code, "message": message})
        await websocket.close(code=CLOSE_POLICY, reason=code)
