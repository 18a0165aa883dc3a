"""External depots (`module.external_depot`) over a `hw.Source`: here a log of files, one per source
partition, one JSON event per line, with the line number as the position. The real adapters
(Redis, PostgreSQL) are tested against real servers in tests/sources/."""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import headwater as hw
from tests import waiting
from tests.clusters import LOCAL_WORKERS

RECOVERY_S_MAX = 60


@dataclass
class Line:
    partition: int
    n: int


class FileLog(hw.Source):
    """Partition p is the file `<directory>/p.log`; a position is the number of the last line read."""

    lag_unit = "lines"

    def __init__(self, directory: Path, partitions: int = 1, start_at_end: bool = False) -> None:
        self.directory = str(directory)
        self.partitions = partitions
        self.start_at_end = start_at_end

    def open(self, partition: int) -> FileLogReader:
        return FileLogReader(Path(self.directory) / f"{partition}.log", self.start_at_end)

    def describe(self) -> str:
        return f"FileLog({self.partitions})"


class FileLogReader(hw.SourceReader):
    def __init__(self, path: Path, start_at_end: bool) -> None:
        self.path = path
        self.start_at_end = start_at_end

    def lines(self) -> list[str]:
        return self.path.read_text().splitlines() if self.path.exists() else []

    def start(self) -> int | None:
        return len(self.lines()) - 1 if self.start_at_end else None

    def read(self, after: int | None, *, records_max: int, wait_s: float) -> list[tuple[int, dict]]:
        first = 0 if after is None else after + 1
        deadline = time.monotonic() + wait_s
        while True:
            lines = self.lines()[first:first + records_max]
            if lines or time.monotonic() >= deadline:
                return [_row(first + i, json.loads(line)) for i, line in enumerate(lines)]
            time.sleep(0.01)

    def lag(self, after: int | None) -> int:
        return len(self.lines()) - (0 if after is None else after + 1)


def _row(position: int, line: dict) -> tuple:
    """A line with an "at" (microseconds, or an ISO date) is an event with its time at the source."""
    if "at" not in line:
        return position, line
    at = line.pop("at")
    return position, line, datetime.fromisoformat(at) if isinstance(at, str) else at


def write(directory: Path, partition: int, numbers: range) -> None:
    with open(directory / f"{partition}.log", "a") as f:
        for n in numbers:
            f.write(json.dumps({"partition": str(partition), "n": str(n)}) + "\n")  # strings: converted to ints


def module(directory: Path, partitions: int = 2, **options) -> hw.Module:
    m = hw.Module("ext")
    lines = m.external_depot("lines", FileLog(directory, partitions, **options), Line)
    seen = m.pstate("seen", hw.Map(int, hw.Map(int, int)))

    @m.stream(lines, start_from="beginning")
    def count(ctx: hw.Context, line: Line) -> None:
        assert ctx.partition == line.partition == ctx.task_id
        ctx.pstate(seen)[line.partition][line.n].increment()

    return m


def wait_for(predicate, what: str, timeout_s: float = RECOVERY_S_MAX):
    return waiting.wait_for(predicate, what, timeout_s)


def ingested(cluster, partition: int) -> list[int]:
    depot = cluster.depot("ext", "lines")
    records, start = [], 0
    while batch := depot.read(partition, start, limit=10_000):
        records += [r.event.n for r in batch]
        start = batch[-1].offset + 1
    return records


def test_an_external_depot_ingests_each_partition_once_and_pauses(cluster, tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    write(source, 0, range(0, 300))
    write(source, 1, range(0, 5))
    cluster.deploy(module(source), tasks=3)  # a third task owns no partition of the source
    wait_for(lambda: len(ingested(cluster, 0)) == 300 and len(ingested(cluster, 1)) == 5, "the first lines")
    assert ingested(cluster, 0) == list(range(300)) and ingested(cluster, 1) == list(range(5))
    def sources() -> dict[int, dict]:
        return {t["task"]: t["sources"].get("lines") for t in cluster.status()["ext"]}

    wait_for(lambda: [s and s["lag"] for s in sources().values()] == [0, 0, None], "the lag to reach 0")
    shown = sources()
    assert [s and s["position"] for s in shown.values()] == [299, 4, None]  # task 2 owns no partition
    assert shown[0]["lag_unit"] == "lines" and shown[0]["error"] is None and shown[0]["source"] == "FileLog(2)"

    cluster.pause("ext", "lines")
    write(source, 1, range(5, 10))
    time.sleep(1.0)  # longer than a read's wait: a running poller would have taken the lines by now
    assert len(ingested(cluster, 1)) == 5 and cluster.status()["ext"][1]["sources"]["lines"]["paused"]
    cluster.resume("ext", "lines")
    wait_for(lambda: len(ingested(cluster, 1)) == 10, "the lines written while paused")
    assert ingested(cluster, 1) == list(range(10))
    wait_for(lambda: cluster.pstate("ext", "seen")[1].size() == 10, "processing")
    assert set(cluster.pstate("ext", "seen")[1].values()) == {1}


def test_clients_cannot_append_to_an_external_depot_and_a_source_needs_its_tasks(cluster, tmp_path):
    cluster.deploy(module(tmp_path, partitions=1), tasks=1)
    with pytest.raises(hw.PermissionDenied, match="external depot: only its source .*FileLog"):
        cluster.depot("ext", "lines").append(Line(0, 1))
    with pytest.raises(hw.DefinitionError, match="source has 3 partitions and the module 2 tasks"):
        cluster.deploy(_renamed(tmp_path, 3), tasks=2)


def _renamed(directory: Path, partitions: int) -> hw.Module:
    m = hw.Module("ext2")
    m.external_depot("lines", FileLog(directory, partitions), Line)
    return m


def test_a_source_that_starts_at_its_end_skips_what_came_before_and_keeps_that_start(cluster, tmp_path):
    write(tmp_path, 0, range(0, 7))
    cluster.deploy(module(tmp_path, partitions=1, start_at_end=True), tasks=1)
    wait_for(lambda: cluster.status()["ext"][0]["sources"]["lines"]["position"] == 6, "the start to be pinned")
    write(tmp_path, 0, range(7, 9))
    wait_for(lambda: ingested(cluster, 0) == [7, 8], "the lines after the start")


def test_a_bad_event_stops_its_partition_and_says_why(cluster, tmp_path):
    write(tmp_path, 0, range(0, 2))
    with open(tmp_path / "0.log", "a") as f:
        f.write(json.dumps({"partition": "0", "n": "not a number"}) + "\n")
    write(tmp_path, 0, range(3, 4))
    cluster.deploy(module(tmp_path, partitions=1), tasks=1)
    error = wait_for(lambda: cluster.status()["ext"][0]["sources"]["lines"]["error"], "the error")
    assert "SchemaError" in error and "$.n" in error
    assert ingested(cluster, 0) == []  # the batch holding it is not taken in part: nothing is skipped


def test_a_record_has_its_sources_time_never_going_back_nor_ahead_of_its_ingestion(cluster, tmp_path):
    """A reader may give each event its time at the source: the record's timestamp (a read's, and
    ctx.timestamp's) is that time, kept from going back within the partition and from the future."""
    hour_us = 3600 * 10**6
    then_us = time.time_ns() // 1000 - 5 * hour_us
    at = [then_us, then_us + hour_us, then_us, None, (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
          time.time_ns() // 1000 + hour_us]  # back in time (3rd), none (4th), ahead of now (6th)
    with open(tmp_path / "0.log", "a") as f:
        for n, time_us in enumerate(at):
            f.write(json.dumps({"partition": 0, "n": n} | ({} if time_us is None else {"at": time_us})) + "\n")
    m = hw.Module("ext")
    lines = m.external_depot("lines", FileLog(tmp_path, 1), Line)
    stamps = m.pstate("stamps", hw.Map(int, str))

    @m.stream(lines, start_from="beginning")
    def stamp(ctx: hw.Context, line: Line) -> None:
        ctx.pstate(stamps)[line.n].set(ctx.timestamp.isoformat())

    before = datetime.now(UTC)
    cluster.deploy(m, tasks=1)
    wait_for(lambda: cluster.pstate("ext", "stamps").size() == len(at), "every line processed")
    after = datetime.now(UTC)
    got = [r.timestamp for r in cluster.depot("ext", "lines").read(0, 0)]
    as_time = [datetime.fromtimestamp(t / 1e6, UTC) if isinstance(t, int) else t for t in at]
    assert got[:3] == [as_time[0], as_time[1], as_time[1]]  # the third's time went back: the second's
    assert before <= got[3] <= after  # no time at the source: its ingestion's
    assert got[4] == max(got[3], datetime.fromisoformat(at[4]))
    assert got[3] <= got[5] <= after  # ahead of its ingestion: its ingestion's
    assert [datetime.fromisoformat(cluster.pstate("ext", "stamps")[n].get()) for n in range(len(at))] == got


def test_a_source_time_that_is_not_a_time_stops_its_partition_and_says_why(cluster, tmp_path):
    with open(tmp_path / "0.log", "a") as f:
        f.write(json.dumps({"partition": 0, "n": 0, "at": "2026-12-05T10:00:00"}) + "\n")  # no time zone
    cluster.deploy(module(tmp_path, partitions=1), tasks=1)
    error = wait_for(lambda: cluster.status()["ext"][0]["sources"]["lines"]["error"], "the error")
    assert "TypeError" in error and "aware datetime" in error
    assert ingested(cluster, 0) == []


def test_ingestion_is_exactly_once_when_the_worker_ingesting_is_killed(tmp_path):
    """SIGKILL the worker ingesting partition 1 while it ingests 20,000 lines, twice: every line is in
    the depot once, in order (the position is stored in the write batch that appends the lines)."""
    source = tmp_path / "source"
    source.mkdir()
    total = 20_000
    write(source, 1, range(total))
    with hw.LocalCluster(tmp_path / "data", workers=LOCAL_WORKERS) as cluster:
        cluster.deploy(module(source), tasks=2)
        for kill_at in (3_000, 9_000):
            wait_for(lambda: cluster.depot("ext", "lines").partition_info(1).end_offset >= kill_at, "ingestion")
            pid = next(t["pid"] for t in cluster.status()["ext"] if t["task"] == 1)
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: all(t["up"] for t in cluster.status()["ext"]), "the worker's restart")
        wait_for(lambda: cluster.depot("ext", "lines").partition_info(1).end_offset >= total, "all lines")
        time.sleep(0.5)
        assert ingested(cluster, 1) == list(range(total))


def test_on_ray_a_task_ingests_in_its_actor_with_its_resource(tmp_path):
    """RayCluster: the poller and the resource live in the worker actor's process hosting the task."""
    pytest.importorskip("ray", reason="Ray is not installed: run `make install` (the ray extra)")
    from tests.clusters import open_cluster

    source = tmp_path / "source"
    source.mkdir()
    write(source, 0, range(100))
    m = hw.Module("ext")
    lines = m.external_depot("lines", FileLog(source, 1), Line)
    pids = m.pstate("pids", hw.Map(int, int))
    m.resource("pid", lambda task_id: os.getpid())

    @m.stream(lines, start_from="beginning")
    def note(ctx: hw.Context, line: Line) -> None:
        ctx.pstate(pids)[line.n].set(ctx.resource("pid"))

    with open_cluster("ray", tmp_path / "data") as cluster:
        cluster.deploy(m, tasks=1)
        wait_for(lambda: cluster.pstate("ext", "pids")[99].get() is not None, "ingestion on Ray")
        actor_pid = cluster.status()["ext"][0]["pid"]
        assert actor_pid != os.getpid() and cluster.pstate("ext", "pids")[0].get() == actor_pid
        assert ingested(cluster, 0) == list(range(100))
