"""The depot tail WebSocket: records pushed as they are committed, from where `from` says, on every
cluster kind and through the fronts of worker processes; errors, tokens, limits, heartbeats."""

from __future__ import annotations

import contextlib
import json
from urllib.parse import quote

import httpx
import pytest
from websockets.sync.client import connect

from headwater.server import tail as tail_endpoint
from headwater.server.auth import Auth, Token
from tests.clusters import CLUSTER_KINDS, open_cluster
from tests.engine.test_watch import Op, game
from tests.server.support import served
from tests.waiting import wait_for

WAIT_S = 10.0


@pytest.fixture(params=CLUSTER_KINDS)
def kind_cluster(request, tmp_path):
    with open_cluster(request.param, tmp_path / "data") as cluster:
        yield cluster


def tail_url(url: str, module: str = "game", depot: str = "ops", **params: str) -> str:
    query = "&".join(f"{k}={quote(v)}" for k, v in params.items())
    return url.replace("http", "ws", 1) + f"/api/modules/{module}/depots/{depot}/tail" + (f"?{query}" if query else "")


def received(ws) -> dict:
    return json.loads(ws.recv(timeout=WAIT_S))


def records_until(ws, count: int) -> list[dict]:
    """The records of the next messages (heartbeats skipped) until `count` arrived."""
    found: list[dict] = []
    while len(found) < count:
        message = received(ws)
        assert message["type"] in ("records", "heartbeat"), message
        if message["type"] == "records":
            assert message["next_offset"] == message["records"][-1]["offset"] + 1
            found += message["records"]
    return found


def test_new_records_are_pushed_as_they_are_appended(kind_cluster):
    kind_cluster.deploy(game(False), tasks=2)
    ops = kind_cluster.depot("game", "ops")
    old = ops.append(Op("r1", "score", "ann", 1))
    with served(kind_cluster) as url, connect(tail_url(url)) as ws:
        ready = received(ws)
        assert ready["type"] == "ready" and set(ready["offsets"]) == {"0", "1"}
        assert ready["offsets"][str(old.partition)] == old.offset + 1  # from the end: the old record is not sent
        for i in range(3):
            result = ops.append(Op(f"room{i}", "say", "bo", i))
            (record,) = records_until(ws, 1)
            assert (record["partition"], record["offset"]) == (result.partition, result.offset)
            assert record["event"] == {"room": f"room{i}", "kind": "say", "who": "bo", "amount": i}
            assert record["timestamp"]


def test_from_an_offset_sends_the_backlog_in_bounded_messages_then_follows(kind_cluster, monkeypatch):
    monkeypatch.setattr(tail_endpoint, "TAIL_RECORDS_PER_MESSAGE_MAX", 7)
    kind_cluster.deploy(game(False), tasks=2)
    ops = kind_cluster.depot("game", "ops")
    ops.append_many([Op("r1", "say", "ann", i) for i in range(30)])
    partition = ops.append(Op("r1", "say", "ann", 30)).partition
    with served(kind_cluster) as url, connect(tail_url(url, **{"from": json.dumps({str(partition): 5})})) as ws:
        assert received(ws) == {"type": "ready", "offsets": {str(partition): 5}}
        sizes = []
        found: list[dict] = []
        while len(found) < 26:
            message = received(ws)
            sizes.append(len(message["records"]))
            found += message["records"]
        assert max(sizes) == 7 and [r["offset"] for r in found] == list(range(5, 31))
        assert [r["event"]["amount"] for r in found] == list(range(5, 31))
        ops.append(Op("r1", "say", "ann", 31))
        assert [r["offset"] for r in records_until(ws, 1)] == [31]
    with served(kind_cluster) as url, connect(tail_url(url, **{"from": json.dumps({f"0{partition}": 29})})) as ws:
        assert received(ws) == {"type": "ready", "offsets": {str(partition): 29}}  # "01" is partition 1
        assert [r["offset"] for r in records_until(ws, 3)] == [29, 30, 31]
    with served(kind_cluster) as url, connect(tail_url(url, **{"from": "start"})) as ws:
        assert received(ws)["offsets"] == {str(partition): 0, str(1 - partition): 0}
        assert len(records_until(ws, 32)) == 32


def test_bad_requests_are_refused_with_errors_that_say_what_to_do(kind_cluster):
    kind_cluster.deploy(game(False), tasks=2)
    kind_cluster.depot("game", "ops").append(Op("r1", "say", "ann", 1))
    cases = [
        (tail_url("http://x", depot="nope"), "not_found", "nope"),
        (tail_url("http://x", module="nope"), "not_found", "nope"),
        (tail_url("http://x", **{"from": '{"5": 0}'}), "bad_request", "partitions 0..1"),
        (tail_url("http://x", **{"from": "-1"}), "bad_request", "0 or more"),
        (tail_url("http://x", **{"from": "999"}), "bad_request", "past its end"),
        (tail_url("http://x", **{"from": "{oops"}), "malformed_json", "from"),
        (tail_url("http://x", **{"from": '{"0": "x"}'}), "bad_request", "0 or more"),
        (tail_url("http://x", **{"from": "{}"}), "bad_request", "names no partition"),
    ]
    with served(kind_cluster) as url:
        for bad, code, words in cases:
            with connect(bad.replace("ws://x", url.replace("http", "ws", 1))) as ws:
                message = received(ws)
                assert message["type"] == "error" and message["error"] == code and words in message["message"], message


def test_tokens_heartbeats_and_the_socket_limit(monkeypatch):
    import headwater as hw

    monkeypatch.setattr(tail_endpoint, "TAIL_HEARTBEAT_S", 0.2)
    monkeypatch.setattr(tail_endpoint, "TAIL_SOCKETS_MAX", 2)
    auth = Auth([Token("reader", "secret-reader", frozenset({("read", "game")})),
                 Token("other", "secret-other", frozenset({("read", "bank")}))])
    with hw.InProcessCluster() as cluster:
        cluster.deploy(game(False), tasks=2)
        with served(cluster, auth=auth) as url:
            for params, expected in (({}, "unauthorized"), ({"token": "secret-other"}, "permission_denied")):
                with connect(tail_url(url, **params)) as ws:
                    assert received(ws)["error"] == expected
            with contextlib.ExitStack() as stack:
                held = [stack.enter_context(connect(tail_url(url, token="secret-reader"))) for _ in range(2)]
                for ws in held:
                    assert received(ws)["type"] == "ready"
                    assert received(ws) == {"type": "heartbeat"}
                with connect(tail_url(url, token="secret-reader")) as ws:
                    message = received(ws)
                    assert message["error"] == "unavailable" and "2 depot tail sockets" in message["message"]
            with connect(tail_url(url), additional_headers={"Authorization": "Bearer secret-reader"}) as ws:
                assert received(ws)["type"] == "ready"  # the others closed: room again


def test_tail_through_the_fronts_of_worker_processes(tmp_path):
    """`serve --workers 2`: a socket on either front follows both partitions, one led there and one
    led by the other worker."""
    from tests.server.test_serve import free_port, start, stop

    port = free_port()
    process = start(tmp_path / "data", port, "--tasks", "2", "--workers", "2")
    try:
        url = f"http://127.0.0.1:{port}"
        with contextlib.ExitStack() as stack:
            sockets = [stack.enter_context(connect(f"ws://127.0.0.1:{port}/api/modules/jobs/depots/jobs/tail"))
                       for _ in range(4)]  # the kernel spreads them over both fronts
            for ws in sockets:
                assert set(received(ws)["offsets"]) == {"0", "1"}
            appended = set()
            for key in range(6):
                answer = httpx.post(f"{url}/api/modules/jobs/depots/jobs/append", json={"key": key}).json()
                appended.add((answer["partition"], answer["offset"]))
            assert {p for p, _ in appended} == {0, 1}
            for ws in sockets:
                assert {(r["partition"], r["offset"]) for r in records_until(ws, 6)} == appended
    finally:
        stop(process)


def test_records_retention_removed_are_skipped():
    """from=0 on a trimmed partition starts at its oldest stored record, and says so in `ready`."""
    from dataclasses import dataclass

    import headwater as hw

    @dataclass
    class Click:
        n: int

    m = hw.Module("clicks")
    m.depot("clicks", Click, partition_by=None, retention=hw.Retention(max_records=3))
    with hw.InProcessCluster() as cluster:
        cluster.deploy(m, tasks=1)
        clicks = cluster.depot("clicks", "clicks")
        clicks.append_many([Click(i) for i in range(10)])
        oldest = wait_for(lambda: clicks.partition_info(0).start_offset, "the task to trim the partition", WAIT_S)
        with served(cluster) as url, connect(tail_url(url, module="clicks", depot="clicks", **{"from": "0"})) as ws:
            assert received(ws) == {"type": "ready", "offsets": {"0": oldest}}
            assert [r["event"]["n"] for r in records_until(ws, 10 - oldest)] == list(range(oldest, 10))


# ---- through hw.connect: depot.tail() rides the socket ----------------------------------------------


def test_a_remote_tail_is_pushed_from_where_it_was_asked(kind_cluster):
    """hw.connect's tail takes records off the socket as they are committed (a poll every 60 s would
    miss the wait below), from the end or from given offsets, on every cluster kind."""
    import headwater as hw

    kind_cluster.deploy(game(False), tasks=2)
    ops = kind_cluster.depot("game", "ops")
    old = [ops.append(Op(f"room{i}", "say", "ann", i)) for i in range(4)]
    with served(kind_cluster) as url, hw.connect(url) as client:
        depot = client.depot("game", "ops")
        follower = depot.tail(poll_s=60.0, idle_timeout_s=WAIT_S)
        assert next(iter(depot.tail(from_offset=0, idle_timeout_s=WAIT_S))).offset == 0
        backlog = depot.tail(from_offset={old[0].partition: old[0].offset}, partitions=[old[0].partition],
                             idle_timeout_s=1.0)
        assert [r.offset for r in backlog] == [a.offset for a in old if a.partition == old[0].partition]
        new = ops.append(Op("room9", "say", "bo", 9))
        record = next(follower)
        assert (record.partition, record.offset) == (new.partition, new.offset)
        assert record.event["who"] == "bo"  # a dict: this client has no class for the server's event type
        follower.close()


def test_a_remote_tail_connects_again_after_a_drop_without_a_gap_or_a_repeat():
    """The server stops while a tail follows it; records appended meanwhile arrive once it is back."""
    import headwater as hw
    from headwater.server.app import create_app
    from headwater.server.run import ServerThread

    with hw.InProcessCluster() as cluster:
        cluster.deploy(game(False), tasks=2)
        ops = cluster.depot("game", "ops")
        server = ServerThread(create_app(cluster))
        url = server.start()
        port = int(url.rsplit(":", 1)[1])
        with hw.connect(url) as client:
            follower = client.depot("game", "ops").tail(idle_timeout_s=30.0)
            before = [ops.append(Op(f"room{i}", "say", "ann", i)) for i in range(3)]
            seen = [next(follower) for _ in before]
            server.stop()
            during = [ops.append(Op(f"room{i}", "say", "bo", i)) for i in range(3, 6)]
            server = ServerThread(create_app(cluster), port=port)
            server.start()
            try:
                seen += [next(follower) for _ in during]
                after = ops.append(Op("room7", "say", "cy", 7))
                seen.append(next(follower))
            finally:
                follower.close()
                server.stop()
    assert sorted((r.partition, r.offset) for r in seen) == sorted(
        (a.partition, a.offset) for a in [*before, *during, after])
