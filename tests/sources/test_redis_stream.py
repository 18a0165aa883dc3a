"""hw.sources.RedisStream against a real redis-server: ingestion, conversion, lag, pause, and exactly
once across a SIGKILL of the worker ingesting."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

import headwater as hw
from tests import waiting
from tests.clusters import LOCAL_WORKERS

RECOVERY_S_MAX = 60


@dataclass
class Click:
    user: int
    page: str


def module(url: str, streams: list[str], **options) -> hw.Module:
    m = hw.Module("clicks")
    clicks = m.external_depot("clicks", hw.sources.RedisStream(url, streams, **options), Click)
    per_user = m.pstate("per_user", hw.Map(int, int))

    @m.stream(clicks, start_from="beginning")
    def count(ctx: hw.Context, click: Click) -> None:
        ctx.hop(click.user, tally, click.user)  # records arrive on their stream's task: hop to the user's

    @m.step
    def tally(ctx: hw.Context, user: int) -> None:
        ctx.pstate(per_user)[user].increment()

    return m


def wait_for(predicate, what: str, timeout_s: float = RECOVERY_S_MAX):
    return waiting.wait_for(predicate, what, timeout_s)


def events(cluster, partition: int) -> list:
    depot = cluster.depot("clicks", "clicks")
    found, start = [], 0
    while batch := depot.read(partition, start, limit=10_000):
        found += [r.event for r in batch]
        start = batch[-1].offset + 1
    return found


@pytest.fixture
def client(redis_url):
    import redis

    connection = redis.Redis.from_url(redis_url, decode_responses=True)
    connection.flushall()
    yield connection
    connection.close()


def test_each_stream_is_a_partition_ingested_in_order_with_its_lag(cluster, redis_url, client):
    for i in range(50):
        client.xadd("a", {"user": str(i % 3), "page": f"/a/{i}"})
    client.xadd("b", {"user": "7", "page": "/b"})
    cluster.deploy(module(redis_url, ["a", "b"]), tasks=2)
    wait_for(lambda: len(events(cluster, 0)) == 50 and len(events(cluster, 1)) == 1, "ingestion")
    assert events(cluster, 0) == [Click(i % 3, f"/a/{i}") for i in range(50)]
    assert events(cluster, 1) == [Click(7, "/b")]
    last = client.xrevrange("a", count=1)[0][0]
    shown = wait_for(lambda: [t["sources"]["clicks"] for t in cluster.status()["clicks"]
                              if t["sources"]["clicks"]["lag"] == 0 and t["task"] == 0], "the lag")[0]
    assert shown["position"] == last and shown["lag_unit"] == "entries"
    assert "RedisStream(redis://127.0.0.1" in shown["source"]

    cluster.pause("clicks", "clicks")
    client.xadd("b", {"user": "8", "page": "/b2"})
    time.sleep(1.0)
    assert len(events(cluster, 1)) == 1
    wait_for(lambda: cluster.status()["clicks"][1]["sources"]["clicks"]["lag"] == 1, "the lag while paused")
    cluster.resume("clicks", "clicks")
    wait_for(lambda: len(events(cluster, 1)) == 2, "the entry added while paused")
    wait_for(lambda: cluster.pstate("clicks", "per_user")[8].get() == 1, "processing")


def test_a_stream_started_at_its_end_and_a_json_field(cluster, redis_url, client):
    client.xadd("j", {"data": '{"user": 1, "page": "/old"}'})
    cluster.deploy(module(redis_url, ["j"], start="end", field="data"), tasks=1)
    wait_for(lambda: cluster.status()["clicks"][0]["sources"]["clicks"]["position"], "the start")
    client.xadd("j", {"data": '{"user": 2, "page": "/new"}'})
    wait_for(lambda: events(cluster, 0) == [Click(2, "/new")], "the entry after the start")


def test_an_entry_has_the_time_of_its_id(cluster, redis_url, client):
    client.xadd("t", {"user": "1", "page": "/past"}, id="1700000000123-0")  # 2023-11-14T22:13:20.123Z
    added = datetime.now(UTC)
    client.xadd("t", {"user": "2", "page": "/now"})
    cluster.deploy(module(redis_url, ["t"]), tasks=1)
    wait_for(lambda: len(events(cluster, 0)) == 2, "ingestion")
    past, now = (r.timestamp for r in cluster.depot("clicks", "clicks").read(0, 0))
    assert past == datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)
    assert added - timedelta(seconds=1) <= now <= datetime.now(UTC)


def test_ingestion_is_exactly_once_when_the_worker_ingesting_is_killed(tmp_path, redis_url, client):
    total = 30_000
    pipe = client.pipeline(transaction=False)
    for i in range(total):
        pipe.xadd("k", {"user": str(i), "page": "/"})
    pipe.execute()
    with hw.LocalCluster(tmp_path / "data", workers=LOCAL_WORKERS) as cluster:
        cluster.deploy(module(redis_url, ["k"]), tasks=1)
        depot = cluster.depot("clicks", "clicks")
        for kill_at in (4_000, 15_000):
            wait_for(lambda: depot.partition_info(0).end_offset >= kill_at, "ingestion")
            os.kill(cluster.status()["clicks"][0]["pid"], signal.SIGKILL)
            wait_for(lambda: all(t["up"] for t in cluster.status()["clicks"]), "the worker's restart")
        wait_for(lambda: depot.partition_info(0).end_offset >= total, "every entry")
        time.sleep(0.5)
        assert [click.user for click in events(cluster, 0)] == list(range(total))
