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

While it reads a request, a connection holds memory and a parser that does work per byte, so
reading is bounded (`ConnectionLimits`): a head (request line and headers) larger than
`headers_max_bytes` is refused with 431 before more of it is parsed, and a head or body that
does not arrive in time is answered 408 and its connection closed, so a client that sends part
of a request and stops (slowloris) cannot keep a connection for long. The limits are counted on
the bytes fed to the parser, before any auth or ASGI work. Timers are armed only when a read
is left incomplete, so a request that arrives whole in one read costs no timer.
"""

from __future__ import annotations

import asyncio
import functools
import http
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

__all__ = ["BODY_TIMEOUT_S", "EVENT_LOOP", "HEADERS_MAX_BYTES", "HEADERS_TIMEOUT_S", "IDLE_TIMEOUT_S",
           "CoalescingTransport", "ConnectionLimits", "http_protocol"]

HEADERS_MAX_BYTES = 64 * 1024  # request line and headers together; larger heads are refused with 431
HEADERS_TIMEOUT_S = 10.0  # from the first byte of a head to its end
IDLE_TIMEOUT_S = 5.0  # a connection with no request under way (new, or kept alive) is closed after this
BODY_TIMEOUT_S = 30.0  # from the end of the head to the end of the body: 1 MiB at 35 KB/s


@dataclass(frozen=True)
class ConnectionLimits:
    """What one connection may make the server hold while it reads a request."""

    headers_max_bytes: int = HEADERS_MAX_BYTES
    idle_timeout_s: float = IDLE_TIMEOUT_S
    headers_timeout_s: float = HEADERS_TIMEOUT_S
    body_timeout_s: float = BODY_TIMEOUT_S


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


def http_protocol(answer_now: AnswerNow | None = None,
                  limits: ConnectionLimits = ConnectionLimits()) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol on the fastest parser installed, writing through a CoalescingTransport,
    reading requests within `limits`, and answering at once what `answer_now` (method, path, query
    string, headers) can answer."""
    base: Any
    try:
        import httptools
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol as base

        class H11CoalescingProtocol(base):
            # h11 bounds the head itself (uvicorn's h11_max_incomplete_event_size); the timeouts and
            # answering early hook into the httptools parser's callbacks.
            def connection_made(self, transport: Any) -> None:
                super().connection_made(CoalescingTransport(transport, asyncio.get_running_loop()))

        return H11CoalescingProtocol

    class CoalescingProtocol(base):
        _answered = False  # the request being parsed was answered from its headers
        _reading_head = True  # between requests or inside a head; False while a body is read
        _head_bytes = 0  # bytes of the current head fed to the parser
        _read_timer: asyncio.TimerHandle | None = None  # the deadline of an incomplete head or body

        def connection_made(self, transport: Any) -> None:
            super().connection_made(CoalescingTransport(transport, asyncio.get_running_loop()))
            # A connection that never sends a byte is closed like an idle kept-alive one.
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive,
                                                                self.timeout_keep_alive_handler)

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_read_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._reading_head:
                if len(data) > limits.headers_max_bytes - self._head_bytes:
                    self._feed_bounded(data)
                    return
                self._head_bytes += len(data)
            super().data_received(data)
            if self._read_timer is None and (self._head_bytes or not self._reading_head):
                self._arm_read_timer()

        def _feed_bounded(self, data: bytes) -> None:
            """Feed `data` in pieces, so that no more than `headers_max_bytes` of one head reach the parser.

            A pipelined head that starts inside a piece, after the end of an earlier request, is
            counted from the next piece on: it may reach twice the bound before it is refused.
            """
            while data:
                if not self._reading_head:
                    super().data_received(data)
                    break
                room = limits.headers_max_bytes - self._head_bytes
                if room <= 0:
                    self._refuse(431, "headers_too_large",
                                 f"the request line and headers are larger than {limits.headers_max_bytes:,} bytes; "
                                 "send shorter headers, and large parameters in a request body")
                    return
                piece, data = data[:room], data[room:]
                self._head_bytes += len(piece)
                super().data_received(piece)
                if self.transport.is_closing():
                    return
            if self._read_timer is None and (self._head_bytes or not self._reading_head):
                self._arm_read_timer()

        def _arm_read_timer(self) -> None:
            if self.transport.is_closing():
                return
            timeout_s = limits.headers_timeout_s if self._reading_head else limits.body_timeout_s
            self._read_timer = self.loop.call_later(timeout_s, self._read_timed_out)

        def _cancel_read_timer(self) -> None:
            if self._read_timer is not None:
                self._read_timer.cancel()
                self._read_timer = None

        def _read_timed_out(self) -> None:
            self._read_timer = None
            if self.transport.is_closing():
                return
            cycle = self.cycle
            if self.flow.read_paused or (self._reading_head and cycle is not None and not cycle.response_complete):
                # The server stopped reading (an earlier request is still being answered, or the app
                # has not taken the body so far): the wait is ours, not the client's.
                self._arm_read_timer()
                return
            if self._reading_head:
                self._refuse(408, "request_timeout", f"the request line and headers did not arrive within "
                             f"{limits.headers_timeout_s}s of their first byte; send a whole request at once")
            elif cycle is not None and cycle.response_started:
                self.transport.close()  # answered already (e.g. 413); the rest of the body never came
            else:
                self._refuse(408, "request_timeout", f"the request body did not arrive within "
                             f"{limits.body_timeout_s}s of its headers; send the body with the request, "
                             "and the whole body its Content-Length announces")

        def send_400_response(self, msg: str) -> None:
            # uvicorn answers a request the parser rejects in plain text; every error here is JSON.
            self._refuse(400, "bad_request", f"the request is not valid HTTP/1.1 ({msg.rstrip('.')})")

        def _refuse(self, status: int, code: str, message: str) -> None:
            """Answer with an error and close the connection (its reading cannot go on)."""
            self._write_json(status, msgspec.json.encode({"error": code, "message": message}), keep_alive=False)

        def on_message_begin(self) -> None:
            self._answered = False
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            self._reading_head = False
            self._cancel_read_timer()
            if answer_now is None or not self._answer_early():
                super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            if not self._answered:
                super().on_body(body)

        def on_message_complete(self) -> None:
            self._reading_head, self._head_bytes = True, 0
            self._cancel_read_timer()
            if not self._answered:
                super().on_message_complete()

        def _answer_early(self) -> bool:
            assert answer_now is not None
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

