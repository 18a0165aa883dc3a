"""The remote client's connection pool against a server whose answers are written byte for byte:
framing (lengths, chunks, close), and when a request that met a closed connection is sent again."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

import headwater as hw
from headwater.client import connections
from headwater.client.connections import ConnectionLost, ConnectionPool

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}"


@dataclass
class Answer:
    data: bytes | None  # None: close the connection without answering
    then_close: bool = False


@dataclass
class Received:
    connection: int
    head: bytes
    body: bytes


class ScriptedServer:
    """A loopback server that hands each request to `answer(number, received)` and sends what it returns."""

    def __init__(self, answer: Callable[[int, Received], Answer]) -> None:
        self.answer = answer
        self.received: list[Received] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._connections: list[socket.socket] = []

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:  # the listener was closed
                return
            self._connections.append(sock)
            thread = threading.Thread(target=self._serve, args=(sock, len(self._connections) - 1), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket, number: int) -> None:
        reader = sock.makefile("rb")
        with contextlib.suppress(OSError), sock, reader:
            while True:
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    line = reader.readline()
                    if not line:
                        return
                    head += line
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                received = Received(number, head, reader.read(length))
                self.received.append(received)
                answer = self.answer(len(self.received) - 1, received)
                if answer.data is None:
                    return
                sock.sendall(answer.data)
                if answer.then_close:
                    return

    def wait_closed(self, connection: int) -> None:
        """Until the server has closed its end of connection number `connection`."""
        self._threads[1 + connection].join(5)

    def __enter__(self) -> ScriptedServer:
        self._threads[0].start()
        return self

    def __exit__(self, *exc: object) -> None:
        for sock in (self._listener, *self._connections):  # shutdown wakes the threads blocked on them
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for thread in self._threads:
            thread.join(5)


def request(pool: ConnectionPool, method: str = "GET", *, headers: dict[str, str] | None = None,
            idempotent: bool | None = None) -> connections.Response:
    body = b"{}" if method == "POST" else None
    return pool.request(method, "/x", body, headers or {}, timeout_s=5.0,
                        idempotent=method == "GET" if idempotent is None else idempotent)


@pytest.fixture
def pool() -> Iterator[Callable[[ScriptedServer], ConnectionPool]]:
    made: list[ConnectionPool] = []

    def make(server: ScriptedServer) -> ConnectionPool:
        made.append(ConnectionPool(server.url))
        return made[-1]

    yield make
    for each in made:
        each.close()


@pytest.mark.parametrize("answer, body", [
    (OK, b'{"ok":true}'),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\n{\"ok\r\n7\r\n\":true}\r\n0\r\nX-Trailer: 1\r\n\r\n",
     b'{"ok":true}'),
    (b"HTTP/1.1 100 Continue\r\n\r\n" + OK, b'{"ok":true}'),
    (b"HTTP/1.1 204 No Content\r\n\r\n", b""),
])
def test_answers_are_framed_by_length_or_chunks_and_the_connection_is_kept(pool, answer, body):
    with ScriptedServer(lambda n, r: Answer(answer)) as server:
        client = pool(server)
        assert [request(client).body for _ in range(3)] == [body] * 3
        assert {r.connection for r in server.received} == {0}


def test_a_request_leaves_in_one_write_with_host_length_and_headers(pool):
    with ScriptedServer(lambda n, r: Answer(OK)) as server:
        request(pool(server), "POST", headers={"Authorization": "Bearer s3cret"})
        [received] = server.received
        assert received.head.startswith(b"POST /x HTTP/1.1\r\nHost: 127.0.0.1:")
        assert b"\r\nAuthorization: Bearer s3cret\r\n" in received.head and b"\r\nContent-Length: 2\r\n" in received.head
        assert received.body == b"{}"


def test_connection_close_and_an_answer_without_length_end_the_connection(pool):
    answers = [b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}",
               b"HTTP/1.0 200 OK\r\n\r\n[1, 2]"]
    with ScriptedServer(lambda n, r: Answer(answers[n], then_close=True)) as server:
        client = pool(server)
        assert request(client).body == b"{}"
        assert request(client).body == b"[1, 2]"
        assert [r.connection for r in server.received] == [0, 1]


@pytest.mark.parametrize("answer", [b"SPDY/3 200 OK\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n{}",
                                    b"HTTP/1.1 200 OK\r\nContent-Length: two\r\n\r\n"])
def test_a_broken_answer_is_a_lost_connection(pool, answer):
    with ScriptedServer(lambda n, r: Answer(answer, then_close=True)) as server:
        with pytest.raises(ConnectionLost) as caught:
            request(pool(server), "POST")
        assert caught.value.sent


def test_an_idle_connection_the_server_closed_is_noticed_before_a_post(pool):
    # The server's keep-alive timeout: it answers, then closes the idle connection.
    with ScriptedServer(lambda n, r: Answer(OK, then_close=True)) as server:
        client = pool(server)
        request(client, "POST")
        server.wait_closed(0)
        assert request(client, "POST").status == 200
        assert [r.connection for r in server.received] == [0, 1]


def closes_on_the_second_request(n: int, received: Received) -> Answer:
    """Answers the first request and closes the connection when the second arrives (as a server
    does when its keep-alive timeout ends just as a request is sent); answers later ones."""
    return Answer(None) if n == 1 else Answer(OK)


def test_a_get_that_meets_a_closed_connection_is_sent_again_once(pool):
    with ScriptedServer(closes_on_the_second_request) as server:
        client = pool(server)
        request(client)
        assert request(client).status == 200
        assert [r.connection for r in server.received] == [0, 0, 1]


def test_a_post_without_idempotency_key_that_may_have_landed_is_not_sent_again(pool):
    with ScriptedServer(closes_on_the_second_request) as server:
        client = pool(server)
        request(client, "POST")
        with pytest.raises(ConnectionLost):
            request(client, "POST")
        assert len(server.received) == 2


def test_an_idempotent_post_is_sent_again(pool):
    with ScriptedServer(closes_on_the_second_request) as server:
        client = pool(server)
        request(client, "POST")
        assert request(client, "POST", idempotent=True).status == 200
        assert [r.connection for r in server.received] == [0, 0, 1]


class _BrokenPipe:
    """A socket whose sends fail: the request never left."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def sendall(self, data: bytes) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    def __getattr__(self, name: str) -> object:
        return getattr(self._sock, name)


def test_a_post_that_failed_before_leaving_is_sent_again(pool):
    with ScriptedServer(lambda n, r: Answer(OK)) as server:
        client = pool(server)
        request(client, "POST")
        [idle] = client._idle
        idle.sock = _BrokenPipe(idle.sock)  # type: ignore[assignment]
        assert request(client, "POST").status == 200
        assert [r.connection for r in server.received] == [0, 1]


def test_over_hw_connect_a_lost_append_is_unavailable_and_says_it_may_have_landed():
    with ScriptedServer(closes_on_the_second_request) as server, hw.connect(server.url) as client:
        client.request("POST", "/api/x", content=b"{}")
        with pytest.raises(hw.Unavailable, match="may have been applied"):
            client.request("POST", "/api/x", content=b"{}")
        assert client.request("POST", "/api/x", content=b"{}", headers={"Idempotency-Key": "k"}) == {"ok": True}


def test_a_silent_server_is_an_ack_timeout():
    silent = ScriptedServer(lambda n, r: Answer(b""))  # reads each request, never answers
    with silent, hw.connect(silent.url, timeout_s=0.2) as client, pytest.raises(hw.AckTimeout, match="no answer"):
        client.request("GET", "/api/x")


def test_a_header_value_with_a_line_break_is_refused():
    with hw.connect("http://127.0.0.1:9") as client, pytest.raises(ValueError, match="line break"):
        client.request("POST", "/api/x", headers={"Idempotency-Key": "a\r\nX-Injected: 1"})
