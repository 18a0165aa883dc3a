"""Depots: validation, acks, idempotency, partitioning, reading the log."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from dataclasses import dataclass
from typing import Any, TypedDict

import msgspec
import pytest

import headwater as hw


@dataclass
class Click:
    user_id: int
    page: str


class Tagged(msgspec.Struct):
    key: str
    value: float


class Point(TypedDict):
    x: int
    y: int


def make_module(seen: list[Any] | None = None) -> hw.Module:
    m = hw.Module("app")
    clicks = m.depot("clicks", Click, partition_by="user_id")
    m.depot("tagged", Tagged, partition_by=lambda t: t.key)
    m.depot("points", Point)
    m.depot("anything")
    m.depot("internal", Click, client_appends=False)
    m.depot("global", Click, partitioned=False)
    counts = m.pstate("counts", hw.Map(int, int))

    @m.stream(clicks)
    def count(ctx: hw.Context, click: Click) -> int:
        if seen is not None:
            seen.append((ctx.partition, ctx.offset, click))
        ctx.pstate(counts)[click.user_id].increment()
        return ctx.pstate(counts)[click.user_id].get()

    return m


def test_full_ack_returns_results_partition_and_offset(cluster):
    cluster.deploy(make_module(), tasks=3)
    clicks = cluster.depot("app", "clicks")
    first = clicks.append(Click(7, "/"))
    second = clicks.append(Click(7, "/about"))
    assert first["count"] == 1 and second["count"] == 2
    assert first.partition == second.partition
    assert second.offset == first.offset + 1
    assert second.results == {"count": 2}


def test_append_and_none_acks(cluster):
    cluster.deploy(make_module(), tasks=2)
    clicks = cluster.depot("app", "clicks")
    durable = clicks.append(Click(1, "/"), ack=hw.Ack.APPEND)
    assert durable is not None and durable.results == {}
    assert clicks.append(Click(1, "/"), ack="none") is None
    assert clicks.append(Click(1, "/"))["count"] == 3  # processing is in order, so the first two came first
    with pytest.raises(ValueError, match="Ack.FULL"):
        clicks.append(Click(1, "/"), ack="sometimes")


@pytest.mark.parametrize(
    "depot, event, field",
    [
        ("clicks", Click("seven", "/"), "user_id"),  # type: ignore[arg-type]
        ("clicks", {"user_id": 1}, None),
        ("tagged", Tagged("k", "not a float"), "value"),  # type: ignore[arg-type]
        ("points", {"x": 1}, "y"),
        ("points", {"x": 1, "y": True}, "y"),
    ],
)
def test_bad_events_are_refused_and_nothing_is_appended(cluster, depot, event, field):
    cluster.deploy(make_module(), tasks=2)
    target = cluster.depot("app", depot)
    before = [target.partition_info(p).end_offset for p in range(target.partitions)]
    with pytest.raises(hw.SchemaError) as raised:
        target.append(event)
    if field:
        assert field in str(raised.value)
    assert [target.partition_info(p).end_offset for p in range(target.partitions)] == before


def test_unserializable_and_huge_events(cluster):
    cluster.deploy(make_module())
    anything = cluster.depot("app", "anything")
    with pytest.raises(hw.SchemaError, match="cannot be encoded"):
        anything.append({"lock": threading.Lock()})
    with pytest.raises(hw.SchemaError, match="above the limit"):
        anything.append("x" * (17 * 1024 * 1024))
    assert anything.partition_info(0).end_offset == 0
    anything.append({"nested": [1, 2.5, None, "s", b"b"]})
    assert anything.read(0)[0].event == {"nested": [1, 2.5, None, "s", b"b"]}


def test_idempotency_key_returns_the_first_result_and_appends_nothing(cluster):
    cluster.deploy(make_module(), tasks=2)
    clicks = cluster.depot("app", "clicks")
    first = clicks.append(Click(3, "/"), idempotency_key="req-1")
    again = clicks.append(Click(3, "/"), idempotency_key="req-1")
    assert (again.partition, again.offset, again["count"]) == (first.partition, first.offset, 1)
    assert clicks.partition_info(first.partition).end_offset == first.offset + 1
    with pytest.raises(hw.IdempotencyConflict, match="req-1"):
        clicks.append(Click(3, "/other"), idempotency_key="req-1")
    assert cluster.pstate("app", "counts")[3].get() == 1


def test_idempotent_repeats_survive_a_restart(tmp_path):
    with hw.InProcessCluster(tmp_path) as c:
        c.deploy(make_module(), tasks=2)
        first = c.depot("app", "clicks").append(Click(3, "/"), idempotency_key="k")
    with hw.InProcessCluster(tmp_path) as c:
        c.deploy(make_module())
        again = c.depot("app", "clicks").append(Click(3, "/"), idempotency_key="k")
        assert (again.offset, again["count"]) == (first.offset, 1)


def test_partitioners(cluster):
    cluster.deploy(make_module(), tasks=4)
    tagged = cluster.depot("app", "tagged")
    partitions = {tagged.append(Tagged("same", float(i))).partition for i in range(5)}
    assert len(partitions) == 1
    points = cluster.depot("app", "points")
    assert sorted(points.append({"x": i, "y": i}).partition for i in range(8)) == [0, 0, 1, 1, 2, 2, 3, 3]
    single = cluster.depot("app", "global")
    assert single.partitions == 1
    assert {single.append(Click(i, "/")).partition for i in range(5)} == {0}


def test_client_appends_false_is_permission_denied(cluster):
    cluster.deploy(make_module())
    with pytest.raises(hw.PermissionDenied, match="client_appends=False"):
        cluster.depot("app", "internal").append(Click(1, "/"))


def test_append_many_async_read_and_tail(cluster):
    cluster.deploy(make_module(), tasks=2)
    clicks = cluster.depot("app", "clicks")
    results = clicks.append_many([Click(1, f"/{i}") for i in range(20)])
    assert [r["count"] for r in results] == list(range(1, 21))

    async def go() -> list[Any]:
        return await asyncio.gather(*(clicks.append_async(Click(2, "/a")) for _ in range(10)))

    assert sorted(r["count"] for r in asyncio.run(go())) == list(range(1, 11))
    partition = results[0].partition
    records = clicks.read(partition, 0, 5)
    assert [r.offset for r in records] == [0, 1, 2, 3, 4]
    assert records[1].event == Click(1, "/1")
    assert records[0].timestamp <= records[4].timestamp
    with pytest.raises(ValueError, match="partitions 0..1"):
        clicks.read(5)

    tail = clicks.tail(partitions=[partition], idle_timeout_s=2.0)
    clicks.append(Click(1, "/late"), ack="append")
    assert next(tail).event == Click(1, "/late")


def test_tail_is_woken_by_commits_not_by_its_poll(cluster):
    cluster.deploy(make_module(), tasks=2)
    clicks = cluster.depot("app", "clicks")
    records = clicks.tail(poll_s=60.0)  # a poll that would never come within the test
    got: list[Any] = []
    reader = threading.Thread(target=lambda: got.extend(itertools.islice(records, 3)))
    reader.start()
    time.sleep(0.2)  # the reader waits on its watches by now
    for i in range(3):
        clicks.append(Click(i, f"/{i}"), ack="append")
    reader.join(10.0)
    assert not reader.is_alive(), "tail was not woken by the commits"
    assert sorted(r.event.user_id for r in got) == [0, 1, 2]
    records.close()  # ends its watches


def test_unknown_names_suggest_the_closest(cluster):
    cluster.deploy(make_module())
    with pytest.raises(hw.NotFound, match="did you mean 'app'"):
        cluster.depot("ap", "clicks")
    with pytest.raises(hw.NotFound, match="did you mean 'clicks'"):
        cluster.depot("app", "click")
    with pytest.raises(hw.NotFound, match="did you mean 'counts'"):
        cluster.pstate("app", "count")
    with pytest.raises(hw.NotFound, match="no query named"):
        cluster.query("app", "nothing")
    with pytest.raises(hw.NotFound, match="did you mean 'count'"):
        cluster.dead_letters("app", "cuont")


def test_processing_starts_in_depot_order_per_partition(cluster):
    seen: list[Any] = []
    cluster.deploy(make_module(seen), tasks=3)
    clicks = cluster.depot("app", "clicks")

    def appender(user: int) -> None:
        for i in range(50):
            clicks.append(Click(user, str(i)), ack="append")

    threads = [threading.Thread(target=appender, args=(u,)) for u in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    clicks.append_many([Click(u, "end") for u in range(6)])  # full acks: everything before is processed
    by_partition: dict[int, list[int]] = {}
    per_user: dict[int, list[str]] = {}
    for partition, offset, click in seen:
        by_partition.setdefault(partition, []).append(offset)
        per_user.setdefault(click.user_id, []).append(click.page)
    for offsets in by_partition.values():
        assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    for pages in per_user.values():
        assert pages == [str(i) for i in range(50)] + ["end"]
