"""How uvicorn runs the app: the fastest HTTP parser and event loop installed, and one write per answer.

httptools (HTTP parsing in C) and uvloop (the event loop on libuv) take far less CPU per request
than h11 and asyncio's own loop; both are dependencies, and the pure-Python pair is the fallback
where they cannot be installed (uvloop does not exist on Windows).

uvicorn writes an answer's head and its body with two writes, and each leaves at once as its own
TCP segment: on loopback that is a second send, and a second wake-up of the client, which first
reads a head with no body. `CoalescingTransport` gathers the writes made in one turn of the event
loop and sends them together at the end of the turn, so a whole answer leaves as one segment
while nothing waits longer than the turn in which it was written.

A GET with no body that the app can answer without awaiting (`HeadwaterApp.answer_now`: a point
read of a PState) is answered as soon as its headers are parsed, in the parser's callback: no
ASGI scope, request-response cycle or asyncio task is made for it, which is most of what such a
request costs. Anything else, and any request while an earlier one on the connection is still
being answered (responses must keep request order), goes through uvicorn's ASGI path.
"""

from __future__ import annotations

import asyncio
import functools
import http
import urllib.parse
from collections.abc import Callable
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


# (method, path, query string, headers) -> (status, JSON body), or None: not answered early
AnswerNow = Callable[[str, str, bytes, list[tuple[bytes, bytes]]], "tuple[int, bytes] | None"]


@functools.cache
def _status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return f"HTTP/1.1 {status} {phrase}\r\n".encode("ascii")


def http_protocol(answer_now: AnswerNow | None = None) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol on the fastest parser installed, writing through a CoalescingTransport,
    and answering at once what `answer_now` (method, path, query string, headers) can answer."""
    base: Any
    try:
        import httptools
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol as base

        answer_now = None  # answering early hooks into the httptools parser's callbacks

    class CoalescingProtocol(base):  # type: ignore[misc, valid-type]
        _answered = False  # the request being parsed was answered from its headers

        def connection_made(self, transport: Any) -> None:
            super().connection_made(CoalescingTransport(transport, asyncio.get_running_loop()))

        if answer_now is not None:

            def on_message_begin(self) -> None:
                self._answered = False
                super().on_message_begin()

            def on_headers_complete(self) -> None:
                if not self._answer_early():
                    super().on_headers_complete()

            def on_body(self, body: bytes) -> None:
                if not self._answered:
                    super().on_body(body)

            def on_message_complete(self) -> None:
                if not self._answered:
                    super().on_message_complete()

            def _answer_early(self) -> bool:
                parser = self.parser
                if (parser.get_method() != b"GET" or self.root_path or self.pipeline or parser.should_upgrade()
                        or (self.cycle is not None and not self.cycle.response_complete)):
                    return False
                for name, value in self.headers:
                    if (name == b"content-length" and value != b"0") or name == b"transfer-encoding":
                        return False  # a GET with a body: rare, and the ASGI path reads bodies
                url = httptools.parse_url(self.url)
                path = url.path.decode("ascii")
                if "%" in path:
                    path = urllib.parse.unquote(path)
                answer = answer_now("GET", path, url.query or b"", self.headers)
                if answer is None:
                    return False
                self._answered = True
                self._write_json(*answer, keep_alive=parser.get_http_version() != "1.0" and parser.should_keep_alive())
                return True

            def _write_json(self, status: int, body: bytes, *, keep_alive: bool) -> None:
                """Send a whole JSON answer as uvicorn would (its default headers, then ours)."""
                head = [_status_line(status)]
                for name, value in self.server_state.default_headers:
                    head += (name, b": ", value, b"\r\n")
                head += (b"content-length: ", str(len(body)).encode(), b"\r\ncontent-type: application/json\r\n")
                if not keep_alive:
                    head.append(b"connection: close\r\n")
                head += (b"\r\n", body)
                self.transport.write(b"".join(head))
                if keep_alive:
                    self.on_response_complete()  # counts it, arms the keep-alive timer, starts pipelined requests
                else:
                    self.server_state.total_requests += 1
                    self.transport.close()

    return CoalescingProtocol
