"""How the app is served: the hot routes answer as the route table would, point reads answered
from the parser answer as the ASGI path would, answers leave in one write and in request order,
and uvicorn runs on httptools and uvloop."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.parse
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.routing import Match

import headwater as hw
from examples.registration import UserSignUp, registration
from headwater.server import Auth, ServerThread, create_app
from headwater.server.app import HOT_ENDPOINTS, _query_params
from headwater.server.auth import Token
from headwater.server.protocol import CoalescingTransport
from headwater.server.run import _config
from tests.server.support import jobs_module


@pytest.fixture(scope="module")
def app():
    with hw.InProcessCluster() as cluster:
        yield create_app(cluster)


def table_match(app, method: str, path: str):
    """The endpoint and path parameters Starlette's route table gives a request, or None."""
    scope = {"type": "http", "method": method, "path": path, "root_path": ""}
    for route in app.router.routes:
        match, child = route.matches(scope)
        if match is Match.FULL:
            return getattr(route, "endpoint", None), child.get("path_params")
    return None


def hot_match(app, method: str, path: str):
    for route in app.hot_routes:
        params = route.match(method, path.split("/"))
        if params is not None:
            return route.endpoint, params
    return None


@pytest.mark.parametrize("method, path", [
    ("POST", "/api/modules/bank/depots/deposits/append"),
    ("GET", "/api/modules/bank/depots/deposits/append"),
    ("POST", "/api/modules/bank/depots/deposits/append-many"),
    ("POST", "/api/modules/bank/depots/deposits/append/"),
    ("GET", "/api/modules/bank/pstates/funds/get"),
    ("GET", "/api/modules/bänk/pstates/fünds/keys"),
    ("GET", "/api/modules/bank/pstates/funds/get/"),
    ("GET", "/api/modules//pstates/funds/get"),
    ("GET", "/api/modules/bank/pstates/funds/"),
    ("HEAD", "/api/modules/bank/pstates/funds/get"),
    ("POST", "/api/modules/bank/pstates/funds/get"),
    ("GET", "/api/modules/bank/depots/deposits/partitions/1"),
    ("GET", "/api/modules/bank/queries/q/pstates/x"),
])
def test_hot_routes_answer_exactly_as_the_route_table(app, method, path):
    hot = hot_match(app, method, path)
    table = table_match(app, method, path)
    if hot is not None:
        assert hot == table
    else:  # whatever the table does with it (404, 405, another endpoint), it is not a hot endpoint
        assert table is None or table[0] not in HOT_ENDPOINTS or method == "HEAD"


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def test_writes_in_one_event_loop_turn_leave_as_one_write():
    async def run() -> RecordingTransport:
        real = RecordingTransport()
        transport = CoalescingTransport(real, asyncio.get_running_loop())
        transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
        transport.write(b"{}")
        assert real.writes == []
        await asyncio.sleep(0)
        assert real.writes == [b"HTTP/1.1 200 OK\r\n\r\n{}"]
        transport.write(b"last")
        transport.close()  # what was written before close still leaves, before the close
        assert real.writes[-1] == b"last" and real.closed
        transport.write(b"after close")
        await asyncio.sleep(0)
        assert real.writes[-1] == b"last"
        assert transport.is_closing()  # everything else is the real transport's
        return real

    asyncio.run(run())


def test_uvicorn_runs_on_httptools_and_uvloop():
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    config = _config(object(), log_level="error")
    assert issubclass(config.http, HttpToolsProtocol)
    assert config.loop == "uvloop"


# ---- point reads answered from the parser ------------------------------------------------------
def _get_url(op: str, path: Any = None, module: str = "registration", pstate: str = "users", **query: str) -> str:
    if path is not None:
        query["path"] = path if isinstance(path, str) else json.dumps(path)
    return f"/api/modules/{module}/pstates/{pstate}/{op}" + (f"?{urllib.parse.urlencode(query)}" if query else "")


READS = [
    _get_url("get", ["ada@example.com"]),  # found
    _get_url("get", ["ada@example.com", "registered_ms"]),
    _get_url("get", ["nobody@example.com"]),  # absent: found false
    _get_url("exists", ["ada@example.com"]),
    _get_url("get", [], pstate="signups"),  # a record holding a subindexed map: read in a thread
    _get_url("get", ["ada@example.com"], task="1"),
    _get_url("get", ["ada@example.com"], task="x"),  # 400: not an integer
    _get_url("get", ["ada@example.com"], task="7"),  # no such task
    _get_url("get", "not json"),  # a path that is not a JSON array
    _get_url("get", [{"nav": "all"}]),  # navigators only with select
    _get_url("get", ["ada@example.com", "no_such_field"]),
    _get_url("get", [42]),  # a key of the wrong type
    _get_url("frobnicate", ["ada@example.com"]),  # unknown operation, with "did you mean"
    _get_url("get", ["ada@example.com"], pstate="usres"),
    _get_url("get", ["ada@example.com"], module="nope"),
    _get_url("get", []),  # the whole partitioned map: read in a thread, through the ASGI path
    _get_url("keys", []),  # a range: through the ASGI path
    "/api/modules/registr%61tion/pstates/users/get?path=%5B%22ada%40example.com%22%5D",  # percent-encoded
]


@given(st.text(alphabet="ab=&%+2AF0;é ", max_size=24))
def test_query_parameters_read_as_starlette_reads_them(query):
    assert _query_params(query) == dict(urllib.parse.parse_qsl(query, keep_blank_values=True))


@pytest.fixture(scope="module")
def registered():
    with hw.InProcessCluster() as cluster:
        cluster.deploy(registration, tasks=2)
        cluster.depot("registration", "registrations").append(UserSignUp("ada@example.com", "h", 1_700_000_000_000))
        yield cluster


def _counting(app: Any) -> list[int]:
    """Count the requests `app.answer_now` answers (not None) from here on."""
    answered = [0]
    original = app.answer_now

    def answer_now(*args: Any) -> Any:
        response = original(*args)
        answered[0] += response is not None
        return response

    app.answer_now = answer_now
    return answered


def test_point_reads_answered_from_the_parser_answer_as_the_asgi_path(registered):
    app = create_app(registered)
    answered = _counting(app)
    with ServerThread(app) as url, httpx.Client(base_url=url) as served:
        for target in READS:
            early, asgi = served.get(target), asgi_get(app, target)
            assert (early.status_code, early.headers["content-type"], early.json()) == asgi, target
            assert early.headers["content-length"] == str(len(early.content))
            assert "date" in early.headers and "server" not in early.headers
        assert served.get(READS[0]).json() == {"found": True, "value": {"pwd_hash": "h", "registered_ms": 1_700_000_000_000}}
        text = served.get("/metrics").text
    # Everything but the reads that need a thread was answered from the parser (each once: the
    # ASGI calls above go to the app directly, never to answer_now).
    assert answered[0] == len(READS) - 3 + 1
    assert 'endpoint="read",status="200"' in text and 'endpoint="read",status="404"' in text


def asgi_get(app: Any, target: str) -> tuple[int, str, Any]:
    """GET `target` through the app's ASGI path: (status, content type, JSON body)."""
    path, _, query = target.partition("?")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": urllib.parse.unquote(path), "raw_path": path.encode(), "query_string": query.encode(),
             "root_path": "", "headers": [(b"host", b"asgi")], "server": ("asgi", 80), "client": ("test", 1)}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    headers = dict(sent[0]["headers"])
    return sent[0]["status"], headers[b"content-type"].decode(), json.loads(b"".join(m.get("body", b"") for m in sent[1:]))


def test_point_reads_answered_from_the_parser_check_tokens(registered):
    auth = Auth([Token("reader", "secret-reader", frozenset({("read", "registration")})),
                 Token("other", "secret-other", frozenset({("read", "bank")}))])
    app = create_app(registered, auth=auth)
    answered = _counting(app)
    target = READS[0]
    with ServerThread(app) as url:
        assert httpx.get(url + target).status_code == 401
        assert httpx.get(url + target, headers={"Authorization": "Bearer wrong"}).status_code == 401
        forbidden = httpx.get(url + target, headers={"Authorization": "Bearer secret-other"})
        assert forbidden.status_code == 403 and forbidden.json()["error"] == "permission_denied"
        allowed = httpx.get(url + target, headers={"Authorization": "Bearer secret-reader"})
        assert allowed.status_code == 200 and allowed.json()["found"] is True
    assert answered[0] == 4


def _exchange(url: str, raw: bytes, responses: int) -> list[tuple[int, bytes]]:
    """Send `raw` in one write; read `responses` answers: (status, body) each, in arrival order."""
    host, port = urllib.parse.urlsplit(url).hostname, urllib.parse.urlsplit(url).port
    answers: list[tuple[int, bytes]] = []
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(raw)
        data = b""
        while len(answers) < responses:
            head_end = data.find(b"\r\n\r\n")
            if head_end >= 0:
                head = data[:head_end].decode("latin-1").split("\r\n")
                length = int(next(h.split(":", 1)[1] for h in head if h.lower().startswith("content-length")))
                if len(data) >= head_end + 4 + length:
                    answers.append((int(head[0].split()[1]), data[head_end + 4:head_end + 4 + length]))
                    data = data[head_end + 4 + length:]
                    continue
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return answers


def test_pipelined_requests_are_answered_in_request_order():
    with hw.InProcessCluster() as cluster:
        cluster.deploy(jobs_module(), tasks=1)
        with ServerThread(create_app(cluster)) as url:
            body = json.dumps({"key": 5, "sleep_s": 0.3}).encode()
            append = (b"POST /api/modules/jobs/depots/jobs/append HTTP/1.1\r\nhost: x\r\n"
                      b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            read = b"GET " + _get_url("get", [5], module="jobs", pstate="done").encode() + b" HTTP/1.1\r\nhost: x\r\n\r\n"
            # The read waits behind the slow append on its connection, so it sees the append's write.
            answers = _exchange(url, append + read + read, 3)
            assert [status for status, _ in answers] == [200, 200, 200]
            assert json.loads(answers[0][1])["results"] == {"work": 10}
            assert [json.loads(b) for _, b in answers[1:]] == [{"found": True, "value": 1}] * 2


def test_a_read_asking_to_close_is_answered_then_closed(registered):
    with ServerThread(create_app(registered)) as url:
        target = _get_url("get", ["ada@example.com"]).encode()
        for request in (b"GET " + target + b" HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
                        b"GET " + target + b" HTTP/1.0\r\n\r\n"):
            host, port = urllib.parse.urlsplit(url).hostname, urllib.parse.urlsplit(url).port
            with socket.create_connection((host, port), timeout=10) as sock:
                sock.sendall(request)
                data = b""
                while chunk := sock.recv(65536):  # ends: the server closed the connection
                    data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 OK") and b"connection: close" in head.lower()
            assert json.loads(body)["found"] is True
