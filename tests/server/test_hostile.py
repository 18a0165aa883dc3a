"""The server under hostile input: heads too large or too slow, bodies that never end, clients
that leave mid-request, and parameters built to break the parser. Each is refused with a 4xx
(or the connection closed), in bounded time, while other clients go on being served."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import pytest

import headwater as hw
from headwater.server import ConnectionLimits, create_app
from tests.server.support import Job, deploy, served

LIMITS = ConnectionLimits(headers_max_bytes=16 * 1024, idle_timeout_s=0.5, headers_timeout_s=0.5, body_timeout_s=0.5)
APPEND = "/api/modules/bank/depots/deposits/append"
HEALTH = b"GET /api/health HTTP/1.1\r\nHost: test\r\n"


@pytest.fixture(scope="module")
def hostile() -> Iterator[tuple[hw.InProcessCluster, str]]:
    with hw.InProcessCluster() as cluster:
        deploy(cluster)
        with served(cluster, limits=LIMITS) as url:
            yield cluster, url


@pytest.fixture
def http(hostile: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=hostile[1], timeout=5) as client:
        yield client


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=5)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a socket timeout fails the test)."""
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def status_and_body(answer: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), msgspec.json.decode(body)


def test_a_huge_head_is_refused_with_431_after_the_limit_while_others_are_served(hostile, http):
    sock = connect(hostile[1])
    flooded = threading.Event()

    def flood() -> None:
        try:
            sock.sendall(HEALTH + b"X-Flood: ")
            for _ in range(64):  # up to 64 MiB of one header, unless the server closes first
                sock.sendall(b"a" * (1024 * 1024))
        except OSError:
            pass  # the server closed the connection: what it should do
        flooded.set()

    started = time.monotonic()
    threading.Thread(target=flood, daemon=True).start()
    assert http.get("/api/health").status_code == 200  # another client is served meanwhile
    status, body = status_and_body(read_until_closed(sock))
    assert status == 431 and body["error"] == "headers_too_large" and "16,384 bytes" in body["message"]
    assert flooded.wait(5) and time.monotonic() - started < 5
    sock.close()


def test_a_head_under_the_limit_and_a_body_over_it_are_served(hostile, http):
    headers = {"X-Padding": "p" * (LIMITS.headers_max_bytes - 1024)}
    assert http.get("/api/health", headers=headers).status_code == 200
    # The body of a request is not part of its head: 60 KiB of events arrive with the head in one read.
    events = [{"user_id": 900 + i, "amount": 1} for i in range(2000)]
    response = http.post("/api/modules/bank/depots/deposits/append-many", json=events, params={"ack": "append"})
    assert response.status_code == 200, response.text
    assert len(response.json()["results"]) == 2000


@pytest.mark.parametrize("sent", [
    HEALTH + b"X-Slow: 1\r\n",  # a head that stops before its end (slowloris)
    b"POST " + APPEND.encode() + b" HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\n{\"user_id\": 1",  # half a body
])
def test_a_request_that_stops_halfway_is_answered_408_and_closed_within_the_bound(hostile, http, sent):
    socks = [connect(hostile[1]) for _ in range(50)]
    started = time.monotonic()
    for sock in socks:
        sock.sendall(sent)
    assert http.get("/api/health").status_code == 200  # others are served while those wait
    for sock in socks:
        status, body = status_and_body(read_until_closed(sock))
        assert status == 408 and body["error"] == "request_timeout"
        sock.close()
    assert time.monotonic() - started < LIMITS.body_timeout_s + 2


def test_a_connection_that_sends_nothing_is_closed(hostile):
    sock = connect(hostile[1])
    started = time.monotonic()
    assert read_until_closed(sock) == b""
    assert time.monotonic() - started < LIMITS.idle_timeout_s + 2
    sock.close()


def test_a_slow_but_steady_request_within_the_bound_is_served(hostile):
    sock = connect(hostile[1])
    body = b'{"user_id": 2, "amount": 3}'
    sock.sendall(b"POST " + APPEND.encode() + b" HTTP/1.1\r\nHost: test\r\nConnection: close\r\n")
    time.sleep(0.1)
    sock.sendall(b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:5])
    time.sleep(0.1)
    sock.sendall(body[5:])
    status, answer = status_and_body(read_until_closed(sock))
    assert status == 200 and answer["results"] == {"deposit": 3}
    sock.close()


def test_a_client_leaving_mid_body_is_neither_an_error_log_nor_a_500(hostile, http, caplog):
    sock = connect(hostile[1])
    sock.sendall(b"POST " + APPEND.encode() + b" HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\n{\"user_id\"")
    time.sleep(0.1)  # the endpoint is waiting for the rest of the body
    sock.close()
    deadline = time.monotonic() + 5
    while 'endpoint="append",status="499"' not in (metrics := http.get("/metrics").text):
        assert time.monotonic() < deadline, "the request that lost its client was never counted"
        time.sleep(0.02)
    assert 'endpoint="append",status="500"' not in metrics
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "WARNING")]


BIG = str(2**64)
DEEP = "[" * 1000 + "]" * 1000


@pytest.mark.parametrize(("target", "status", "code"), [
    (f"/api/modules/bank/depots/deposits/partitions/0/records?start={BIG}", 400, "bad_request"),
    (f"/api/modules/bank/depots/deposits/partitions/0/records?stop={BIG}", 400, "bad_request"),
    (f"/api/modules/bank/pstates/funds/get?path={DEEP}", 400, "malformed_json"),
    ("/api/modules/bank/pstates/funds/get?path=[" + "[" * 500 + "]" * 500 + "]", 422, "path_error"),
    ("/api/modules/bank/pstates/funds/keys?task=0&start=" + "[" * 500 + "]" * 500, 422, "path_error"),
    ("/api/modules/jobs/pstates/tags/contains?path=[1]&element=" + "[" * 500 + "]" * 500, 422, "path_error"),
    ("/api/modules/jobs/pstates/tags/contains?path=[1]&element={}", 422, "path_error"),
    ("/api/modules/bank/pstates/funds/select?task=0&path=[" + "[" * 500 + "]" * 500 + "]", 422, "path_error"),
    ('/api/modules/bank/pstates/funds/select?task=0&path=[{"nav": [1]}]', 422, "path_error"),
    ('/api/modules/bank/pstates/funds/select?task=0&path=[{"nav": {}}]', 422, "path_error"),
    ('/api/modules/bank/pstates/funds/select_one?task=0&path=[{"nav": null}]', 422, "path_error"),
    ('/api/modules/jobs/pstates/tags/select?path=[1, {"nav": "must", "key": {}}]', 422, "path_error"),
])
def test_hostile_read_parameters_are_4xx_with_an_error_body(http, target, status, code):
    response = http.get(target)
    assert response.status_code == status, response.text
    assert response.json()["error"] == code and response.json()["message"]


@pytest.mark.parametrize(("body", "code"), [
    (DEEP, "malformed_json"), (f"[{DEEP}]", "malformed_json"), ('{"args": [%s]}' % DEEP, "malformed_json"),
    ('{"kwargs": {"n": 1, "timeout": 5}}', "bad_request"),  # the name of the query's wait
])
def test_hostile_query_arguments_are_400(http, body, code):
    response = http.post("/api/modules/jobs/queries/double", content=body)
    assert response.status_code == 400 and response.json()["error"] == code, response.text


@pytest.fixture
def small_pages(monkeypatch):
    from headwater.client import remote
    from headwater.server import pstates

    monkeypatch.setattr(pstates, "READ_PAGE_MAX", 3)
    monkeypatch.setattr(remote, "READ_PAGE_MAX", 3)


def test_whole_collection_reads_above_a_page_are_refused_with_how_to_page(hostile, http, small_pages):
    cluster = hostile[0]
    cluster.depot("jobs", "jobs").append_many([Job(7000 + i) for i in range(12)] + [Job(7100)] * 5)
    refused = http.get("/api/modules/jobs/pstates/done/get", params={"task": 0})
    assert refused.status_code == 422 and refused.json()["error"] == "read_too_large", refused.text
    assert "items" in refused.json()["message"] and "3 one answer" in refused.json()["message"]
    listed = http.get("/api/modules/jobs/pstates/log/get", params={"path": "[7100]"})
    assert listed.status_code == 422 and "slice" in listed.json()["message"]
    selected = http.get("/api/modules/jobs/pstates/done/select", params={"task": 0, "path": '[{"nav": "all"}]'})
    assert selected.status_code == 422 and '"range"' in selected.json()["message"]
    # Under the cap they answer whole, and hw.connect pages the large ones for the caller.
    assert len(http.get("/api/modules/jobs/pstates/log/get", params={"path": "[7000]"}).json()["value"]) == 1
    with hw.connect(hostile[1]) as client:
        assert client.pstate("jobs", "done", task=0).get() == cluster.pstate("jobs", "done", task=0).get()
        assert client.pstate("jobs", "log")[7100].get() == cluster.pstate("jobs", "log")[7100].get()
        assert len(cluster.pstate("jobs", "log")[7100].get()) == 5


def test_whole_collection_reads_run_off_the_event_loop_and_point_reads_on_it(hostile):
    app = create_app(hostile[0])
    assert app.answer_now("GET", "/api/modules/jobs/pstates/done/get", b"task=0", []) is None
    assert app.answer_now("GET", "/api/modules/jobs/pstates/log/get", b"path=[1]", []) is None
    assert app.answer_now("GET", "/api/modules/jobs/pstates/done/get", b"path=[1]", [])[0] == 200


def test_a_request_that_is_not_http_is_a_json_400(hostile, http):
    sock = connect(hostile[1])
    sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: test\r\nBad Header\r\n\r\n")
    status, body = status_and_body(read_until_closed(sock))
    assert status == 400 and body["error"] == "bad_request" and "not valid HTTP" in body["message"]
    sock.close()
    assert http.get("/api/health").status_code == 200
