"""How uvicorn runs the app: the fastest HTTP parser and event loop installed, and one write per answer.

httptools (HTTP parsing in C) and uvloop (the event loop on libuv) take far less CPU per request
than h11 and asyncio's own loop; both are dependencies, and the pure-Python pair is the fallback
where they cannot be installed (uvloop does not exist on Windows).

uvicorn writes an answer's head and its body with two writes, and each leaves at once as its own
TCP segment: on loopback that is a second send, and a second wake-up of the client, which first
reads a head with no body. `CoalescingTransport` gathers the writes made in one turn of the event
loop and sends them together at the end of the turn, so a whole answer leaves as one segment
while nothing waits longer than the turn in which it was written.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["EVENT_LOOP", "CoalescingTransport", "http_protocol"]


def _event_loop() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


EVENT_LOOP = _event_loop()


class CoalescingTransport:
    """A transport whose writes in one event-loop turn leave as one write of the real transport."""

    def __init__(self, transport: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def _flush(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self._flush()  # what was written before close still leaves, as with the real transport
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        # Everything else (is_closing, pause_reading, get_extra_info, ...) is the real transport's.
        return getattr(self._transport, name)


def http_protocol() -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol on the fastest parser installed, writing through a CoalescingTransport."""
    base: Any
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base  # needs httptools
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol as base

    class CoalescingProtocol(base):  # type: ignore[misc, valid-type]
        def connection_made(self, transport: Any) -> None:
            super().connection_made(CoalescingTransport(transport, asyncio.get_running_loop()))

    return CoalescingProtocol
