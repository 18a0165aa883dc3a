"""Stream topologies: hops, acks, errors and dead letters, atomicity, recovery, backpressure."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest

import headwater as hw


@dataclass
class Job:
    key: int
    n: int = 0
    fail: bool = False


def fanout_module() -> hw.Module:
    m = hw.Module("fan")
    jobs = m.depot("jobs", Job, partition_by="key")
    log = m.pstate("log", hw.Map(int, hw.List(int, subindexed=True)))
    done = m.pstate("done", hw.Map(int, bool))

    @m.stream(jobs)
    def route(ctx: hw.Context, job: Job) -> str:
        for target in range(job.n):
            ctx.hop(target, record, target, job.key)
        return "root"

    @m.step
    def record(ctx: hw.Context, target: int, source: int) -> None:
        ctx.pstate(log)[target].append(source)
        if target == 2:
            ctx.hop(source, finish, source)

    @m.step
    def finish(ctx: hw.Context, source: int) -> None:
        ctx.pstate(done)[source].set(True)
        ctx.ack_return(f"finished {source}")

    return m


def test_full_ack_waits_for_the_whole_tree_and_takes_ack_return(cluster):
    cluster.deploy(fanout_module(), tasks=4)
    jobs = cluster.depot("fan", "jobs")
    assert jobs.append(Job(1, n=1))["route"] == "root"  # no ack_return: the root's value
    result = jobs.append(Job(7, n=5))
    assert result["route"] == "finished 7"  # set two hops down the tree
    assert cluster.pstate("fan", "done")[7].get() is True
    for target in range(5):
        assert 7 in cluster.pstate("fan", "log")[target].get()


def test_hops_between_two_tasks_arrive_in_send_order(cluster):
    m = hw.Module("order")
    jobs = m.depot("jobs", Job, partition_by="key")
    seen = m.pstate("seen", hw.Map(int, hw.List(int)))

    @m.stream(jobs)
    def spray(ctx: hw.Context, job: Job) -> None:
        for i in range(job.n):
            ctx.hop(job.key + 1, note, job.key + 1, i)

    @m.step
    def note(ctx: hw.Context, key: int, i: int) -> None:
        ctx.pstate(seen)[key].append(i)

    cluster.deploy(m, tasks=4)
    cluster.depot("order", "jobs").append_many([Job(k, n=100) for k in range(0, 40, 10)])
    for k in range(0, 40, 10):
        assert cluster.pstate("order", "seen")[k + 1].get() == list(range(100))


def failing_module(flaky: dict[str, int] | None = None, retry: hw.Retry = hw.Retry.NONE) -> hw.Module:
    m = hw.Module("risky")
    jobs = m.depot("jobs", Job, partition_by="key")
    a = m.pstate("a", hw.Map(int, int))
    b = m.pstate("b", hw.Map(int, hw.Set(int)))
    switch = {"broken": True}

    @m.stream(jobs, retry=retry)
    def work(ctx: hw.Context, job: Job) -> int:
        ctx.pstate(a)[job.key].increment(job.n)
        ctx.pstate(b)[job.key].add(job.n)
        if flaky is not None and flaky["left"] > 0:
            flaky["left"] -= 1
            raise ConnectionError("flaky downstream")
        if job.fail and switch["broken"]:
            raise ValueError(f"cannot handle job {job.key}")
        return ctx.pstate(a)[job.key].get()

    m.switch = switch  # type: ignore[attr-defined]
    return m


@pytest.mark.in_process_only("its handlers share an object with the test, which a worker process gets a copy of")
def test_a_raising_handler_discards_all_its_writes_and_is_dead_lettered(cluster):
    module = failing_module()
    cluster.deploy(module, tasks=2)
    jobs = cluster.depot("risky", "jobs")
    assert jobs.append(Job(1, n=5))["work"] == 5
    with pytest.raises(hw.HandlerError) as raised:
        jobs.append(Job(1, n=10, fail=True))
    error = raised.value
    assert error.error_type == "ValueError"
    assert "cannot handle job 1" in error.remote_traceback and "raise ValueError" in error.remote_traceback
    assert error.topology == "work" and error.offset == 1
    # Atomic: neither PState saw the failed invocation's writes.
    assert cluster.pstate("risky", "a")[1].get() == 5
    assert cluster.pstate("risky", "b")[1].get() == {5}
    # Later events keep flowing.
    assert jobs.append(Job(1, n=1))["work"] == 6
    dead = cluster.dead_letters("risky", "work")
    assert [(d.kind, d.offset, d.error_type) for d in dead] == [("record", 1, "ValueError")]
    assert dead[0].event == Job(1, n=10, fail=True)
    # Fix the cause, retry: it applies once and leaves the list.
    module.switch["broken"] = False
    assert dead[0].retry() == 16
    assert cluster.dead_letters("risky", "work") == []
    assert cluster.pstate("risky", "b")[1].get() == {1, 5, 10}


def test_retry_policy_absorbs_flaky_failures(cluster):
    flaky = {"left": 2}
    cluster.deploy(failing_module(flaky, hw.Retry(times=3, backoff=0.001)))
    assert cluster.depot("risky", "jobs").append(Job(4, n=2))["work"] == 2  # not 6: failed attempts left nothing
    assert cluster.dead_letters("risky", "work") == []


@pytest.mark.in_process_only("its handlers share an object with the test, which a worker process gets a copy of")
def test_failing_hop_is_dead_lettered_and_retriable(cluster):
    m = hw.Module("hops")
    jobs = m.depot("jobs", Job, partition_by="key")
    got = m.pstate("got", hw.Map(int, int))
    state = {"broken": True}

    @m.stream(jobs)
    def start(ctx: hw.Context, job: Job) -> None:
        ctx.hop(job.key + 1, land, job.key + 1, job.n)

    @m.step
    def land(ctx: hw.Context, key: int, n: int) -> None:
        ctx.pstate(got)[key].set(n)
        if state["broken"]:
            raise RuntimeError("hop failed")
        ctx.ack_return(n * 2)

    cluster.deploy(m, tasks=3)
    with pytest.raises(hw.HandlerError, match="hop failed"):
        cluster.depot("hops", "jobs").append(Job(5, n=21))
    assert cluster.pstate("hops", "got")[6].get() is None
    [dead] = cluster.dead_letters("hops", "start")
    assert (dead.kind, dead.step) == ("hop", "land")
    state["broken"] = False
    assert dead.retry() == 42
    assert cluster.pstate("hops", "got")[6].get() == 21


def test_wrong_partition_is_an_error_naming_the_fix(cluster):
    m = hw.Module("wp")
    jobs = m.depot("jobs", Job, partition_by="key")
    values = m.pstate("values", hw.Map(int, int))

    @m.stream(jobs)
    def write_other(ctx: hw.Context, job: Job) -> None:
        ctx.pstate(values)[job.n].set(1)

    cluster.deploy(m, tasks=4)
    other = next(k for k in range(100) if hw_task(k, 4) != hw_task(0, 4))
    with pytest.raises(hw.HandlerError, match="WrongPartitionError") as raised:
        cluster.depot("wp", "jobs").append(Job(0, n=other))
    assert "ctx.hop" in raised.value.remote_traceback


@pytest.mark.in_process_only("its handlers share an object with the test, which a worker process gets a copy of")
def test_a_handler_view_used_outside_its_invocation_fails_clearly(cluster):
    m = hw.Module("keeper")
    jobs = m.depot("jobs", Job)
    values = m.pstate("values", hw.Map(int, int))
    kept: list[Any] = []

    @m.stream(jobs)
    def keep(ctx: hw.Context, job: Job) -> int:
        kept.append(ctx.pstate(values))
        ctx.pstate("values")[job.key].set(job.n)  # by name: the same PState
        return ctx.pstate(values)[job.key].get()

    cluster.deploy(m)
    assert cluster.depot("keeper", "jobs").append(Job(1, n=10))["keep"] == 10
    with pytest.raises(hw.ReadOnlyError, match="invocation that has finished"):
        kept[0][2].set(20)  # from outside the handler: it would write nowhere
    with pytest.raises(hw.ReadOnlyError, match="invocation that has finished"):
        kept[0][1].get()
    assert cluster.pstate("keeper", "values")[1].get() == 10


def hw_task(key: Any, tasks: int) -> int:
    from headwater.schema import task_for_key

    return task_for_key(key, tasks)


def test_unique_ids_are_unique_and_durable(tmp_path):
    def module() -> hw.Module:
        m = hw.Module("ids")
        jobs = m.depot("jobs", Job)

        @m.stream(jobs)
        def make_id(ctx: hw.Context, job: Job) -> int:
            return ctx.unique_id()

        return m

    with hw.InProcessCluster(tmp_path) as c:
        c.deploy(module(), tasks=2)
        first = [r["make_id"] for r in c.depot("ids", "jobs").append_many([Job(i) for i in range(20)])]
    with hw.InProcessCluster(tmp_path) as c:
        c.deploy(module())
        second = [r["make_id"] for r in c.depot("ids", "jobs").append_many([Job(i) for i in range(20)])]
    assert len(set(first + second)) == 40
    assert all(0 < i < 2**63 for i in first + second)


def counting_module(start_from: Any = "end", extra: bool = False) -> hw.Module:
    m = hw.Module("counter")
    jobs = m.depot("jobs", Job, partition_by="key")
    counts = m.pstate("counts", hw.Map(int, int))
    backfill = m.pstate("backfill", hw.Map(int, int))

    @m.stream(jobs)
    def count(ctx: hw.Context, job: Job) -> int:
        ctx.pstate(counts)[job.key].increment()
        return ctx.pstate(counts)[job.key].get()

    if extra:
        @m.stream(jobs, start_from=start_from)
        def late(ctx: hw.Context, job: Job) -> None:
            ctx.pstate(backfill)[job.key].increment()

    return m


def test_restart_resumes_without_reprocessing(tmp_path):
    with hw.InProcessCluster(tmp_path) as c:
        c.deploy(counting_module(), tasks=3)
        c.depot("counter", "jobs").append_many([Job(k % 5) for k in range(50)])
    with hw.InProcessCluster(tmp_path) as c:
        with pytest.raises(hw.DefinitionError, match="tasks=3"):
            c.deploy(counting_module(), tasks=2)
        c.deploy(counting_module())
        counts = c.pstate("counter", "counts")
        assert [counts[k].get() for k in range(5)] == [10] * 5
        assert c.depot("counter", "jobs").append(Job(0))["count"] == 11


def test_new_topology_backfills_from_the_beginning(cluster):
    cluster.deploy(counting_module(), tasks=2)
    cluster.depot("counter", "jobs").append_many([Job(k % 3) for k in range(30)])
    cluster.update(counting_module(start_from="beginning", extra=True))
    result = cluster.depot("counter", "jobs").append(Job(0))  # full ack: the backfill got past it too
    assert result["count"] == 11
    backfill = cluster.pstate("counter", "backfill")
    assert [backfill[k].get() for k in range(3)] == [11, 10, 10]


def test_new_topology_from_the_end_skips_history(cluster):
    cluster.deploy(counting_module(), tasks=2)
    cluster.depot("counter", "jobs").append_many([Job(1) for _ in range(5)])
    cluster.update(counting_module(start_from="end", extra=True))
    cluster.depot("counter", "jobs").append(Job(1))
    assert cluster.pstate("counter", "backfill")[1].get() == 1


def _stalled_at_task_1(name: str, event_type: type, flag: str) -> hw.Module:
    """Every record lands on task 0, whose topology hops to task 1 and waits there until the file
    `flag` exists (a gate a worker process sees too): task 0 keeps answering while the records stay
    in flight. The root returns the event's `key`, if it has one."""
    m = hw.Module(name)
    events = m.depot("events", event_type, partitioned=False)

    @m.stream(events)
    def start(ctx: hw.Context, event: Any) -> Any:
        ctx.hop_task(1, wait)
        return getattr(event, "key", None)

    @m.step
    def wait(ctx: hw.Context) -> None:
        import os
        import time

        deadline = time.monotonic() + 30
        while not os.path.exists(flag) and time.monotonic() < deadline:
            time.sleep(0.005)

    return m


def test_a_full_task_refuses_appends_from_every_client_until_it_has_room(cluster, tmp_path):
    from headwater.engine.admission import APPENDS_IN_FLIGHT_MAX

    flag = tmp_path / "go"
    cluster.deploy(_stalled_at_task_1("full", Job, str(flag)), tasks=2)
    depot = cluster.depot("full", "events")
    depot.append_many([Job(k) for k in range(APPENDS_IN_FLIGHT_MAX)], ack="append")  # one message: admitted whole
    with pytest.raises(hw.AckTimeout, match=f"{APPENDS_IN_FLIGHT_MAX} appends .* in flight .* nothing was appended"):
        depot.append(Job(-1), timeout=0.3)
    assert depot.partition_info(0).end_offset == APPENDS_IN_FLIGHT_MAX
    waiting = threading.Thread(target=lambda: results.append(depot.append(Job(-2), timeout=30)))
    results: list[Any] = []
    waiting.start()  # refused, and sent again until there is room
    time.sleep(0.2)
    flag.touch()
    waiting.join(30)
    assert results[0]["start"] == -2 and results[0].offset == APPENDS_IN_FLIGHT_MAX


@pytest.mark.in_process_only("it changes the task's admission bound, a constant of this process")
def test_a_full_task_answers_busy_and_the_appender_gives_up_at_its_timeout(cluster, monkeypatch, tmp_path):
    from headwater.engine import admission

    monkeypatch.setattr(admission, "APPENDS_IN_FLIGHT_MAX", 2)
    flag = tmp_path / "go"
    cluster.deploy(_stalled_at_task_1("busy", Job, str(flag)), tasks=2)
    depot = cluster.depot("busy", "events")
    try:
        assert [r.offset for r in depot.append_many([Job(1), Job(2)], ack="append")] == [0, 1]
        started = time.monotonic()
        with pytest.raises(hw.AckTimeout, match="2 appends .* in flight and admitted none within 0.2s; nothing was"):
            depot.append(Job(3), ack="append", timeout=0.2)
        assert time.monotonic() - started < 1.0  # refused at once, sent again until the timeout, then given up
        assert depot.partition_info(0).end_offset == 2  # nothing of the refused append was written
    finally:
        flag.touch()
    assert depot.append(Job(4), timeout=10).offset == 2  # room again once the others are processed


@pytest.mark.in_process_only("it changes the task's admission bound, a constant of this process")
def test_a_refused_batch_is_sent_again_whole_and_keeps_its_order(cluster, monkeypatch, tmp_path):
    from headwater.engine import admission

    monkeypatch.setattr(admission, "APPENDS_IN_FLIGHT_MAX", 3)
    flag = tmp_path / "go"
    cluster.deploy(_stalled_at_task_1("order", Job, str(flag)), tasks=2)
    depot = cluster.depot("order", "events")
    depot.append(Job(-1), ack="append")  # one in flight: the batch of five below does not fit

    def release() -> None:
        time.sleep(0.2)
        flag.touch()

    threading.Thread(target=release).start()
    results = depot.append_many([Job(k) for k in range(5)], ack="append", timeout=10)
    assert [r.offset for r in results] == [1, 2, 3, 4, 5]
    assert [r.event.key for r in depot.read(0, 1, 6)] == [0, 1, 2, 3, 4]


@pytest.mark.in_process_only("it changes the task's admission bound and the client's, constants of this process")
def test_a_flood_of_fire_and_forget_appends_is_bounded_and_none_is_lost(cluster, monkeypatch):
    from headwater.client import replies
    from headwater.engine import admission

    monkeypatch.setattr(admission, "APPENDS_IN_FLIGHT_MAX", 16)
    monkeypatch.setattr(replies, "UNCONFIRMED_MAX", 40)
    m = hw.Module("slow")
    jobs = m.depot("jobs", Job)
    seen = m.pstate("seen", hw.List(int))

    @m.stream(jobs)
    def slow(ctx: hw.Context, job: Job) -> None:
        time.sleep(0.02)  # one record per round: the task keeps answering, slowly
        ctx.pstate(seen).append(job.key)

    cluster.deploy(m)
    depot, view = cluster.depot("slow", "jobs"), cluster.pstate("slow", "seen")
    submitted: list[int] = []

    def flood() -> None:
        for i in range(100):
            depot.append(Job(i), ack="none")
            submitted.append(i)

    flooder = threading.Thread(target=flood)
    flooder.start()
    most = 0
    deadline = time.monotonic() + 0.4
    while time.monotonic() < deadline:  # appended but not processed: the task's bound, plus its running round
        most = max(most, depot.partition_info(0).end_offset - view.size())
        time.sleep(0.002)
    assert 16 <= most <= 17
    assert len(submitted) < 100  # the flooder waits once 40 appends are unconfirmed
    flooder.join(30)
    assert len(submitted) == 100
    deadline = time.monotonic() + 30
    while view.size() < 100:
        assert time.monotonic() < deadline, "refused appends were not sent again"
        time.sleep(0.02)
    assert sorted(view.get()) == list(range(100))  # each once: refused ones were sent again, none twice


@dataclass
class Blob:
    data: bytes


def test_big_events_are_bounded_by_bytes_in_flight(cluster, tmp_path):
    from headwater.engine.admission import APPEND_BYTES_IN_FLIGHT_MAX

    flag = tmp_path / "go"
    cluster.deploy(_stalled_at_task_1("blobs", Blob, str(flag)), tasks=2)
    depot, size = cluster.depot("blobs", "events"), 256 * 1024
    admitted = 0
    try:
        with pytest.raises(hw.AckTimeout, match="event bytes in flight"):
            while admitted <= 2 * APPEND_BYTES_IN_FLIGHT_MAX // size:
                depot.append(Blob(bytes(size)), ack="append", timeout=0.2)
                admitted += 1
        # Far fewer than the 2,048 records allowed: the bytes are the bound (each event encodes a little bigger).
        assert APPEND_BYTES_IN_FLIGHT_MAX // size - 1 <= admitted <= APPEND_BYTES_IN_FLIGHT_MAX // size
    finally:
        flag.touch()
    depot.append(Blob(b"last"), timeout=10)  # room again once processed: admitted and acked


@pytest.mark.in_process_only("it changes the task's admission bound, a constant of this process")
def test_an_event_bigger_than_the_byte_bound_is_admitted_alone(cluster, monkeypatch):
    from headwater.engine import admission

    monkeypatch.setattr(admission, "APPEND_BYTES_IN_FLIGHT_MAX", 1024)
    m = hw.Module("huge")
    blobs = m.depot("blobs", Blob)

    @m.stream(blobs)
    def size(ctx: hw.Context, blob: Blob) -> int:
        return len(blob.data)

    cluster.deploy(m, tasks=1)
    assert cluster.depot("huge", "blobs").append(Blob(bytes(100_000)))["size"] == 100_000


@pytest.mark.in_process_only("it changes or inspects the in-process transport's bounds and inboxes")
def test_fan_out_stops_while_the_receivers_inboxes_are_full(cluster):
    from headwater.cluster.transport import INBOX_BYTES_MAX
    from headwater.engine.streams import ROUND_SEND_BYTES_MAX

    m = hw.Module("fanbytes")
    jobs = m.depot("jobs", Job, partitioned=False)  # every record on task 0
    gate = threading.Event()
    received = m.pstate("received", hw.List(int))  # one per task
    payload_bytes = 256 * 1024

    @m.stream(jobs)
    def spray(ctx: hw.Context, job: Job) -> None:
        ctx.hop_task(1, land, job.key, bytes(payload_bytes))  # task 1 takes its time

    @m.step
    def land(ctx: hw.Context, key: int, payload: bytes) -> None:
        gate.wait(10)
        ctx.pstate(received).append(key)

    cluster.deploy(m, tasks=2)
    records = 2 * (INBOX_BYTES_MAX + ROUND_SEND_BYTES_MAX) // payload_bytes
    cluster.depot("fanbytes", "jobs").append_many([Job(k) for k in range(records)], ack="append")
    inbox = cluster._deployments["fanbytes"].transport._inboxes[1]
    most, deadline = 0, time.monotonic() + 1.0
    while time.monotonic() < deadline:  # task 0 sends until task 1's inbox is full, then waits
        most = max(most, inbox.queued_bytes)
        time.sleep(0.005)
    gate.set()
    assert INBOX_BYTES_MAX < most <= INBOX_BYTES_MAX + ROUND_SEND_BYTES_MAX + 2 * payload_bytes
    view = cluster.pstate("fanbytes", "received", task=1)
    deadline = time.monotonic() + 30
    while view.size() < records:  # then everything flows
        assert time.monotonic() < deadline, "fan-out never resumed"
        time.sleep(0.01)


def test_append_ack_does_not_wait_for_slow_processing(cluster):
    m = hw.Module("sluggish")
    jobs = m.depot("jobs", Job)

    @m.stream(jobs)
    def crawl(ctx: hw.Context, job: Job) -> None:
        time.sleep(0.05)

    cluster.deploy(m)
    depot = cluster.depot("sluggish", "jobs")
    started = time.perf_counter()
    results = depot.append_many([Job(i) for i in range(20)], ack="append")
    assert time.perf_counter() - started < 0.5  # processing all 20 takes a second
    assert [r.offset for r in results] == list(range(20))
    with pytest.raises(hw.AckTimeout, match="durable at partition 0, offset 20"):
        depot.append(Job(99), timeout=0.3)  # full ack: the durable offset is known before processing


@pytest.mark.in_process_only("it changes or inspects the in-process transport's bounds and inboxes")
def test_async_appends_wait_for_admission_off_the_event_loop(cluster, monkeypatch):
    import asyncio

    from headwater.engine import admission

    monkeypatch.setattr(admission, "APPENDS_IN_FLIGHT_MAX", 4)
    m = hw.Module("queued")
    jobs = m.depot("jobs", Job)
    gate = threading.Event()

    @m.stream(jobs)
    def hold(ctx: hw.Context, job: Job) -> int:
        gate.wait(10)
        return job.key

    cluster.deploy(m)
    depot = cluster.depot("queued", "jobs")

    async def go() -> list[int]:
        pending = [asyncio.ensure_future(depot.append_async(Job(i))) for i in range(10)]
        ticks = 0
        while ticks < 20:  # the loop keeps running although the task is full
            await asyncio.sleep(0.01)
            ticks += 1
        gate.set()
        return [r["hold"] for r in await asyncio.gather(*pending)]

    assert asyncio.run(go()) == list(range(10))


def test_a_hop_chain_without_end_stops_at_its_bound_with_a_clear_error(cluster):
    from headwater.engine.context import HOP_DEPTH_MAX

    m = hw.Module("chain")
    jobs = m.depot("jobs", Job)

    @m.stream(jobs)
    def start(ctx: hw.Context, job: Job) -> None:
        ctx.hop(job.key, onward, 1)

    @m.step
    def onward(ctx: hw.Context, hops: int) -> None:
        ctx.hop(hops, onward, hops + 1)  # never stops by itself

    cluster.deploy(m, tasks=2)
    with pytest.raises(hw.HandlerError, match="HopDepthExceeded") as caught:
        cluster.depot("chain", "jobs").append(Job(1), timeout=60)
    assert f"limit {HOP_DEPTH_MAX}" in caught.value.remote_traceback
    [dead] = cluster.dead_letters("chain", "start")
    assert dead.kind == "hop" and dead.error_type == "HopDepthExceeded"


def test_a_retry_that_would_hold_its_task_for_long_is_refused():
    """A plain handler's task waits out its back-off: at most 5 s in all; an async handler's goes on
    meanwhile: up to 10 minutes."""
    long = hw.Retry(times=4, backoff=1.0)  # 1 + 2 + 4 + 5 (each capped at backoff_max_s)
    assert long.total_s == 12.0 and hw.Retry(times=3, backoff=0.1).delay_s(2) == 0.4
    m = hw.Module("retries")
    jobs = m.depot("jobs", Job)
    with pytest.raises(hw.DefinitionError, match="topology 'plain'.* waits 12.0s in all.*async def"):

        @m.stream(jobs, retry=long)
        def plain(ctx: hw.Context, job: Job) -> None: ...

    @m.stream(jobs, retry=long)
    async def awaiting(ctx: hw.Context, job: Job) -> None: ...

    with pytest.raises(hw.DefinitionError, match="more than 600s"):
        hw.Retry(times=30, backoff=1.0, backoff_max_s=60)


def test_a_write_the_source_scan_missed_is_still_refused_at_run_time(cluster):
    m = hw.Module("hidden")
    items = m.depot("items", Job)
    totals = m.pstate("totals", hw.Map(int, int))
    operations = {"bump": lambda view: view.increment()}  # the write hides behind a lookup

    @m.stream(items)
    def fast(ctx: hw.Context, item: Job) -> None:
        operations["bump"](ctx.pstate(totals)[item.key])

    @m.microbatch(items)
    def exact(ctx: hw.Context, item: Job) -> None:
        ctx.pstate(totals)[item.key].set(1)

    cluster.deploy(m, tasks=1)
    with pytest.raises(hw.HandlerError, match="DefinitionError") as caught:
        cluster.depot("hidden", "items").append(Job(1))
    assert "written by microbatch topologies" in caught.value.remote_traceback


@pytest.mark.in_process_only("its handlers share an object with the test, which a worker process gets a copy of")
def test_a_control_that_task_0_never_takes_times_out(cluster, monkeypatch):
    from headwater.cluster import clients

    monkeypatch.setattr(clients, "CONTROL_WAIT_MAX_S", 0.3)
    m = hw.Module("busy")
    jobs = m.depot("jobs", Job, partitioned=False)
    gate = threading.Event()

    @m.stream(jobs)
    def stuck(ctx: hw.Context, job: Job) -> None:
        gate.wait(10)

    @m.microbatch(jobs)
    def batched(ctx: hw.Context, job: Job) -> None:
        pass

    cluster.deploy(m, tasks=1)
    try:
        cluster.depot("busy", "jobs").append(Job(1), ack="append")
        with pytest.raises(hw.Unavailable, match="did not take the pause"):
            cluster.pause("busy", "batched")
    finally:
        gate.set()


def test_retrying_a_dead_letter_of_a_closed_cluster_says_so_at_once():
    m = hw.Module("closing")
    jobs = m.depot("jobs", Job)

    @m.stream(jobs)
    def boom(ctx: hw.Context, job: Job) -> None:
        raise ValueError("always")

    cluster = hw.InProcessCluster()
    cluster.deploy(m)
    with pytest.raises(hw.HandlerError):
        cluster.depot("closing", "jobs").append(Job(1))
    [dead] = cluster.dead_letters("closing", "boom")
    cluster.close()
    started = time.monotonic()
    with pytest.raises(hw.Unavailable):
        dead.retry(timeout=10)
    assert time.monotonic() - started < 1
