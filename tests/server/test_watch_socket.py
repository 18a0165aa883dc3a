"""The watch WebSocket: first the value, then each commit's diffs as JSON; heartbeats, auth,
errors, limits; and `hw.connect(...).pstate(...).watch()` on top of it, as in process."""

from __future__ import annotations

import contextlib
import json
import time

from websockets.sync.client import connect

import headwater as hw
from headwater.server import watch as watch_endpoint
from headwater.server.auth import Auth, Token
from tests.engine.test_watch import Op, caught_up, game
from tests.server.support import served

WAIT_S = 10.0


def socket_url(url: str, path: str = '["r1","scores"]', **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"path": path, **params}.items())
    return url.replace("http", "ws", 1) + f"/api/modules/game/pstates/rooms/watch?{query}"


def received(ws) -> dict:
    return json.loads(ws.recv(timeout=WAIT_S))


def test_the_socket_sends_the_value_then_each_commits_diffs(cluster):
    cluster.deploy(game(True), tasks=2)
    ops = cluster.depot("game", "ops")
    ops.append(Op("r1", "score", "ann", 5))
    with served(cluster) as url, connect(socket_url(url)) as ws:
        assert received(ws) == {"type": "value", "value": {"ann": 5}}
        ops.append(Op("r1", "score", "bo", 3))
        assert received(ws) == {"type": "diffs", "diffs": [{"op": "put", "path": ["bo"], "value": 3}]}
        ops.append(Op("r1", "unscore", "ann"))
        assert received(ws) == {"type": "diffs", "diffs": [{"op": "remove", "path": ["ann"]}]}


def test_heartbeats_and_errors(cluster, monkeypatch):
    monkeypatch.setattr(watch_endpoint, "WATCH_HEARTBEAT_S", 0.2)
    cluster.deploy(game(False), tasks=1)
    with served(cluster) as url:
        with connect(socket_url(url)) as ws:
            assert received(ws)["type"] == "value"
            assert received(ws) == {"type": "heartbeat"}
        for bad, code in ((socket_url(url, path="[1]"), "path_error"),
                          (socket_url(url, path="nope"), "malformed_json"),
                          (socket_url(url).replace("rooms", "roms"), "not_found")):
            with connect(bad) as ws:
                message = received(ws)
                assert message["type"] == "error" and message["error"] == code, message


def test_a_token_is_needed_when_tokens_are_configured(cluster):
    cluster.deploy(game(False), tasks=1)
    auth = Auth([Token("reader", "secret-reader", frozenset({("read", "game")})),
                 Token("other", "secret-other", frozenset({("read", "bank")}))])
    with served(cluster, auth=auth) as url:
        for token, expected in ((None, "unauthorized"), ("secret-other", "permission_denied"), ("bad", "unauthorized")):
            params = {"token": token} if token else {}
            with connect(socket_url(url, **params)) as ws:
                assert received(ws)["error"] == expected
        with connect(socket_url(url, token="secret-reader")) as ws:
            assert received(ws)["type"] == "value"
        with connect(socket_url(url), additional_headers={"Authorization": "Bearer secret-reader"}) as ws:
            assert received(ws)["type"] == "value"


def test_hw_connect_watches_like_in_process(any_cluster):
    """On every cluster kind: the server here is the process that runs the cluster (as with --ray)."""
    cluster = any_cluster
    cluster.deploy(game(True), tasks=2)
    ops = cluster.depot("game", "ops")
    with served(cluster) as url, hw.connect(url) as remote:
        view = remote.pstate("game", "rooms")["r1"]
        with view.watch() as subscription:
            rebuilt = [subscription.value]
            for op in (Op("r1", "score", "ann", 2), Op("r1", "tag", "x"), Op("r1", "say", "bo", 1),
                       Op("r1", "say", "cy", 2), Op("r1", "trim"), Op("r1", "title", "t"), Op("r1", "untag", "x")):
                ops.append(op)
                caught_up(subscription, rebuilt, view)
            assert subscription.value == view.get() == cluster.pstate("game", "rooms")["r1"].get()


def test_many_sockets_watch_one_path(cluster):
    cluster.deploy(game(False), tasks=1)
    with served(cluster) as url, contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(connect(socket_url(url))) for _ in range(50)]
        for ws in sockets:
            assert received(ws)["type"] == "value"
        cluster.depot("game", "ops").append(Op("r1", "score", "ann", 1))
        started = time.monotonic()
        for ws in sockets:
            assert received(ws)["type"] == "diffs"
        assert time.monotonic() - started < WAIT_S


def test_watch_through_the_fronts_of_worker_processes(tmp_path):
    """`serve --workers 2`: a socket lands on either worker's front, which watches the path from its
    own hub when it leads the task, and from the other worker's otherwise."""
    import httpx

    from tests.server.test_serve import free_port, start, stop

    port = free_port()
    process = start(tmp_path / "data", port, "--tasks", "2", "--workers", "2")
    try:
        url = f"http://127.0.0.1:{port}"
        with contextlib.ExitStack() as stack:
            sockets = {}
            for key in range(6):  # keys on both tasks, sockets on both fronts (the kernel spreads them)
                for attempt in range(2):
                    ws = stack.enter_context(connect(
                        f"ws://127.0.0.1:{port}/api/modules/jobs/pstates/done/watch?path=[{key}]"))
                    sockets[(key, attempt)] = ws
                    assert received(ws) == {"type": "value", "value": None}
            for key in range(6):
                assert httpx.post(f"{url}/api/modules/jobs/depots/jobs/append", json={"key": key}).status_code == 200
            for (key, _), ws in sockets.items():
                message = received(ws)
                assert message["type"] == "diffs" and message["diffs"][0]["op"] == "put", (key, message)
    finally:
        stop(process)


def test_an_update_that_deletes_what_a_socket_follows_ends_it_with_an_error(any_cluster):
    """The watch socket of a deleted PState and the tail socket of a deleted depot each send a
    not_found error and close; hw.connect's subscription of it ends, saying why."""
    from dataclasses import dataclass

    @dataclass
    class Note:
        room: str
        text: str

    cluster = any_cluster
    with_notes = game(False)
    with_notes.depot("note_ops", Note, partition_by="room")
    with_notes.pstate("notes", hw.Map(str, str))
    cluster.deploy(with_notes, tasks=2)
    base = None
    with served(cluster) as url, hw.connect(url) as remote:
        base = url.replace("http", "ws", 1) + "/api/modules/game"
        with connect(base + '/pstates/notes/watch?path=["r1"]') as watched, \
                connect(base + "/depots/note_ops/tail") as tailed, \
                connect(socket_url(url)) as kept:
            subscription = remote.pstate("game", "notes")["r1"].watch()
            assert received(watched)["type"] == "value" and received(tailed)["type"] == "ready"
            assert received(kept)["type"] == "value"
            cluster.update(game(False), delete=["notes", "note_ops"])
            for ws, name in ((watched, "notes"), (tailed, "note_ops")):
                message = received(ws)
                while message["type"] in ("heartbeat", "resync"):
                    message = received(ws)
                assert message["type"] == "error" and message["error"] == "not_found", message
                assert name in message["message"]
            deadline = time.monotonic() + WAIT_S
            while not subscription.closed:
                assert time.monotonic() < deadline, "the remote subscription never ended"
                time.sleep(0.02)
            assert subscription.ended is not None and "notes" in subscription.ended
            assert received(kept)["type"] == "resync"  # a watch of what stays goes on
            cluster.depot("game", "ops").append(Op("r1", "score", "ann", 1))
            assert received(kept)["type"] == "diffs"
