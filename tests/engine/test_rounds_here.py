"""Rounds run on a full-ack appender's thread (flat combining) keep every guarantee of the task thread's."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest

import headwater as hw
from headwater.errors import Unavailable
from tests.engine.test_streams import Job, fanout_module

# Rounds run on a waiting appender's thread: a mechanism of tasks that share the appender's process.
pytestmark = pytest.mark.in_process_only("flat combining needs the task in the appender's process")


@dataclass
class Note:
    writer: int
    seq: int
    sleep_s: float = 0.0


def notes_module(threads_seen: list[str] | None = None) -> hw.Module:
    m = hw.Module("notes")
    notes = m.depot("notes", Note, partition_by="writer")
    order = m.pstate("order", hw.Map(int, hw.List(int, subindexed=True)))

    @m.stream(notes)
    def keep(ctx: hw.Context, note: Note) -> int:
        if threads_seen is not None:
            threads_seen.append(threading.current_thread().name)
        if note.sleep_s:
            time.sleep(note.sleep_s)
        ctx.pstate(order)[note.writer].append(note.seq)
        return ctx.offset

    return m


def run_threads(count: int, target) -> list[BaseException]:
    errors: list[BaseException] = []

    def guarded(n: int) -> None:
        try:
            target(n)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    threads = [threading.Thread(target=guarded, args=(n,), name=f"appender-{n}") for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_a_full_ack_append_off_the_main_thread_runs_the_round_on_its_thread(cluster):
    seen: list[str] = []
    cluster.deploy(notes_module(seen), tasks=1)
    notes = cluster.depot("notes", "notes")
    notes.append(Note(0, 0))  # from the main thread: the task thread runs it (Ctrl-C must not cut a round)
    assert seen == ["headwater-notes-task-0"]
    assert not run_threads(1, lambda n: notes.append(Note(0, 1)))
    assert seen[-1] == "appender-0"
    notes.append(Note(0, 2), ack=hw.Ack.APPEND)  # not a full ack: the task thread processes it
    cluster.depot("notes", "notes").append(Note(0, 3))
    assert cluster.pstate("notes", "order")[0].get() == [0, 1, 2, 3]


def test_each_writer_s_appends_are_processed_in_its_order_whoever_runs_the_rounds(cluster):
    cluster.deploy(notes_module(), tasks=2)
    notes = cluster.depot("notes", "notes")
    per_writer = 150

    def write(n: int) -> None:
        for seq in range(per_writer):
            # Unacknowledged appends queue up; the full-ack ones may run rounds on this thread.
            ack = hw.Ack.NONE if seq % 3 else hw.Ack.FULL
            notes.append(Note(n, seq), ack=ack)
        notes.append(Note(n, per_writer))  # a full ack: everything before it on its partition is processed

    assert not run_threads(8, write)
    order = cluster.pstate("notes", "order")
    for writer in range(8):
        assert order[writer].get() == list(range(per_writer + 1)), f"writer {writer}"


def test_trees_across_tasks_complete_when_appenders_run_the_rounds(cluster):
    cluster.deploy(fanout_module(), tasks=4)
    jobs = cluster.depot("fan", "jobs")
    results: dict[int, str] = {}

    def fan(n: int) -> None:
        for i in range(25):
            key = n * 100 + i
            results[key] = jobs.append(Job(key, n=4))["route"]

    assert not run_threads(6, fan)
    assert results == {key: f"finished {key}" for key in results} and len(results) == 150
    log = cluster.pstate("fan", "log")
    for target in range(4):
        assert sorted(log[target].get()) == sorted(results)


def test_an_engine_error_in_a_round_on_an_appender_s_thread_stops_the_task_loudly(cluster, monkeypatch):
    cluster.deploy(notes_module(), tasks=1)
    notes = cluster.depot("notes", "notes")
    host = cluster._deployments["notes"].hosts[0]
    streams = host.task._streams
    original = streams.pump

    def broken_pump():
        if threading.current_thread().name.startswith("appender"):
            raise RuntimeError("engine bug")
        return original()

    monkeypatch.setattr(streams, "pump", broken_pump)
    started = time.monotonic()
    errors = run_threads(1, lambda n: notes.append(Note(0, 0), timeout=30))
    # Its reply never comes (the round failed before processing it): it hears so within a second.
    assert [type(e) for e in errors] == [Unavailable] and time.monotonic() - started < 5
    assert "stopped on an internal error" in str(errors[0])
    assert isinstance(host.failure, RuntimeError)
    with pytest.raises(Unavailable, match="stopped on an internal error"):
        notes.append(Note(0, 1))
    deadline = time.monotonic() + 5
    while host.alive and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not host.alive  # the task thread noticed and stopped too


def test_closing_while_appenders_run_rounds_neither_hangs_nor_loses_acknowledged_appends(tmp_path):
    acknowledged: list[tuple[int, int]] = []
    cluster = hw.InProcessCluster(tmp_path / "data")
    cluster.deploy(notes_module(), tasks=2)
    notes = cluster.depot("notes", "notes")
    stop = threading.Event()

    def write(n: int) -> None:
        seq = 0
        while not stop.is_set():
            try:
                notes.append(Note(n, seq))
            except Unavailable:
                return
            acknowledged.append((n, seq))
            seq += 1

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    while len(acknowledged) < 200:
        threading.Event().wait(0.01)
    cluster.close()
    stop.set()
    for t in threads:
        t.join(10)
        assert not t.is_alive()
    with hw.InProcessCluster(tmp_path / "data") as reopened:
        reopened.deploy(notes_module())
        order = reopened.pstate("notes", "order")
        for n in range(4):
            kept = order[n].get() or []
            assert kept == list(range(len(kept)))
            assert {seq for writer, seq in acknowledged if writer == n} <= set(kept)


def test_after_slow_rounds_a_short_timeout_is_kept_by_leaving_the_round_to_the_task_thread(cluster):
    seen: list[str] = []
    cluster.deploy(notes_module(seen), tasks=1)
    notes = cluster.depot("notes", "notes")
    assert not run_threads(1, lambda n: notes.append(Note(0, 0, sleep_s=0.4)))  # run here: nothing was slow yet
    assert seen == ["appender-0"]
    took: list[float] = []

    def impatient(n: int) -> None:
        started = time.monotonic()
        try:
            notes.append(Note(0, 1, sleep_s=0.4), timeout=0.1)
        finally:
            took.append(time.monotonic() - started)

    errors = run_threads(1, impatient)
    assert [type(e) for e in errors] == [hw.AckTimeout] and took[0] < 0.35  # not held for the 0.4 s handler
    assert seen[-1] == "headwater-notes-task-0"
    assert notes.append(Note(0, 2)) is not None
    assert cluster.pstate("notes", "order")[0].get() == [0, 1, 2]
