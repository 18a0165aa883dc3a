"""Keep-alive HTTP/1.1 connections to one server, shared by the threads of one `hw.connect` client.

A deliberately small HTTP/1.1 client: the request is written as one buffer, and the answer is
read with a buffered reader over the socket (Content-Length or chunked bodies, 1xx answers
skipped, `Connection: close` honoured). It costs a fraction of the CPU per request of the
general-purpose clients (figures in docs/ARCHITECTURE.md), which on a small machine is CPU the
server gets instead.

A request takes an idle connection, or opens one, and gives it back once the answer is read. A
pooled connection may have been closed by the server while it sat idle (its keep-alive timeout);
such a connection is noticed before use when possible, and a request that fails on one is sent
again on a fresh connection only when that cannot apply it twice: it failed before the request
was sent, or the request is idempotent (a GET, a read-only query, an append with an idempotency
key).
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
from collections import deque
from dataclasses import dataclass
from io import BufferedReader
from urllib.parse import urlsplit

__all__ = ["CONNECTIONS_MAX", "ConnectError", "ConnectionLost", "ConnectionPool", "Response"]

CONNECTIONS_MAX = 64  # open connections per client; a request beyond waits for one to come back
LINE_BYTES_MAX = 65_536  # a status or header line longer than this is refused
FIELDS_MAX = 100  # header lines in one answer
INTERIM_ANSWERS_MAX = 10  # 1xx answers before the final one
_NO_BODY_STATUSES = (204, 304)


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes


class ConnectError(OSError):
    """No connection could be opened (refused, unknown host, timed out, all of them busy)."""


class ConnectionLost(OSError):
    """A connection failed mid-request; `sent` says whether the whole request had left, so the
    server may have acted on it."""

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


class _BadAnswer(Exception):
    """The bytes that came back are not an HTTP/1.1 answer (or the connection ended inside one)."""


def _readable_now(sock: socket.socket) -> bool:
    # An idle keep-alive connection has nothing to read: readable means the server closed it (or
    # sent something unasked), so it must not carry another request.
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([sock], [], [], 0)[0])


class _Connection:
    """One socket and the buffered reader answers are parsed from."""

    __slots__ = ("sock", "reader", "timeout_s")

    def __init__(self, sock: socket.socket, timeout_s: float) -> None:
        self.sock = sock
        self.reader: BufferedReader = sock.makefile("rb")
        self.timeout_s = timeout_s

    def set_timeout(self, timeout_s: float) -> None:
        if timeout_s != self.timeout_s:
            self.sock.settimeout(timeout_s)
            self.timeout_s = timeout_s

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


class ConnectionPool:
    """A thread-safe pool of keep-alive connections to the server at `url` (http or https)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not an http:// or https:// URL, e.g. http://127.0.0.1:8000")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._tls = ssl.create_default_context() if parts.scheme == "https" else None
        self._prefix = parts.path.rstrip("/")
        self._fixed_headers = f"Host: {parts.netloc.rpartition('@')[2]}\r\nAccept-Encoding: identity\r\n"
        self._idle: deque[_Connection] = deque()
        self._slots = threading.BoundedSemaphore(CONNECTIONS_MAX)
        self.closed = False

    def close(self) -> None:
        self.closed = True
        self._close_idle()

    def _close_idle(self) -> None:
        while self._idle:
            try:
                self._idle.pop().close()
            except IndexError:  # another thread took the last one
                return

    def request(self, method: str, target: str, body: bytes | None, headers: dict[str, str], *,
                timeout_s: float, idempotent: bool) -> Response:
        """Send one request and read its answer.

        Raises `ConnectError` when no connection opens, `ConnectionLost` when one fails mid-request
        and the request could not safely be sent again, and `TimeoutError` when the server stays
        silent for `timeout_s`.
        """
        message = self._message(method, target, body, headers)
        if not self._slots.acquire(timeout=timeout_s):
            raise ConnectError(f"all {CONNECTIONS_MAX} connections of this client stayed busy for {timeout_s}s")
        try:
            connection, reused = self._take(timeout_s)
            try:
                return self._exchange(connection, message)
            except ConnectionLost as lost:
                if not reused or (lost.sent and not idempotent):
                    raise
            self._close_idle()  # the server closed one idle connection: likely the others too
            return self._exchange(self._open(timeout_s), message)
        finally:
            self._slots.release()

    def _message(self, method: str, target: str, body: bytes | None, headers: dict[str, str]) -> bytes:
        """The whole request as one buffer, so it leaves in one write (headers and body together)."""
        lines = [f"{method} {self._prefix}{target} HTTP/1.1\r\n", self._fixed_headers]
        for name, value in headers.items():
            if "\r" in value or "\n" in value:
                raise ValueError(f"the {name} header cannot contain a line break: {value!r}")
            lines.append(f"{name}: {value}\r\n")
        if body is not None or method == "POST":
            lines.append(f"Content-Length: {len(body) if body else 0}\r\n")
        lines.append("\r\n")
        try:
            head = "".join(lines).encode("latin-1")
        except UnicodeEncodeError as e:
            raise ValueError(f"HTTP header values must be Latin-1 text: {e}") from None
        return head + body if body else head

    def _take(self, timeout_s: float) -> tuple[_Connection, bool]:
        while True:
            try:
                connection = self._idle.pop()
            except IndexError:
                return self._open(timeout_s), False
            if not _readable_now(connection.sock):
                connection.set_timeout(timeout_s)
                return connection, True
            connection.close()

    def _open(self, timeout_s: float) -> _Connection:
        try:
            sock = socket.create_connection((self._host, self._port), timeout=timeout_s)
        except OSError as e:  # refused, unknown host, timed out, ...
            raise ConnectError(str(e) or type(e).__name__) from e
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # requests are one write each
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=self._host)
        except OSError as e:
            sock.close()
            raise ConnectError(str(e) or type(e).__name__) from e
        return _Connection(sock, timeout_s)

    def _exchange(self, connection: _Connection, message: bytes) -> Response:
        """One request and its answer; the connection goes back to the pool only after a whole answer."""
        sent = False
        try:
            connection.sock.sendall(message)
            sent = True
            response, keep_alive = _read_answer(connection.reader)
        except TimeoutError:
            connection.close()
            raise
        except (OSError, _BadAnswer) as e:
            connection.close()
            raise ConnectionLost(str(e) or type(e).__name__, sent=sent) from e
        if keep_alive and not self.closed:
            self._idle.append(connection)
        else:
            connection.close()
        return response


def _line(reader: BufferedReader) -> bytes:
    line = reader.readline(LINE_BYTES_MAX + 1)
    if len(line) > LINE_BYTES_MAX:
        raise _BadAnswer(f"a line of the answer is longer than {LINE_BYTES_MAX:,} bytes")
    if not line.endswith(b"\n"):
        raise _BadAnswer("the server closed the connection without answering" if not line
                         else "the connection ended inside the answer's head")
    return line


def _fields(reader: BufferedReader) -> dict[bytes, bytes]:
    """Header (or trailer) fields up to the blank line, names lowercased."""
    fields: dict[bytes, bytes] = {}
    for _ in range(FIELDS_MAX + 1):
        line = _line(reader)
        if line in (b"\r\n", b"\n"):
            return fields
        name, _, value = line.partition(b":")
        fields[name.strip().lower()] = value.strip()
    raise _BadAnswer(f"the answer has more than {FIELDS_MAX} header lines")


def _head(reader: BufferedReader) -> tuple[bytes, int, dict[bytes, bytes]]:
    """The version, status and headers of the next final answer (interim 1xx answers are skipped)."""
    for _ in range(INTERIM_ANSWERS_MAX + 1):
        version, _, rest = _line(reader).partition(b" ")
        code = rest[:3]
        if not version.startswith(b"HTTP/1.") or not code.isdigit():
            raise _BadAnswer(f"not an HTTP/1.x status line: {version + b' ' + rest!r}")
        headers = _fields(reader)
        status = int(code)
        if not 100 <= status < 200:
            return version, status, headers
    raise _BadAnswer(f"more than {INTERIM_ANSWERS_MAX} interim answers")


def _read_answer(reader: BufferedReader) -> tuple[Response, bool]:
    """The answer to a request just sent, and whether the connection can carry another request."""
    version, status, headers = _head(reader)
    connection = headers.get(b"connection", b"").lower()
    keep_alive = b"close" not in connection if version == b"HTTP/1.1" else b"keep-alive" in connection
    length = headers.get(b"content-length")
    if status in _NO_BODY_STATUSES:
        body = b""
    elif b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        body = _chunked_body(reader)
    elif length is not None:
        if not length.isdigit():
            raise _BadAnswer(f"Content-Length {length!r} is not a number")
        body = _exactly(reader, int(length))
    else:  # no length given: the body ends when the server closes the connection
        body, keep_alive = reader.read(), False
    return Response(status, body), keep_alive


def _exactly(reader: BufferedReader, size: int) -> bytes:
    data = reader.read(size)
    if len(data) < size:
        raise _BadAnswer(f"the connection ended {size - len(data)} bytes before the end of the answer")
    return data


def _chunked_body(reader: BufferedReader) -> bytes:
    chunks = []
    while True:
        size_field = _line(reader).split(b";", 1)[0].strip()
        try:
            size = int(size_field, 16)
        except ValueError:
            raise _BadAnswer(f"bad chunk size {size_field!r}") from None
        if size == 0:
            break
        chunks.append(_exactly(reader, size))
        if _exactly(reader, 2) != b"\r\n":
            raise _BadAnswer("a chunk does not end with CRLF")
    _fields(reader)  # trailer fields, unused
    return b"".join(chunks)
