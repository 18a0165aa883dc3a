"""Retention: a depot keeps at most what it was told, never a record still owed processing."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

import headwater as hw

WAIT_S = 20.0


@dataclass
class Click:
    user: int
    n: int
    note: str = ""


def clicks_module(retention: hw.Retention, *, slow: bool = False) -> hw.Module:
    m = hw.Module("clicks")
    clicks = m.depot("clicks", Click, partition_by="user", retention=retention)
    counts = m.pstate("counts", hw.Map(int, int))

    @m.stream(clicks)
    def count(ctx: hw.Context, click: Click) -> None:
        if slow and click.n < 0:
            raise RuntimeError("a record that fails: it stays, as a dead letter")
        ctx.pstate(counts)[click.user].increment()

    return m


def wait_start(cluster, at_least: int, partition: int = 0) -> hw.PartitionInfo:
    depot = cluster.depot("clicks", "clicks")
    deadline = time.monotonic() + WAIT_S
    while (info := depot.partition_info(partition)).start_offset < at_least:
        assert time.monotonic() < deadline, info
        time.sleep(0.05)
    return info


def test_max_records_trims_processed_records_and_reading_below_the_start_is_a_clear_error(cluster):
    cluster.deploy(clicks_module(hw.Retention(max_records=10)), tasks=1)
    depot = cluster.depot("clicks", "clicks")
    depot.append_many([Click(1, i) for i in range(50)])
    info = wait_start(cluster, 40)
    assert (info.start_offset, info.end_offset) == (40, 50)
    assert [r.offset for r in depot.read(0, 40)] == list(range(40, 50))
    with pytest.raises(hw.NotFound, match="read from 40"):
        depot.read(0, 0, 10)
    assert cluster.pstate("clicks", "counts")[1].get() == 50  # every record was processed first
    depot.append(Click(1, 50))
    assert depot.partition_info(0).end_offset == 51  # offsets go on, whatever was trimmed


def test_a_record_not_processed_or_in_the_dead_letters_is_never_trimmed(cluster):
    cluster.deploy(clicks_module(hw.Retention(max_records=0), slow=True), tasks=1)
    depot = cluster.depot("clicks", "clicks")
    depot.append_many([Click(1, i) for i in range(5)])
    with pytest.raises(hw.HandlerError):
        depot.append(Click(1, -1))  # offset 5: a dead letter
    depot.append_many([Click(1, i) for i in range(6, 10)])
    time.sleep(2.5)  # two retention checks
    info = depot.partition_info(0)
    assert info.start_offset == 5  # the dead letter's record stays, and everything after it
    [letter] = cluster.dead_letters("clicks", "count")
    assert letter.event == Click(1, -1)


def test_max_age_and_a_restart_keep_the_start(tmp_path):
    path = tmp_path / "data"
    with hw.InProcessCluster(path) as cluster:
        cluster.deploy(clicks_module(hw.Retention(max_age_s=0.5)), tasks=1)
        depot = cluster.depot("clicks", "clicks")
        depot.append_many([Click(1, i) for i in range(20)])
        info = wait_start(cluster, 20)  # all older than half a second: trimmed on an idle task too
        assert info.end_offset == 20
    with hw.InProcessCluster(path) as cluster:
        cluster.deploy(clicks_module(hw.Retention(max_age_s=0.5)))
        depot = cluster.depot("clicks", "clicks")
        assert depot.partition_info(0).start_offset == 20
        assert depot.append(Click(1, 20)).offset == 20  # not 0: a trimmed depot goes on from its end


def test_trimmed_space_is_given_back_on_disk(tmp_path):
    import os

    def size(directory) -> int:
        return sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())

    path = tmp_path / "data"
    with hw.InProcessCluster(path) as cluster:
        cluster.deploy(clicks_module(hw.Retention(max_records=100)), tasks=1)
        depot = cluster.depot("clicks", "clicks")
        note = "x" * 2000  # 20,000 records of 2 KB: 40 MB written
        for batch in range(20):
            depot.append_many([Click(1, batch * 1000 + i, note + str(i)) for i in range(1000)])
        info = wait_start(cluster, 19_900)
        assert info.end_offset == 20_000
        store = path / "clicks" / "task-0"
        deadline = time.monotonic() + WAIT_S  # the compaction after the trim (slower on a loaded machine)
        while size(store) >= 12 * 1024 * 1024:
            assert time.monotonic() < deadline, size(store)
            time.sleep(0.1)


def test_a_retention_is_checked():
    with pytest.raises(hw.DefinitionError, match="needs max_records"):
        hw.Retention()
    with pytest.raises(hw.DefinitionError, match="max_records"):
        hw.Retention(max_records=-1)
    with pytest.raises(hw.DefinitionError, match="retention must be"):
        hw.Module("m").depot("d", int, retention={"max_records": 5})


def racing_module() -> hw.Module:
    """A depot that keeps nothing once processed, read by a fast topology, a slow one whose trees
    stay unfinished while a hop waits, and a microbatch."""
    m = hw.Module("race")
    clicks = m.depot("clicks", Click, partition_by="user", retention=hw.Retention(max_records=0, max_age_s=0.001))
    fast = m.pstate("fast", hw.Map(int, int))
    slow = m.pstate("slow", hw.Map(int, int))
    batched = m.pstate("batched", hw.Map(int, int))

    @m.stream(clicks)
    def count_fast(ctx: hw.Context, click: Click) -> None:
        ctx.pstate(fast)[click.n].increment()

    @m.step
    def count_slow(ctx: hw.Context, n: int) -> None:
        time.sleep(0.002)
        ctx.pstate(slow)[n].increment()

    @m.stream(clicks)
    def hop_slowly(ctx: hw.Context, click: Click) -> None:
        time.sleep(0.01)  # seconds behind the appends: several retention checks run meanwhile
        ctx.hop(click.n, count_slow, click.n)

    @m.microbatch(clicks)
    def count_batched(ctx: hw.Context, click: Click) -> None:
        ctx.pstate(batched)[click.n].increment()

    return m


def test_retention_racing_slow_topologies_trims_nothing_they_still_need(cluster):
    total = 300
    cluster.deploy(racing_module(), tasks=2)
    depot = cluster.depot("race", "clicks")
    for start in range(0, total, 50):  # bursts, while the retention checks run
        depot.append_many([Click(start + i, start + i) for i in range(50)], ack="append")
        time.sleep(0.1)
    cluster.wait_for_microbatch("race", "count_batched", processed=total, timeout=WAIT_S)
    for name in ("fast", "slow", "batched"):
        view = cluster.pstate("race", name)
        deadline = time.monotonic() + WAIT_S
        while (counts := [view[n].get(0) for n in range(total)]) != [1] * total:
            assert time.monotonic() < deadline and max(counts) <= 1, f"{name}: {counts}"
            time.sleep(0.05)
    for topology in ("count_fast", "hop_slowly"):
        assert cluster.dead_letters("race", topology) == []  # nothing read below a trimmed start
    for partition in range(2):  # and, once everyone is done, it is all trimmed
        deadline = time.monotonic() + WAIT_S
        while (info := depot.partition_info(partition)).start_offset < info.end_offset:
            assert time.monotonic() < deadline, info
            time.sleep(0.05)
