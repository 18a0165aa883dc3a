"""`async def` handlers and steps: awaits that do not block their task, order, atomicity, bounds,
retries and dead letters, and a SIGKILL while invocations await."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import headwater as hw
from tests.engine.children import lines_within, wait_until_settled

ROOT = Path(__file__).resolve().parents[2]
CHILD_SILENCE_MAX_S = 60


@dataclass
class Job:
    key: int
    n: int = 0
    fail: bool = False
    wait_s: float = 0.0


def test_an_await_does_not_block_other_records_or_other_topologies(cluster):
    m = hw.Module("calls")
    slow = m.depot("slow", Job, partition_by="key")
    quick = m.depot("quick", Job, partition_by="key")
    answers = m.pstate("answers", hw.Map(int, int))

    @m.stream(slow, max_awaiting=64)
    async def call_api(ctx: hw.Context, job: Job) -> int:
        await asyncio.sleep(job.wait_s)  # an external call
        ctx.pstate(answers)[job.key].set(job.n)
        return job.n

    @m.stream(quick)
    def count(ctx: hw.Context, job: Job) -> int:
        return job.n * 2

    cluster.deploy(m, tasks=2)
    started = time.monotonic()
    cluster.depot("calls", "slow").append_many([Job(k, n=k, wait_s=0.2) for k in range(50)], ack=hw.Ack.APPEND)
    cluster.depot("calls", "slow").append_many([Job(k, n=k, wait_s=6.0) for k in range(100, 104)], ack=hw.Ack.APPEND)
    # While those await, both tasks go on with the sync topology's records.
    for k in range(10):
        assert cluster.depot("calls", "quick").append(Job(k, n=k))["count"] == 2 * k
    assert time.monotonic() - started < 4.0, "the sync topology waited for the awaits"
    assert cluster.depot("calls", "slow").append(Job(77, n=5, wait_s=0.2))["call_api"] == 5
    view = cluster.pstate("calls", "answers")
    deadline = time.monotonic() + 10
    while any(view[k].get() != k for k in range(50)) and time.monotonic() < deadline:
        time.sleep(0.02)
    # One after the other, the 50 awaits of 0.2 s would take 10 s.
    assert time.monotonic() - started < 5.0
    assert [view[k].get() for k in range(50)] == list(range(50))


def test_records_start_in_depot_order_and_each_invocation_commits_all_or_nothing(cluster):
    m = hw.Module("ordered")
    jobs = m.depot("jobs", Job, partition_by="key")
    # Keyed by key * 1000 + n, so that no two invocations write one stored value (see "Async
    # handlers" in docs/integrations.md: concurrent invocations that write one key, last commit wins).
    starts = m.pstate("starts", hw.Map(int, int))  # the unique id each took at its start
    ends = m.pstate("ends", hw.Map(int, int))  # ... and after its await
    before = m.pstate("before", hw.Map(int, int))
    after = m.pstate("after", hw.Map(int, int))

    @m.stream(jobs)
    async def work(ctx: hw.Context, job: Job) -> int:
        slot = job.key * 1000 + job.n
        ctx.pstate(starts)[slot].set(ctx.unique_id())
        ctx.pstate(before)[slot].set(ctx.offset)
        await asyncio.sleep(job.wait_s)
        ctx.pstate(after)[slot].set(ctx.offset)
        ctx.pstate(ends)[slot].set(ctx.unique_id())
        if job.fail:
            raise ValueError(f"job {job.n} fails after its await")
        return job.n

    cluster.deploy(m, tasks=1)
    depot = cluster.depot("ordered", "jobs")
    # Later records await less: they finish first.
    depot.append_many([Job(k, n=i, fail=i % 5 == 3, wait_s=(20 - i) * 0.01) for k in (1, 2) for i in range(20)],
                      ack=hw.Ack.APPEND)
    assert depot.append(Job(1, n=99))["work"] == 99
    wait_until_settled(cluster, "ordered")
    for key in (1, 2):
        slots = [key * 1000 + i for i in range(20)]
        ok = [i % 5 != 3 for i in range(20)]
        for name in ("before", "after", "starts", "ends"):
            view = cluster.pstate("ordered", name)
            assert [view[slot].get() is not None for slot in slots] == ok, f"{name}: a failed invocation wrote"
        good = [slot for slot, fine in zip(slots, ok, strict=True) if fine]
        started = [cluster.pstate("ordered", "starts")[slot].get() for slot in good]
        assert started == sorted(started), "records of a partition started out of depot order"
        ended = [cluster.pstate("ordered", "ends")[slot].get() for slot in good]
        assert ended != sorted(ended), "the shorter awaits should have finished first"
    dead = cluster.dead_letters("ordered", "work")
    assert sorted(d.event.n for d in dead) == [3, 3, 8, 8, 13, 13, 18, 18]
    assert {d.error_type for d in dead} == {"ValueError"}


def test_max_awaiting_bounds_the_invocations_awaiting_at_once(cluster):
    m = hw.Module("bounded")
    jobs = m.depot("jobs", Job, partition_by="key")
    peaks = m.pstate("peaks", hw.Map(int, int))
    m.resource("gauge", lambda task_id: {"now": 0, "peak": 0})

    @m.stream(jobs, max_awaiting=3)
    async def work(ctx: hw.Context, job: Job) -> None:
        gauge = ctx.resource("gauge")
        gauge["now"] += 1
        gauge["peak"] = max(gauge["peak"], gauge["now"])
        try:
            await asyncio.sleep(0.03)
        finally:
            gauge["now"] -= 1
        ctx.pstate(peaks)[job.key].set(gauge["peak"])

    cluster.deploy(m, tasks=2)
    cluster.depot("bounded", "jobs").append_many([Job(k) for k in range(40)], ack=hw.Ack.APPEND)
    wait_until_settled(cluster, "bounded")
    view = cluster.pstate("bounded", "peaks")
    assert max(view[k].get() for k in range(40)) == 3


def test_hops_to_an_async_step_start_in_arrival_order_within_max_awaiting(cluster):
    m = hw.Module("landing")
    jobs = m.depot("jobs", Job, partition_by="key")
    starts = m.pstate("starts", hw.Map(int, int))
    peaks = m.pstate("peaks", hw.Map(int, int))
    m.resource("gauge", lambda task_id: {"now": 0, "peak": 0})

    @m.stream(jobs, max_awaiting=2)
    def spray(ctx: hw.Context, job: Job) -> str:
        for i in range(job.n):
            ctx.hop_task(0, land, i)
        return "sent"

    @m.step
    async def land(ctx: hw.Context, i: int) -> None:
        gauge = ctx.resource("gauge")
        gauge["now"] += 1
        gauge["peak"] = max(gauge["peak"], gauge["now"])
        ctx.pstate(starts)[i].set(ctx.unique_id())
        try:
            await asyncio.sleep(0.01 * (i % 3))
        finally:
            gauge["now"] -= 1
        ctx.pstate(peaks)[i].set(gauge["peak"])

    cluster.deploy(m, tasks=1)
    assert cluster.depot("landing", "jobs").append(Job(1, n=30))["spray"] == "sent"  # after all 30 hops
    started = [cluster.pstate("landing", "starts")[i].get() for i in range(30)]
    assert None not in started and started == sorted(started), "hops started out of arrival order"
    assert max(cluster.pstate("landing", "peaks")[i].get() for i in range(30)) == 2


@pytest.mark.in_process_only("its step waits for an event of the test's, which a worker process gets a copy of")
def test_hops_held_for_a_slot_count_as_the_receivers_inbox_so_fan_out_stops(cluster):
    import threading

    from headwater.cluster.transport import INBOX_BYTES_MAX
    from headwater.engine.streams import ROUND_SEND_BYTES_MAX

    m = hw.Module("heldbytes")
    jobs = m.depot("jobs", Job, partitioned=False)  # every record on task 0
    gate = threading.Event()
    received = m.pstate("received", hw.List(int))  # one per task
    payload_bytes = 256 * 1024

    @m.stream(jobs, max_awaiting=1)
    def spray(ctx: hw.Context, job: Job) -> None:
        ctx.hop_task(1, land, job.key, bytes(payload_bytes))

    @m.step
    async def land(ctx: hw.Context, key: int, payload: bytes) -> None:
        deadline = time.monotonic() + 10
        while not gate.is_set() and time.monotonic() < deadline:  # one awaits; task 1 holds the others
            await asyncio.sleep(0.005)
        ctx.pstate(received).append(key)

    cluster.deploy(m, tasks=2)
    records = 2 * (INBOX_BYTES_MAX + ROUND_SEND_BYTES_MAX) // payload_bytes
    cluster.depot("heldbytes", "jobs").append_many([Job(k) for k in range(records)], ack="append")
    inbox = cluster._deployments["heldbytes"].transport._inboxes[1]
    most, deadline = 0, time.monotonic() + 1.0
    while time.monotonic() < deadline:  # task 0 sends until task 1's inbox and held hops are full, then waits
        most = max(most, inbox.queued_bytes)
        time.sleep(0.005)
    gate.set()
    # One round's sends more than for queued hops: while task 1's round takes its messages and
    # has not yet said how much it holds, task 0 may see room for one more round.
    assert INBOX_BYTES_MAX < most <= INBOX_BYTES_MAX + 2 * ROUND_SEND_BYTES_MAX + 2 * payload_bytes
    view = cluster.pstate("heldbytes", "received", task=1)
    deadline = time.monotonic() + 60
    while view.size() < records:  # then everything flows
        assert time.monotonic() < deadline, "fan-out never resumed"
        time.sleep(0.01)
    assert inbox.queued_bytes == 0


def versioned_module(version: int) -> hw.Module:
    m = hw.Module("versions")
    jobs = m.depot("jobs", Job, partition_by="key")
    handled = m.pstate("handled", hw.Map(int, int))

    @m.stream(jobs)
    async def work(ctx: hw.Context, job: Job) -> int:
        await asyncio.sleep(job.wait_s)
        ctx.pstate(handled)[job.key].set(version)
        return version

    return m


def test_an_update_while_invocations_await_runs_them_again_under_the_new_code(cluster):
    cluster.deploy(versioned_module(1), tasks=2)
    depot = cluster.depot("versions", "jobs")
    assert depot.append(Job(0))["work"] == 1
    depot.append_many([Job(k, wait_s=1.0) for k in range(1, 21)], ack=hw.Ack.APPEND)
    time.sleep(0.2)  # they are awaiting
    started = time.monotonic()
    cluster.update(versioned_module(2))
    assert time.monotonic() - started < 5.0, "stopping waited for the awaits"
    assert depot.append(Job(30))["work"] == 2
    wait_until_settled(cluster, "versions")
    handled = cluster.pstate("versions", "handled")
    assert [handled[k].get() for k in range(21)] == [1] + [2] * 20  # cancelled by the stop: run again


@pytest.mark.in_process_only("it counts attempts in an object of the test's")
def test_a_close_during_a_retry_back_off_returns_at_once_and_leaves_no_coroutine_behind(tmp_path, recwarn):
    import gc

    m = hw.Module("backoff")
    jobs = m.depot("jobs", Job, partition_by="key")
    attempts: list[int] = []

    @m.stream(jobs, retry=hw.Retry(times=1, backoff=4.0))
    async def work(ctx: hw.Context, job: Job) -> None:
        attempts.append(job.key)
        await asyncio.sleep(0)
        raise ConnectionError("down")

    cluster = hw.InProcessCluster(tmp_path / "data")
    cluster.deploy(m, tasks=1)
    cluster.depot("backoff", "jobs").append(Job(1), ack=hw.Ack.APPEND)
    deadline = time.monotonic() + 10
    while not attempts and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    cluster.close()  # the second attempt waits 4 s to begin: nothing of it exists yet
    assert time.monotonic() - started < 3.0 and attempts == [1]
    gc.collect()
    assert not [w for w in recwarn if "never awaited" in str(w.message)]


def flaky_module(*, awaiting: bool) -> hw.Module:
    """The same topology as a sync handler or as an async one: appenders must not see a difference."""
    m = hw.Module("flaky")
    jobs = m.depot("jobs", Job, partition_by="key")
    totals = m.pstate("totals", hw.Map(int, int))
    m.resource("tries", lambda task_id: {})

    def attempt(ctx: hw.Context, job: Job) -> int:
        tries = ctx.resource("tries")
        tries[ctx.offset] = tries.get(ctx.offset, 0) + 1
        ctx.pstate(totals)[job.key].increment(job.n)
        if tries[ctx.offset] <= job.n:  # fails its first n attempts
            raise ConnectionError(f"attempt {tries[ctx.offset]} of job {job.key}")
        ctx.hop(job.key + 1, confirm, job.key + 1, job.n)
        return ctx.pstate(totals)[job.key].get()

    if awaiting:
        @m.stream(jobs, retry=hw.Retry(times=2, backoff=0.01), name="work")
        async def work_async(ctx: hw.Context, job: Job) -> int:
            await asyncio.sleep(0.001)
            return attempt(ctx, job)

        @m.step
        async def confirm(ctx: hw.Context, key: int, n: int) -> None:
            await asyncio.sleep(0.001)
            ctx.pstate(totals)[key].increment(1000)
            ctx.ack_return(f"confirmed {n}")
    else:
        @m.stream(jobs, retry=hw.Retry(times=2, backoff=0.01), name="work")
        def work_sync(ctx: hw.Context, job: Job) -> int:
            return attempt(ctx, job)

        @m.step
        def confirm(ctx: hw.Context, key: int, n: int) -> None:
            ctx.pstate(totals)[key].increment(1000)
            ctx.ack_return(f"confirmed {n}")

    return m


@pytest.mark.parametrize("awaiting", [False, True], ids=["sync", "async"])
def test_a_failing_await_follows_retry_then_dead_letters_and_full_acks_match_sync(cluster, awaiting):
    cluster.deploy(flaky_module(awaiting=awaiting), tasks=2)
    jobs = cluster.depot("flaky", "jobs")
    assert jobs.append(Job(10, n=0)).results == {"work": "confirmed 0"}
    assert jobs.append(Job(20, n=2)).results == {"work": "confirmed 2"}  # two failures absorbed by retry
    with pytest.raises(hw.HandlerError) as raised:
        jobs.append(Job(30, n=3))
    assert raised.value.error_type == "ConnectionError" and "attempt 3 of job 30" in raised.value.remote_traceback
    totals = cluster.pstate("flaky", "totals")
    assert [totals[k].get() for k in (10, 11, 20, 21, 30, 31)] == [0, 1000, 2, 1000, None, None]
    [dead] = cluster.dead_letters("flaky", "work")
    assert (dead.kind, dead.event, dead.attempts) == ("record", Job(30, n=3), 3)
    assert dead.retry() == "confirmed 3"  # its fourth attempt
    assert totals[30].get() == 3


def test_an_await_past_its_timeout_fails_like_a_raising_handler(cluster):
    m = hw.Module("hangs")
    jobs = m.depot("jobs", Job, partition_by="key")

    @m.stream(jobs, await_timeout_s=0.2, max_awaiting=1)
    async def call(ctx: hw.Context, job: Job) -> int:
        await asyncio.sleep(job.wait_s)
        return job.n

    cluster.deploy(m, tasks=1)
    jobs_ = cluster.depot("hangs", "jobs")
    with pytest.raises(hw.HandlerError) as raised:
        jobs_.append(Job(1, n=1, wait_s=30))
    assert raised.value.error_type == "TimeoutError" and "await_timeout_s" in raised.value.remote_traceback
    assert jobs_.append(Job(1, n=2))["call"] == 2  # its slot was given back


def test_a_handler_that_cancels_itself_is_dead_lettered_and_frees_its_slot(cluster):
    m = hw.Module("selfcancel")
    jobs = m.depot("jobs", Job, partition_by="key")

    @m.stream(jobs, max_awaiting=1)
    async def call(ctx: hw.Context, job: Job) -> int:
        if job.fail:
            raise asyncio.CancelledError()  # as a library may, when its own timeout fires
        await asyncio.sleep(0)
        return job.n

    cluster.deploy(m, tasks=1)
    depot = cluster.depot("selfcancel", "jobs")
    with pytest.raises(hw.HandlerError) as raised:
        depot.append(Job(1, fail=True))
    assert raised.value.error_type.endswith("CancelledError")
    assert depot.append(Job(1, n=7))["call"] == 7


def test_async_microbatch_handlers_and_bad_bounds_are_definition_errors():
    m = hw.Module("defs")
    jobs = m.depot("jobs", Job)
    with pytest.raises(hw.DefinitionError, match="microbatch"):
        @m.microbatch(jobs)
        async def batch(ctx: hw.Context, job: Job) -> None:
            await asyncio.sleep(0)
    for bad in (0, -1, 10**6, 2.5):
        with pytest.raises(hw.DefinitionError, match="max_awaiting"):
            m.stream(jobs, max_awaiting=bad)
    with pytest.raises(hw.DefinitionError, match="await_timeout_s"):
        m.stream(jobs, await_timeout_s=0)


def _run_and_kill(path: Path, run: int, acks_before_kill: int) -> dict[int, int | None]:
    acked: dict[int, int | None] = {}
    with tempfile.TemporaryFile("w+") as errors, subprocess.Popen(
        [sys.executable, "-m", "tests.engine.async_crash_app", str(path), str(run)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=errors, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    ) as child:
        assert child.stdout is not None
        try:
            for line in lines_within(child.stdout, CHILD_SILENCE_MAX_S):
                if line.startswith("ACK "):
                    _, event_id, result = line.split()
                    acked[int(event_id)] = None if result == "None" else int(result)
                    if len(acked) >= acks_before_kill:
                        break
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(10)
        errors.seek(0)
        assert len(acked) >= acks_before_kill, (
            f"the child stopped acking before it was killed:\n{errors.read()[-3000:]}")
    return acked


def test_sigkill_while_invocations_await_loses_no_ack_and_processes_every_record(tmp_path):
    from tests.engine.async_crash_app import Event, module

    acked: dict[int, int | None] = {}
    for run in range(2):  # crash twice on the same data: recovery itself must survive a crash
        acked |= _run_and_kill(tmp_path, run, acks_before_kill=600)
    assert all(result in (event_id, None) for event_id, result in acked.items()), "a full ack carried a wrong result"
    assert any(result is None for result in acked.values()) and any(acked.values()), "both kinds of append acked"
    with hw.InProcessCluster(tmp_path) as cluster:
        cluster.deploy(module())
        depot = cluster.depot("awaity", "events")
        stored = {record.event.id: record.event.key
                  for partition in range(depot.partitions) for record in depot.read(partition, 0, limit=1_000_000)}
        assert set(acked) <= set(stored), "an acked append is missing after the crash"
        wait_until_settled(cluster, "awaity")
        seen, echo = cluster.pstate("awaity", "seen"), cluster.pstate("awaity", "echo")
        for event_id, key in stored.items():  # at least once: a record awaiting at the crash ran again
            assert (seen[key][event_id].get() or 0) >= 1, f"event {event_id} was never processed"
            assert (echo[event_id].get() or 0) >= 1, f"the hop of event {event_id} never ran"
        # A keyed repeat of any stored keyed event, acked or not, appends nothing and gets its result.
        keyed = [event_id for event_id in stored if (event_id // 1_000_000) % 10 % 2 == 0]
        for event_id in keyed[:50] + keyed[-50:]:
            result = depot.append(Event(event_id, stored[event_id]), idempotency_key=f"e-{event_id}")
            assert result.results == {"handle": event_id}
        assert sum(depot.partition_info(p).end_offset for p in range(depot.partitions)) == len(stored)


def test_on_ray_awaits_run_in_the_worker_actor_hosting_the_task(tmp_path):
    """RayCluster: an async handler and an async step await in the actor's process, concurrently."""
    pytest.importorskip("ray", reason="Ray is not installed: run `make install` (the ray extra)")
    from tests.clusters import open_cluster

    m = hw.Module("rayawaits")
    jobs = m.depot("jobs", Job, partition_by="key")
    pids = m.pstate("pids", hw.Map(int, int))

    @m.stream(jobs)
    async def work(ctx: hw.Context, job: Job) -> int:
        await asyncio.sleep(0.5)
        ctx.hop(job.key, note, job.key)
        return job.key

    @m.step
    async def note(ctx: hw.Context, key: int) -> None:
        await asyncio.sleep(0.01)
        ctx.pstate(pids)[key].set(os.getpid())
        ctx.ack_return(key * 2)

    with open_cluster("ray", tmp_path / "data") as cluster:
        cluster.deploy(m, tasks=1)
        started = time.monotonic()
        cluster.depot("rayawaits", "jobs").append_many([Job(k) for k in range(20)], ack=hw.Ack.APPEND)
        assert cluster.depot("rayawaits", "jobs").append(Job(20))["work"] == 40
        wait_until_settled(cluster, "rayawaits")
        assert time.monotonic() - started < 6.0  # 21 awaits of 0.5 s one after the other take 10.5 s
        actor_pid = cluster.status()["rayawaits"][0]["pid"]
        assert actor_pid != os.getpid()
        assert {cluster.pstate("rayawaits", "pids")[k].get() for k in range(21)} == {actor_pid}


def test_a_local_cluster_worker_killed_while_awaiting_comes_back_and_loses_nothing(tmp_path):
    """SIGKILL a LocalCluster worker while its tasks' invocations await: keyed appends retried
    through the restart all get their results, and every stored record is processed at least once."""
    from tests.cluster.test_local_cluster import RECOVERY_S_MAX, Appenders, kill_worker
    from tests.clusters import open_cluster
    from tests.engine.async_crash_app import Event, module

    with open_cluster("local", tmp_path) as cluster:
        cluster.deploy(module(), tasks=3)
        depot = cluster.depot("awaity", "events")
        appenders = Appenders(depot, lambda event_id: Event(event_id, event_id % 7), 6, "e-",
                              time.monotonic() + RECOVERY_S_MAX)
        appenders.wait_for(200)
        kill_worker(cluster, 1)
        before = len(appenders.acked)
        appenders.wait_for(before + 200)
        appenders.stop()
        acked = appenders.acked
        assert len(acked) >= before + 200, "the cluster did not serve again after the worker died"
        assert all(result == event_id for event_id, result in acked.items())
        stored = {record.event.id: record.event.key
                  for partition in range(depot.partitions) for record in depot.read(partition, 0, limit=1_000_000)}
        assert len(stored) == sum(depot.partition_info(p).end_offset for p in range(depot.partitions)), (
            "an event was appended twice")
        assert set(acked) <= set(stored), "an acked append is missing after the worker died"
        wait_until_settled(cluster, "awaity")
        seen, echo = cluster.pstate("awaity", "seen"), cluster.pstate("awaity", "echo")
        for event_id, key in stored.items():
            assert (seen[key][event_id].get() or 0) >= 1, f"event {event_id} was never processed"
            assert (echo[event_id].get() or 0) >= 1, f"the hop of event {event_id} never ran"


def test_an_async_handler_backs_off_longer_than_a_plain_one_may_while_its_task_goes_on(cluster):
    """A back-off above the 5 s a plain handler may wait: the task processes other records
    meanwhile, and the record that failed succeeds on its retry after the back-off."""
    m = hw.Module("patient")
    jobs = m.depot("jobs", Job, partition_by="key")
    done = m.pstate("done", hw.Map(int, int))
    m.resource("tries", lambda task_id: {})

    @m.stream(jobs, retry=hw.Retry(times=1, backoff=5.5, backoff_max_s=10))
    async def call(ctx: hw.Context, job: Job) -> int:
        tries = ctx.resource("tries")
        tries[job.key] = tries.get(job.key, 0) + 1
        if tries[job.key] <= job.n:
            raise ConnectionError(f"the service is down (attempt {tries[job.key]})")
        ctx.pstate(done)[job.key].set(tries[job.key])
        return tries[job.key]

    cluster.deploy(m, tasks=1)
    depot = cluster.depot("patient", "jobs")
    started = time.monotonic()
    failing = depot.append(Job(1, n=1), ack="append")
    assert depot.append(Job(2, n=0))["call"] == 1  # while the first backs off
    assert time.monotonic() - started < 5.5
    view = cluster.pstate("patient", "done")
    deadline = time.monotonic() + 30
    while view[1].get() is None:
        assert time.monotonic() < deadline, "the record that failed was never retried"
        time.sleep(0.05)
    assert view[1].get() == 2 and time.monotonic() - started >= 5.5 and failing is not None
    assert cluster.dead_letters("patient", "call") == []
