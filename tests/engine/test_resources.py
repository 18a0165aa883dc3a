"""Per-task resources (`module.resource`): one object per task, built in the process hosting the
task when it starts, closed when it stops, rebuilt after a worker restart, never pickled.

Each test counts the factory's and close's calls through a log file the resource's own code
writes (in whichever process hosts the task), so the tests see what happened in the workers.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import headwater as hw
from headwater.cluster import hosts
from tests.clusters import LOCAL_WORKERS

RECOVERY_S_MAX = 60


@dataclass
class Job:
    key: int


class Conn:
    """What a factory builds: it holds a lock, so pickling it would fail (it never travels)."""

    def __init__(self, task_id: int, version: int) -> None:
        self.task_id = task_id
        self.version = version
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.closed = False


def log_lines(log: Path) -> list[tuple[str, ...]]:
    return [tuple(line.split()) for line in log.read_text().splitlines()] if log.exists() else []


def module(log: Path, *, version: int = 1, name: str = "res", fail: Path | None = None,
           close_sleep_s: float = 0.0) -> hw.Module:
    """A module with resource 'conn' logging "open|close <task> <pid> v<version>" to `log`; its
    factory raises on task 1 while the file `fail` exists."""
    m = hw.Module(name)
    jobs = m.depot("jobs", Job, partition_by="key")
    seen = m.pstate("seen", hw.Map(int, hw.Record(task=int, pid=int)))
    batched = m.pstate("batched", hw.Map(int, int))
    log_path, fail_path = str(log), str(fail) if fail else None

    def build(task_id: int) -> Conn:
        if fail_path and task_id == 1 and os.path.exists(fail_path):
            raise ConnectionRefusedError(f"no server for task {task_id}")
        conn = Conn(task_id, version)
        with open(log_path, "a") as f:
            f.write(f"open {task_id} {conn.pid} v{version}\n")
        return conn

    def close(conn: Conn) -> None:
        time.sleep(close_sleep_s)
        conn.closed = True
        with open(log_path, "a") as f:
            f.write(f"close {conn.task_id} {conn.pid} v{conn.version}\n")

    m.resource("conn", build, close=close)

    @m.stream(jobs)
    def record(ctx: hw.Context, job: Job) -> tuple[int, int, int]:
        conn = ctx.resource("conn")
        assert conn is ctx.resource("conn") and not conn.closed
        ctx.hop(job.key, note, job.key)
        return conn.task_id, conn.pid, conn.version

    @m.step
    def note(ctx: hw.Context, key: int) -> None:
        conn = ctx.resource("conn")
        ctx.pstate(seen)[key].set({"task": conn.task_id, "pid": conn.pid})

    @m.microbatch(jobs)
    def count(ctx: hw.Context, job: Job) -> None:
        ctx.pstate(batched)[job.key].set(ctx.resource("conn").task_id)

    @m.step
    def where(ctx: hw.Context) -> tuple[int, int]:
        return ctx.resource("conn").task_id, ctx.resource("conn").pid

    @m.query(route_by="key")
    def routed(ctx: hw.QueryContext, key: int) -> tuple[int, int]:
        return ctx.resource("conn").task_id, ctx.resource("conn").pid

    @m.query
    def everywhere(ctx: hw.QueryContext) -> list[tuple[int, int]]:
        return ctx.call_all(where)

    @m.query
    def unrouted(ctx: hw.QueryContext) -> int:
        return ctx.resource("conn").task_id

    @m.stream(jobs)
    def misspelled(ctx: hw.Context, job: Job) -> None:
        if job.key == -1:
            ctx.resource("con")

    return m


def pids_by_task(cluster: hw.InProcessCluster, name: str = "res") -> dict[int, int]:
    return {t["task"]: t["pid"] for t in cluster.status()[name]}


def keys_per_task(cluster: hw.InProcessCluster, tasks: int) -> dict[int, int]:
    """One key owned by each task."""
    from headwater.schema import task_for_key

    found: dict[int, int] = {}
    key = 0
    while len(found) < tasks:
        found.setdefault(task_for_key(key, tasks), key)
        key += 1
    return found


def test_each_task_builds_its_resource_where_it_runs_and_every_kind_of_code_uses_it(cluster, tmp_path):
    log = tmp_path / "log"
    cluster.deploy(module(log), tasks=3)
    pids = pids_by_task(cluster)
    assert sorted((int(task), int(pid)) for op, task, pid, _ in log_lines(log) if op == "open") == sorted(pids.items())
    depot = cluster.depot("res", "jobs")
    for task, key in keys_per_task(cluster, 3).items():
        assert list(depot.append(Job(key))["record"]) == [task, pids[task], 1]
        assert cluster.pstate("res", "seen")[key].get() == {"task": task, "pid": pids[task]}
        assert list(cluster.query("res", "routed")(key)) == [task, pids[task]]
    cluster.wait_for_microbatch("res", "count", processed=3)
    assert sorted(cluster.pstate("res", "batched")[key].get() for key in keys_per_task(cluster, 3).values()) == [0, 1, 2]
    assert [tuple(row) for row in cluster.query("res", "everywhere")()] == sorted(pids.items())
    with pytest.raises(hw.ResourceError, match="runs on no task .* route_by"):
        cluster.query("res", "unrouted")()
    assert len(log_lines(log)) == 3  # built once per task, whatever used it
    cluster.close()
    closes = sorted((int(task), int(pid)) for op, task, pid, _ in log_lines(log) if op == "close")
    assert closes == sorted(pids.items())


def test_an_unknown_resource_name_says_which_exist(cluster, tmp_path):
    cluster.deploy(module(tmp_path / "log"), tasks=1)
    with pytest.raises(hw.HandlerError, match="no resource named 'con' in module 'res'.*did you mean 'conn'"):
        cluster.depot("res", "jobs").append(Job(-1))


def test_update_closes_the_old_resources_before_building_the_new_and_destroy_closes_them(cluster, tmp_path):
    log = tmp_path / "log"
    cluster.deploy(module(log), tasks=2)
    cluster.update(module(log, version=2))
    lines = log_lines(log)
    assert [(op, version) for op, _, _, version in lines] == [("open", "v1")] * 2 + [("close", "v1")] * 2 + [
        ("open", "v2")] * 2
    key = keys_per_task(cluster, 2)[1]
    assert cluster.depot("res", "jobs").append(Job(key))["record"][2] == 2
    cluster.destroy("res")
    assert [(op, version) for op, _, _, version in log_lines(log)[6:]] == [("close", "v2")] * 2


def test_a_factory_that_raises_fails_deploy_and_nothing_starts(cluster, tmp_path):
    log, fail = tmp_path / "log", tmp_path / "fail"
    fail.touch()
    with pytest.raises(hw.ResourceError, match=r"resource 'conn' of task 1 .* ConnectionRefusedError: no server") as e:
        cluster.deploy(module(log, fail=fail), tasks=3)
    assert (e.value.resource, e.value.task) == ("conn", 1)
    assert cluster.modules() == []
    opened = sorted(line[1:3] for line in log_lines(log) if line[0] == "open")
    assert opened and opened == sorted(line[1:3] for line in log_lines(log) if line[0] == "close")
    fail.unlink()
    cluster.deploy(module(log, fail=fail), tasks=3)  # the data directory is fine to deploy on again
    assert cluster.depot("res", "jobs").append(Job(keys_per_task(cluster, 3)[1]))["record"][0] == 1


def test_an_update_whose_factory_raises_keeps_the_old_code_running(cluster, tmp_path):
    log, fail = tmp_path / "log", tmp_path / "fail"
    cluster.deploy(module(log), tasks=2)
    fail.touch()
    with pytest.raises(hw.ResourceError, match="resource 'conn' of task 1"):
        cluster.update(module(log, version=2, fail=fail))
    key = keys_per_task(cluster, 2)[1]
    assert cluster.depot("res", "jobs").append(Job(key))["record"][2] == 1


@pytest.mark.in_process_only("the bound is patched in this process")
def test_a_close_that_hangs_does_not_hold_the_cluster_close(cluster, tmp_path, monkeypatch):
    monkeypatch.setattr(hosts, "RESOURCE_CLOSE_WAIT_MAX_S", 0.3)
    cluster.deploy(module(tmp_path / "log", close_sleep_s=30), tasks=2)
    started = time.monotonic()
    cluster.close()
    assert time.monotonic() - started < 3


def wait_until(predicate, what: str, timeout_s: float = RECOVERY_S_MAX):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_killed_worker_rebuilds_its_tasks_resources_and_waits_while_a_factory_raises(tmp_path):
    """SIGKILL the worker hosting task 1: its new process builds task 1's resource again, and while
    the factory raises there the task runs nothing and status() says why; then it heals."""
    log, fail = tmp_path / "log", tmp_path / "fail"
    with hw.LocalCluster(tmp_path / "data", workers=LOCAL_WORKERS) as cluster:
        cluster.deploy(module(log, fail=fail), tasks=2)
        before = pids_by_task(cluster)
        fail.touch()
        os.kill(before[1], signal.SIGKILL)
        row = wait_until(lambda: next((t for t in cluster.status()["res"] if t["task"] == 1 and t["error"]), None),
                         "task 1 to report its resource error")
        assert not row["up"] and "resource 'conn' of task 1" in row["error"] and "ConnectionRefusedError" in row[
            "error"]
        assert row["pid"] != before[1]
        key = keys_per_task(cluster, 2)[1]
        with pytest.raises((hw.AckTimeout, hw.Unavailable)):
            cluster.depot("res", "jobs").append(Job(key), timeout=1)
        fail.unlink()
        wait_until(lambda: all(t["up"] for t in cluster.status()["res"]), "task 1 to start")
        after = pids_by_task(cluster)
        result = cluster.depot("res", "jobs").append(Job(key), idempotency_key="after")
        assert list(result["record"]) == [1, after[1], 1]
        opens = [(int(task), int(pid)) for op, task, pid, _ in log_lines(log) if op == "open"]
        assert sorted(opens) == sorted([*before.items(), (1, after[1])])  # task 0 kept its resource
    closes = [(int(task), int(pid)) for op, task, pid, _ in log_lines(log) if op == "close"]
    assert sorted(closes) == sorted(after.items())  # the killed process closed nothing; the others at close


def test_a_resource_is_checked_where_it_is_declared():
    m = hw.Module("declared")
    with pytest.raises(hw.DefinitionError, match=r"called with the task id, as factory\(task_id\)"):
        m.resource("conn", lambda: object())
    with pytest.raises(hw.DefinitionError, match="close must be None or a callable"):
        m.resource("conn", lambda task_id: object(), close="quit")
    m.resource("conn", lambda task_id: object())
    with pytest.raises(hw.DefinitionError, match="already has a resource named 'conn'"):
        m.resource("conn", lambda task_id: object())
