"""Backups: consistent across tasks, incremental, safe across a crash, restorable on every cluster kind.

The module under test writes on two tasks per record: its handler marks the record `seen` on the
record's task and hops to the task of `n + 1`, which marks `echoed[n + 1]`. A backup taken at one
cut holds an `echoed` entry only for a record its depot holds too; after a restore, recovery
re-drives what was in flight at the cut, so every restored record ends up both seen and echoed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import headwater as hw
from headwater.cluster.backups import BACKUP_PAUSE_MAX_S, describe_backups, read_manifest
from headwater.cluster.local import BACKUP_HOLD_EXPIRES_S
from tests.clusters import CLUSTER_KINDS, open_cluster
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
TASKS = 4
PROCESSED_WAIT_S = 60.0  # the longest recovery after a restore may take to process every restored record


@dataclass
class Event:
    n: int


echo = hw.Module("echo")
events = echo.depot("events", Event, partition_by="n")
seen = echo.pstate("seen", hw.Map(int, bool))
echoed = echo.pstate("echoed", hw.Map(int, bool))


@echo.stream(events)
def on_event(ctx: hw.Context, event: Event) -> None:
    ctx.pstate(seen)[event.n].set(True)
    ctx.hop(event.n + 1, echo_step, event.n)


@echo.step
def echo_step(ctx: hw.Context, n: int) -> None:
    ctx.pstate(echoed)[n + 1].set(True)


def depot_numbers(cluster: hw.InProcessCluster) -> set[int]:
    depot = cluster.depot("echo", "events")
    found: set[int] = set()
    for partition in range(depot.partitions):
        end = depot.partition_info(partition).end_offset
        for start in range(0, end, 10_000):
            found.update(record.event.n for record in depot.read(partition, start, min(end, start + 10_000)))
    return found


def keys_of(cluster: hw.InProcessCluster, pstate: str, module: str = "echo", tasks: int = TASKS) -> set[int]:
    return {key for task in range(tasks) for key, _ in cluster.pstate(module, pstate, task=task).items()}


class Appenders:
    """Threads appending full-ack events with numbers from their own ranges until stopped; each
    acked number is recorded with the time its ack came back."""

    def __init__(self, cluster: hw.InProcessCluster, threads: int = 3) -> None:
        self._depot = cluster.depot("echo", "events")
        self._stop = threading.Event()
        self.acked: list[tuple[float, int]] = []
        self.latencies: list[tuple[float, float]] = []  # (when sent, seconds to the ack)
        self._threads = [threading.Thread(target=self._run, args=(1_000_000 * (i + 1),)) for i in range(threads)]
        for thread in self._threads:
            thread.start()

    def _run(self, first: int) -> None:
        n = first
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                self._depot.append(Event(n), timeout=30)
            except hw.Unavailable:
                return  # the cluster closed under us: the test stopped it
            now = time.monotonic()
            self.acked.append((now, n))
            self.latencies.append((sent, now - sent))
            n += 2  # odd and even ranges never meet another thread's `n + 1`

    def acked_before(self, moment: float) -> set[int]:
        return {n for at, n in list(self.acked) if at < moment}

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)


def check_restored(cluster: hw.InProcessCluster, must_hold: set[int]) -> set[int]:
    """Every record in the restored depot is processed on both tasks it touches (after recovery
    re-drives the cut's messages), nothing else is, and every number in `must_hold` is there."""
    numbers = depot_numbers(cluster)
    assert must_hold <= numbers, f"{len(must_hold - numbers)} acked before the backup are missing"
    wait_for(lambda: keys_of(cluster, "seen") == numbers and keys_of(cluster, "echoed") == {n + 1 for n in numbers},
             "every restored record to be processed and echoed", PROCESSED_WAIT_S)
    progress = cluster.progress("echo")["on_event"]["events"]
    depot = cluster.depot("echo", "events")
    assert progress == [depot.partition_info(p).end_offset for p in range(depot.partitions)]
    return numbers


@pytest.mark.parametrize("kind", CLUSTER_KINDS)
def test_a_backup_under_load_restores_to_one_cut(tmp_path, kind):
    with open_cluster(kind, tmp_path / "data") as cluster:
        cluster.deploy(echo, tasks=TASKS)
        cluster.depot("echo", "events").append_many([Event(n) for n in range(0, 2000, 2)], ack="append")
        appenders = Appenders(cluster)
        try:
            wait_for(lambda: len(appenders.acked) > 100, "appends to flow", 30)
            started = time.monotonic()
            info = cluster.backup(tmp_path / "backups")
            after = len(appenders.acked)
            wait_for(lambda: len(appenders.acked) > after + 20, "appends to flow after the backup", 30)
        finally:
            appenders.stop()
        must_hold = appenders.acked_before(started) | set(range(0, 2000, 2))
        assert info.modules == {"echo": TASKS} and info.files_copied > 0 and info.bytes_copied > 0
        assert info.stall_s <= BACKUP_HOLD_EXPIRES_S
    restored = hw.restore(tmp_path / "backups", tmp_path / "restored")
    assert restored["id"] == info.id and restored["modules"] == {"echo": TASKS}
    with open_cluster(kind, tmp_path / "restored") as cluster:
        cluster.deploy(echo)
        numbers = check_restored(cluster, must_hold)
        assert numbers <= must_hold | {n for _, n in appenders.acked} | set(range(1_000_000, 4_000_000))
        cluster.depot("echo", "events").append(Event(7))  # the restored cluster goes on as any
        assert cluster.pstate("echo", "seen")[7].get() is True


@pytest.mark.parametrize("kind", CLUSTER_KINDS)
def test_a_second_backup_copies_only_what_changed(tmp_path, kind):
    with open_cluster(kind, tmp_path / "data") as cluster:
        cluster.deploy(echo, tasks=TASKS)
        depot = cluster.depot("echo", "events")
        for start in range(0, 40_000, 2000):
            depot.append_many([Event(n) for n in range(start, start + 2000)], ack="append")
        wait_for(lambda: len(keys_of(cluster, "echoed")) == 40_000, "the first events to be processed", 60)
        first = cluster.backup(tmp_path / "backups")
        depot.append_many([Event(n) for n in range(40_000, 40_100)])
        second = cluster.backup(tmp_path / "backups")
    assert second.id != first.id and second.files_reused > 0
    assert second.bytes_copied * 5 < first.bytes_copied, (first, second)
    assert sorted(os.listdir(tmp_path / "backups" / "backups")) == sorted([f"{first.id}.json", f"{second.id}.json"])
    hw.restore(tmp_path / "backups", tmp_path / "older", backup=first.id)  # every backup stays restorable
    hw.restore(tmp_path / "backups", tmp_path / "newer")
    with hw.InProcessCluster(tmp_path / "older") as cluster:
        cluster.deploy(echo)
        assert len(check_restored(cluster, set(range(40_000)))) == 40_000
    with hw.InProcessCluster(tmp_path / "newer") as cluster:
        cluster.deploy(echo)
        assert len(check_restored(cluster, set(range(40_100)))) == 40_100


_CRASHING_BACKUP = """
import sys, time
from pathlib import Path
import headwater as hw
from headwater.cluster import backups, inprocess
from tests.cluster.test_backups import Event, echo
from tests.clusters import open_cluster

data, destination, kind = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
with open_cluster(kind, data) as cluster:
    cluster.deploy(echo, tasks=4)
    print("pids", *{row["pid"] for row in cluster.status()["echo"]}, flush=True)
    depot = cluster.depot("echo", "events")
    depot.append_many([Event(n) for n in range(1000)])
    print("first", cluster.backup(destination).id, flush=True)
    depot.append_many([Event(n) for n in range(1000, 3000)])
    copy_file, finish = backups._copy_file, inprocess.finish

    def slow_copy(source, target):  # in this process, the second backup copies slowly: the kill lands mid-copy
        copy_file(source, target)
        print("copying", target, flush=True)
        time.sleep(0.2)

    def slow_finish(*args, **options):  # the workers copied: the kill lands before the manifest is written
        print("copied", flush=True)
        time.sleep(60)
        return finish(*args, **options)

    backups._copy_file, inprocess.finish = slow_copy, slow_finish
    cluster.backup(destination)
    print("second finished", flush=True)
"""


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie holds no lock
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("kind", CLUSTER_KINDS)
def test_a_crash_during_a_backup_leaves_the_previous_one_usable(tmp_path, kind):
    """SIGKILL the process taking a backup: in process, while it copies files; with workers, the
    supervisor once the workers copied theirs and before the manifest (the workers then exit)."""
    destination = tmp_path / "backups"
    child = subprocess.Popen([sys.executable, "-c", _CRASHING_BACKUP, str(tmp_path / "data"), str(destination), kind],
                             cwd=ROOT, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        pids = [int(pid) for pid in child.stdout.readline().split()[1:]]
        first = child.stdout.readline().split()
        assert first[0] == "first", first
        copying = child.stdout.readline()
        assert copying.startswith(("copying", "copied")), copying
        child.send_signal(signal.SIGKILL)  # files of the second backup are there, its manifest is not
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
    wait_for(lambda: all(_gone(pid) for pid in pids), "the killed cluster's processes to end", 30)
    named = {f"{digest}-{size}" for files in read_manifest(destination)["modules"]["echo"]["tasks"].values()
             for _, size, digest in files}
    assert {p.name for p in (destination / "files").rglob("*-*")} - named  # the dead backup's files, named by none
    assert (destination / "latest").read_text().strip() == first[1]
    assert read_manifest(destination)["id"] == first[1]
    hw.restore(destination, tmp_path / "restored")
    with hw.InProcessCluster(tmp_path / "restored") as cluster:
        cluster.deploy(echo)
        assert check_restored(cluster, set(range(1000))) == set(range(1000))
    # The crashed cluster's data reopens, and the next backup into the same place works.
    with open_cluster(kind, tmp_path / "data") as cluster:
        cluster.deploy(echo)
        wait_for(lambda: len(keys_of(cluster, "seen")) == 3000, "the crashed cluster to recover", 60)
        info = cluster.backup(destination)
        assert info.files_reused > 0
    hw.restore(destination, tmp_path / "after")
    with hw.InProcessCluster(tmp_path / "after") as cluster:
        cluster.deploy(echo)
        assert check_restored(cluster, set(range(3000))) == set(range(3000))


@pytest.mark.parametrize("kind", CLUSTER_KINDS)
def test_appends_stall_for_a_backup_within_the_bound(tmp_path, kind):
    with open_cluster(kind, tmp_path / "data") as cluster:
        cluster.deploy(echo, tasks=TASKS)
        appenders = Appenders(cluster, threads=2)
        try:
            wait_for(lambda: len(appenders.acked) > 50, "appends to flow", 30)
            infos = []
            for _ in range(3):
                began = time.monotonic()
                infos.append((began, cluster.backup(tmp_path / "backups"), time.monotonic()))
                time.sleep(0.1)
        finally:
            appenders.stop()
    for _, info, _ in infos:
        assert 0 < info.stall_s <= BACKUP_HOLD_EXPIRES_S, info
    during = [latency for sent, latency in appenders.latencies
              if any(began <= sent <= ended for began, _, ended in infos)]
    assert during, "no append was sent during a backup"
    # An append sent during a backup waits at most the hold, plus its own processing (generously, on a busy machine).
    assert max(during) < BACKUP_HOLD_EXPIRES_S + 5.0
    assert max(info.stall_s for _, info, _ in infos) < 2 * BACKUP_PAUSE_MAX_S


sink = hw.Module("sink")
mirrored = sink.mirror_depot("echo", "events")
got = sink.pstate("got", hw.Map(int, bool))


@sink.stream(mirrored)
def take(ctx: hw.Context, event: Event) -> None:
    ctx.pstate(got)[event.n].set(True)


@pytest.mark.parametrize("kind", CLUSTER_KINDS)
def test_modules_connected_by_a_mirror_are_backed_up_at_one_cut(tmp_path, kind):
    """The cut holds every module's tasks at once: the module mirroring a depot holds no record the
    restored depot lacks, and after the restore it catches up on every one."""
    with open_cluster(kind, tmp_path / "data") as cluster:
        cluster.deploy(echo, tasks=2)
        cluster.deploy(sink, tasks=2)
        appenders = Appenders(cluster, threads=2)
        try:
            wait_for(lambda: len(appenders.acked) > 100, "appends to flow", 30)
            wait_for(lambda: {n for _, n in appenders.acked[:50]} <= keys_of(cluster, "got", "sink", 2),
                     "the mirror to follow", 30)
            started = time.monotonic()
            cluster.backup(tmp_path / "backups")
        finally:
            appenders.stop()
    hw.restore(tmp_path / "backups", tmp_path / "restored")
    with open_cluster(kind, tmp_path / "restored") as cluster:
        cluster.deploy(echo)
        cluster.deploy(sink)
        numbers = depot_numbers(cluster)
        assert appenders.acked_before(started) <= numbers
        wait_for(lambda: keys_of(cluster, "got", "sink", 2) == numbers, "the mirror to catch up on the restored depot",
                 PROCESSED_WAIT_S)


slow = hw.Module("slow")
slow_events = slow.depot("events", Event, partition_by="n")
slow_seen = slow.pstate("seen", hw.Map(int, bool))
SLOW_ROUND_S = 3 * BACKUP_PAUSE_MAX_S


@slow.stream(slow_events)
def slowly(ctx: hw.Context, event: Event) -> None:
    if event.n == 0:
        time.sleep(SLOW_ROUND_S)  # a round longer than a backup may wait for
    ctx.pstate(slow_seen)[event.n].set(True)


@pytest.mark.parametrize("kind", CLUSTER_KINDS)
def test_a_long_round_makes_the_backup_let_go_and_try_again(tmp_path, kind):
    """While task 0 runs a long round, the backup must not hold task 1 longer than its bound: it lets
    go of every task, tries again, and takes its cut once the round is over."""
    with open_cluster(kind, tmp_path / "data") as cluster:
        cluster.deploy(slow, tasks=2)
        depot = cluster.depot("slow", "events")
        depot.append(Event(1))
        depot.append(Event(0), ack="append")  # task 0 is now in its slow round
        latencies = []
        stop = threading.Event()

        def append_to_task_1() -> None:
            n = 3
            while not stop.is_set():
                sent = time.monotonic()
                depot.append(Event(n))
                latencies.append(time.monotonic() - sent)
                n += 2

        appender = threading.Thread(target=append_to_task_1)
        appender.start()
        try:
            started = time.monotonic()
            info = cluster.backup(tmp_path / "backups")
            took = time.monotonic() - started
        finally:
            stop.set()
            appender.join(30)
    assert info.stall_s <= BACKUP_HOLD_EXPIRES_S
    assert took >= SLOW_ROUND_S * 0.5  # it waited the slow round out, trying again
    assert latencies and max(latencies) < BACKUP_HOLD_EXPIRES_S + 2.0, max(latencies)  # task 1 kept going
    hw.restore(tmp_path / "backups", tmp_path / "restored")
    with hw.InProcessCluster(tmp_path / "restored") as cluster:
        cluster.deploy(slow)
        assert cluster.pstate("slow", "seen")[0].get() is True


def test_a_hold_nobody_follows_up_expires(tmp_path):
    """A worker's hold ends by itself (the supervisor that asked for it is gone): the task runs again,
    and the late checkpoint is refused rather than taken outside the cut."""
    from headwater.cluster.backups import TaskPause

    with hw.InProcessCluster(tmp_path / "data") as cluster:
        cluster.deploy(echo, tasks=1)
        deployment = cluster._deployments["echo"]
        pause = TaskPause([(("echo", 0), deployment.hosts[0], deployment.stores[0])])
        assert pause.take(1.0)
        pause.expire_after(0.2)
        started = time.monotonic()
        cluster.depot("echo", "events").append(Event(1))  # waits for the hold to expire, then runs
        assert 0.1 < time.monotonic() - started < 5
        with pytest.raises(hw.Unavailable, match="hold on the tasks ended"):
            pause.checkpoint(tmp_path / "staging", lambda key: "task-0")


def test_a_replicated_module_restores_with_every_copy_in_sync(tmp_path):
    with hw.LocalCluster(tmp_path / "data", workers=2) as cluster:
        cluster.deploy(echo, tasks=2, replication=2)
        cluster.depot("echo", "events").append_many([Event(n) for n in range(500)])
        info = cluster.backup(tmp_path / "backups")
    assert info.modules == {"echo": 2}
    hw.restore(tmp_path / "backups", tmp_path / "restored")
    assert sorted(p.name for p in (tmp_path / "restored" / "echo").iterdir() if p.is_dir()) == [
        "task-0-w0", "task-0-w1", "task-1-w0", "task-1-w1"]
    with hw.LocalCluster(tmp_path / "restored", workers=2) as cluster:
        cluster.deploy(echo)
        numbers = depot_numbers(cluster)
        assert numbers == set(range(500))
        wait_for(lambda: all(f["in_sync"] for row in cluster.status()["echo"] for f in row["followers"])
                 and all(row["followers"] for row in cluster.status()["echo"]), "the followers to be in sync", 30)
        cluster.depot("echo", "events").append(Event(9_999))
        assert cluster.pstate("echo", "seen")[9_999].get() is True


# ---- bad inputs --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def one_backup(tmp_path_factory):
    root = tmp_path_factory.mktemp("one-backup")
    with hw.InProcessCluster(root / "data") as cluster:
        cluster.deploy(echo, tasks=2)
        cluster.depot("echo", "events").append_many([Event(n) for n in range(100)])
        info = cluster.backup(root / "backups")
    return root / "backups", info


def test_restoring_from_nowhere_says_so(tmp_path):
    with pytest.raises(hw.BackupError, match="not a directory"):
        hw.restore(tmp_path / "absent", tmp_path / "data")
    (tmp_path / "empty").mkdir()
    with pytest.raises(hw.BackupError, match="no complete backup"):
        hw.restore(tmp_path / "empty", tmp_path / "data")


def test_restoring_into_data_is_refused(tmp_path, one_backup):
    source, _ = one_backup
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "something").write_text("x")
    with pytest.raises(hw.BackupError, match="not an empty directory"):
        hw.restore(source, tmp_path / "data")
    assert os.listdir(tmp_path / "data") == ["something"]
    (tmp_path / "empty").mkdir()  # an empty directory is as good as none
    hw.restore(source, tmp_path / "empty")
    assert (tmp_path / "empty" / "echo" / "module.json").is_file()


def test_an_unknown_backup_id_lists_the_backups(tmp_path, one_backup):
    source, info = one_backup
    with pytest.raises(hw.BackupError, match=info.id):
        hw.restore(source, tmp_path / "data", backup="20000101T000000Z-000000")


def _copy(source: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(source, target)
    return target


def test_a_tampered_manifest_is_refused(tmp_path, one_backup):
    source = _copy(one_backup[0], tmp_path / "backups")
    manifest_path = source / "backups" / f"{one_backup[1].id}.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["modules"]["echo"]["catalog"]["tasks"] = 3
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(hw.BackupError, match="does not match its checksum"):
        hw.restore(source, tmp_path / "data")
    manifest_path.write_text("{not json")
    with pytest.raises(hw.BackupError, match="is corrupt"):
        hw.restore(source, tmp_path / "data")


def test_a_damaged_or_missing_file_is_named(tmp_path, one_backup):
    source = _copy(one_backup[0], tmp_path / "backups")
    files = sorted((source / "files").rglob("*-*"), key=lambda p: p.stat().st_size)
    largest = files[-1]
    data = bytearray(largest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    largest.write_bytes(bytes(data))
    with pytest.raises(hw.BackupError, match=f"corrupt: file .*{largest.name}"):
        hw.restore(source, tmp_path / "data")
    assert sorted(os.listdir(tmp_path)) == ["backups"]  # nothing half restored is left
    largest.unlink()
    with pytest.raises(hw.BackupError, match=f"incomplete: file .*{largest.name}.* is missing"):
        hw.restore(source, tmp_path / "data")


# ---- keeping the newest, one writer ------------------------------------------------------------
def _pool(destination: Path) -> dict[str, int]:
    return {path.name: path.stat().st_size for path in (destination / "files").glob("*/*")}


def _named(destination: Path) -> set[str]:
    return {f"{digest}-{size}" for backup_id in describe_backups(destination)
            for module in read_manifest(destination, backup_id)["modules"].values()
            for files in module["tasks"].values() for _, size, digest in files}


def test_keep_deletes_the_older_backups_and_the_files_only_they_named(tmp_path):
    destination = tmp_path / "backups"
    with hw.InProcessCluster(tmp_path / "data") as cluster:
        cluster.deploy(echo, tasks=TASKS)
        depot = cluster.depot("echo", "events")
        older = []
        for start in range(0, 4000, 1000):
            depot.append_many([Event(n) for n in range(start, start + 1000)])
            older.append(cluster.backup(destination))
        pooled = sum(_pool(destination).values())
        depot.append_many([Event(n) for n in range(4000, 4100)])
        newest = cluster.backup(destination, keep=2)
    assert newest.backups_removed == [info.id for info in older[:3]] and newest.bytes_removed > 0
    assert describe_backups(destination) == [older[3].id, newest.id]
    assert set(_pool(destination)) == _named(destination)  # every file left is named, every named one is there
    assert sum(_pool(destination).values()) == pooled + newest.bytes_copied - newest.bytes_removed
    with pytest.raises(hw.BackupError, match=older[3].id):
        hw.restore(destination, tmp_path / "gone", backup=older[0].id)
    hw.restore(destination, tmp_path / "kept", backup=older[3].id)
    with hw.InProcessCluster(tmp_path / "kept") as cluster:
        cluster.deploy(echo)
        assert len(check_restored(cluster, set(range(4000)))) == 4000

    pruned = hw.prune_backups(destination, keep=1)  # on its own: the latest stays
    assert pruned["kept"] == [newest.id] and pruned["removed"] == [older[3].id]
    assert set(_pool(destination)) == _named(destination)
    hw.restore(destination, tmp_path / "latest")
    with hw.InProcessCluster(tmp_path / "latest") as cluster:
        cluster.deploy(echo)
        assert len(check_restored(cluster, set(range(4100)))) == 4100


def test_pruning_checks_what_it_is_given(tmp_path, one_backup):
    for keep in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="keep="):
            hw.prune_backups(one_backup[0], keep=keep)
    with pytest.raises(hw.BackupError, match="no backups at"):
        hw.prune_backups(tmp_path / "nowhere", keep=1)
    source = _copy(one_backup[0], tmp_path / "backups")
    with hw.InProcessCluster(tmp_path / "data") as cluster:
        cluster.deploy(echo, tasks=2)
        with pytest.raises(ValueError, match="keep=0"):
            cluster.backup(source, keep=0)
        second = cluster.backup(source)
    (source / "backups" / f"{second.id}.json").write_text("{damaged")
    files = _pool(source)
    with pytest.raises(hw.BackupError, match="is corrupt"):
        hw.prune_backups(source, keep=1)  # the kept one cannot say what it names: nothing is deleted
    assert _pool(source) == files and len(describe_backups(source)) == 2


_HOLDING_THE_LOCK = """
import sys, time
from pathlib import Path
from headwater.cluster.backups import DestinationLock

with DestinationLock(Path(sys.argv[1])):
    print("holding", flush=True)
    time.sleep(120)
"""


def test_one_writer_per_destination_and_a_dead_one_holds_nothing(tmp_path):
    """A backup while another process writes into the same destination is refused, naming it; once
    that process is killed, its lock is gone with it."""
    destination = tmp_path / "backups"
    with hw.InProcessCluster(tmp_path / "data") as cluster:
        cluster.deploy(echo, tasks=2)
        cluster.depot("echo", "events").append_many([Event(n) for n in range(100)])
        first = cluster.backup(destination)
        holder = subprocess.Popen([sys.executable, "-c", _HOLDING_THE_LOCK, str(destination)], cwd=ROOT,
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
            with pytest.raises(hw.BackupError, match=f"another backup or prune is writing into .*pid {holder.pid}"):
                cluster.backup(destination)
            with pytest.raises(hw.BackupError, match="another backup or prune"):
                hw.prune_backups(destination, keep=1)
            assert describe_backups(destination) == [first.id]
            holder.kill()
            holder.wait()
            second = cluster.backup(destination, keep=1)
        finally:
            holder.kill()
            holder.wait()
            if holder.stdout is not None:
                holder.stdout.close()
    assert describe_backups(destination) == [second.id] and second.backups_removed == [first.id]


# ---- over HTTP and from the shell --------------------------------------------------------------
def test_backup_over_http_and_restore_from_the_shell(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from headwater.cli import ExitCode, app
    from headwater.server.auth import Auth, Token
    from tests.server.support import served

    tokens = Auth([Token("admin", "a-secret", frozenset({("admin", None)})),
                   Token("reader", "r-secret", frozenset({("read", None)}))])
    runner = CliRunner()
    with hw.InProcessCluster(tmp_path / "data") as cluster, served(cluster, auth=tokens) as url:
        cluster.deploy(echo, tasks=2)
        cluster.depot("echo", "events").append_many([Event(n) for n in range(300)])
        monkeypatch.setenv("HEADWATER_URL", url)
        denied = runner.invoke(app, ["backup", str(tmp_path / "backups"), "--token", "r-secret"])
        assert denied.exit_code == ExitCode.DENIED, denied.output
        assert not (tmp_path / "backups").exists()
        done = runner.invoke(app, ["backup", str(tmp_path / "backups"), "--token", "a-secret", "--json"])
        assert done.exit_code == 0, done.output
        info = json.loads(done.output)
        assert info["modules"] == {"echo": 2} and info["bytes_copied"] > 0
        table = runner.invoke(app, ["backup", str(tmp_path / "backups"), "--token", "a-secret", "--keep", "1"])
        assert table.exit_code == 0 and "echo" in table.output and "files reused" in table.output, table.output
        assert "removed 1 older backup(s)" in table.output and describe_backups(tmp_path / "backups") != [info["id"]]
        assert len(describe_backups(tmp_path / "backups")) == 1
        bad_keep = runner.invoke(app, ["backup", str(tmp_path / "backups"), "--token", "a-secret", "--keep", "0"])
        assert bad_keep.exit_code != 0, bad_keep.output
        client = hw.connect(url, token="a-secret")
        with pytest.raises(hw.SchemaError, match="absolute"):
            client.request("POST", "/api/backup", content=b'{"destination": "relative/path"}',
                           headers={"Content-Type": "application/json"})
        (tmp_path / "a-file").write_text("x")
        with pytest.raises(hw.BackupError, match="cannot write a backup"):
            client.backup(tmp_path / "a-file")
        client.close()
    latest = (tmp_path / "backups" / "latest").read_text().strip()
    pruned = runner.invoke(app, ["prune-backups", str(tmp_path / "backups"), "--keep", "1"])
    assert pruned.exit_code == 0 and "kept 1 backup(s)" in pruned.output and "removed 0" in pruned.output, pruned.output
    restored = runner.invoke(app, ["restore", str(tmp_path / "backups"), "--data", str(tmp_path / "restored")])
    assert restored.exit_code == 0 and f"restored backup {latest}" in restored.output, restored.output
    again = runner.invoke(app, ["restore", str(tmp_path / "backups"), "--data", str(tmp_path / "restored")])
    assert again.exit_code != 0 and "not an empty directory" in again.output, again.output
    missing = runner.invoke(app, ["restore", str(tmp_path / "nowhere"), "--data", str(tmp_path / "other")])
    assert missing.exit_code != 0 and "no backup at" in missing.output, missing.output
    with hw.InProcessCluster(tmp_path / "restored") as cluster:
        cluster.deploy(echo)
        assert depot_numbers(cluster) == set(range(300))


def test_a_served_cluster_with_worker_fronts_backs_up_from_the_shell(tmp_path):
    """`headwater serve --workers 2`: the backup request reaches a worker's front, which has the
    supervisor take it; `headwater restore` then gives a data directory the server starts over."""
    import httpx

    from tests.server.test_serve import free_port, start, stop

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start(tmp_path / "data", port, "--tasks", "2", "--workers", "2")
    try:
        for key in range(20):
            assert httpx.post(f"{url}/api/modules/jobs/depots/jobs/append", json={"key": key}).status_code == 200
        done = subprocess.run([sys.executable, "-m", "headwater.cli", "backup", str(tmp_path / "backups"), "--url", url,
                               "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(done.stdout)["modules"] == {"jobs": 2}
    finally:
        stop(process)
    restored = subprocess.run([sys.executable, "-m", "headwater.cli", "restore", str(tmp_path / "backups"), "--data",
                               str(tmp_path / "restored")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert restored.returncode == 0 and "jobs (2 tasks)" in restored.stdout, restored.stdout + restored.stderr
    process = start(tmp_path / "restored", port, "--workers", "2")
    try:
        read = lambda key: httpx.get(f"{url}/api/modules/jobs/pstates/done/get", params={"path": f"[{key}]"}).json()  # noqa: E731
        assert all(read(key)["value"] == 1 for key in range(20))
    finally:
        stop(process)


def test_backup_ids_sort_by_time_even_when_the_clock_went_back():
    from headwater.cluster.backups import new_backup_id

    ids = [new_backup_id() for _ in range(3)]
    assert len(set(ids)) == 3
    future = "29990101T000000.999999Z-abcdef"  # the newest backup there was taken "later" than now
    following = new_backup_id(future)
    assert following > future and following.startswith("29990101T000001.000000Z-")
    assert new_backup_id("29990101T000000Z-abcdef") > "29990101T000000Z-abcdef"  # an id to the second
