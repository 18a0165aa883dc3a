"""Microbatch topologies: atomic batches on every task, exactly-once under failures."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest

import headwater as hw
from examples.bank_microbatch import Deposit, Transfer, bank
from examples.top_spenders import Purchase, spenders


@dataclass
class Item:
    key: int
    n: int = 1


def test_bank_transfers_exactly_once_and_failed_transfers_move_nothing(cluster):
    cluster.deploy(bank, tasks=3)
    deposits, transfers = cluster.depot("mbbank", "deposits"), cluster.depot("mbbank", "transfers")
    deposits.append_many([Deposit(u, 100) for u in range(6)], ack="append")
    cluster.wait_for_microbatch("mbbank", "banking", processed=6)
    transfers.append_many([Transfer("t1", 0, 1, 30), Transfer("t2", 2, 3, 500), Transfer("t3", 4, 5, 100)], ack="append")
    cluster.wait_for_microbatch("mbbank", "banking", processed=9)
    funds = cluster.pstate("mbbank", "funds")
    assert [funds[u].get() for u in range(6)] == [70, 130, 100, 100, 0, 200]
    log = cluster.pstate("mbbank", "transfer_log")
    assert log[2]["t2"].get() == {"to_id": 3, "amount": 500, "ok": False}
    assert log[0]["t1"]["ok"].get() is True
    assert cluster.query("mbbank", "total_funds")() == 600


def test_top_spenders_keeps_a_global_leaderboard(cluster):
    cluster.deploy(spenders, tasks=4)
    purchases = cluster.depot("spenders", "purchases")
    spend = [("ann", 500), ("bob", 700), ("cy", 100), ("ann", 400), ("dee", 50), ("ed", 800), ("fay", 20), ("gus", 5)]
    purchases.append_many([Purchase(u, c) for u, c in spend], ack="append")
    cluster.wait_for_microbatch("spenders", "spend", processed=len(spend))
    assert cluster.pstate("spenders", "totals")["ann"].get() == 900
    board = cluster.pstate("spenders", "leaderboard").get()
    assert [(e["user_id"], e["cents"]) for e in board] == [("ann", 900), ("ed", 800), ("bob", 700), ("cy", 100), ("dee", 50)]


def counting(fail: dict[int, int] | None = None, always_fail: set[int] | None = None, per_batch: bool = False) -> hw.Module:
    m = hw.Module("mb")
    items = m.depot("items", Item)
    left = m.pstate("left", hw.Map(int, int))
    right = m.pstate("right", hw.Map(int, int))
    seen = m.pstate("seen", hw.Map(int, int))
    batches = m.pstate("batches", hw.List(int))
    echoes = m.depot("echoes", Item)

    if per_batch:
        @m.microbatch(items, per_batch=True)
        def count(ctx: hw.Context, batch: list[Item]) -> None:
            ctx.pstate(batches).append(len(batch))
            for item in batch:
                ctx.hop(item.key, bump, item.key, item.n)
    else:
        @m.microbatch(items)
        def count(ctx: hw.Context, item: Item) -> None:
            if always_fail and item.key in always_fail:
                raise ValueError(f"item {item.key} is poison")
            if fail is not None and fail.get(item.key, 0) > 0:
                fail[item.key] -= 1
                raise ConnectionError("flaky")
            ctx.hop(item.key, bump, item.key, item.n)
            ctx.hop(item.key + 1, bump_right, item.key + 1, item.n)

    @m.step
    def bump(ctx: hw.Context, key: int, n: int) -> None:
        ctx.pstate(left)[key].increment(n)
        ctx.pstate(seen)[key].increment()

    @m.step
    def bump_right(ctx: hw.Context, key: int, n: int) -> None:
        ctx.pstate(right)[key].increment(n)

    @m.step
    def sums(ctx: hw.Context) -> tuple[int, int]:
        return (sum(v for _, v in ctx.pstate(left).items()), sum(v for _, v in ctx.pstate(right).items()))

    @m.query
    def both_sums(ctx: hw.QueryContext) -> tuple[int, int]:
        parts = ctx.call_all(sums)
        return sum(p[0] for p in parts), sum(p[1] for p in parts)

    @m.microbatch(echoes)
    def echo(ctx: hw.Context, item: Item) -> None:
        ctx.append("items", Item(item.key + 100, item.n))

    return m


def test_a_batch_becomes_visible_on_every_task_at_once(cluster):
    cluster.deploy(counting(), tasks=4)
    items = cluster.depot("mb", "items")
    stop = threading.Event()
    torn: list[tuple[int, int]] = []
    reads = [0]

    def reader() -> None:
        query = cluster.query("mb", "both_sums")
        while not stop.is_set():
            left, right = query()
            reads[0] += 1
            if left != right:
                torn.append((left, right))

    thread = threading.Thread(target=reader)
    thread.start()
    for round_ in range(30):
        items.append_many([Item(k, round_ + 1) for k in range(20)], ack="append")
    cluster.wait_for_microbatch("mb", "count", processed=600)
    stop.set()
    thread.join()
    assert reads[0] > 10
    assert torn == [], f"a reader saw half a batch: {torn[:3]}"
    assert cluster.query("mb", "both_sums")() == (20 * sum(range(1, 31)),) * 2


def test_raising_handlers_retry_the_whole_batch_without_duplicates(cluster):
    flaky = {k: 2 for k in range(0, 40, 3)}  # these items fail twice, then succeed
    cluster.deploy(counting(fail=flaky), tasks=3)
    cluster.depot("mb", "items").append_many([Item(k) for k in range(40)], ack="append")
    cluster.wait_for_microbatch("mb", "count", processed=40)
    seen = cluster.pstate("mb", "seen")
    assert [seen[k].get() for k in range(40)] == [1] * 40
    assert cluster.dead_letters("mb", "count") == []


@pytest.mark.in_process_only("its handlers share an object with the test, which a worker process gets a copy of")
def test_a_record_that_keeps_failing_is_set_aside(cluster):
    poison = {7}
    cluster.deploy(counting(always_fail=poison), tasks=2)
    cluster.depot("mb", "items").append_many([Item(k) for k in range(10)], ack="append")
    cluster.wait_for_microbatch("mb", "count", processed=10)
    seen = cluster.pstate("mb", "seen")
    assert [seen[k].get() for k in range(10)] == [1] * 7 + [None] + [1] * 2
    [dead] = cluster.dead_letters("mb", "count")
    assert (dead.error_type, dead.kind) == ("ValueError", "record")
    assert "item 7 is poison" in dead.traceback
    with pytest.raises(hw.HandlerError, match="failed again"):
        dead.retry()
    [again] = cluster.dead_letters("mb", "count")
    assert (again.id, again.offset) == (dead.id, dead.offset) and again.attempts > dead.attempts
    poison.clear()  # the cause is fixed: the retry applies the record once, and its dead letter goes
    assert again.retry() is None
    assert cluster.dead_letters("mb", "count") == []
    assert seen[7].get() == 1


def test_per_batch_handlers_get_a_list_per_partition(cluster):
    cluster.deploy(counting(per_batch=True), tasks=1)
    cluster.pause("mb", "count")
    cluster.depot("mb", "items").append_many([Item(k) for k in range(25)], ack="append")
    time.sleep(0.1)
    assert cluster.pstate("mb", "batches").get() in (None, [])  # paused: nothing ran
    cluster.resume("mb", "count")
    cluster.wait_for_microbatch("mb", "count", processed=25)
    assert cluster.pstate("mb", "batches").get() == [25]
    assert sum(cluster.pstate("mb", "left")[k].get() for k in range(25)) == 25


def test_appends_from_a_microbatch_arrive(cluster):
    cluster.deploy(counting(), tasks=2)
    cluster.depot("mb", "echoes").append_many([Item(k) for k in range(5)], ack="append")
    cluster.wait_for_microbatch("mb", "echo", processed=5)
    cluster.wait_for_microbatch("mb", "count", processed=5)
    assert [cluster.pstate("mb", "seen")[k + 100].get() for k in range(5)] == [1] * 5


def test_progress_survives_restart_without_reprocessing(tmp_path):
    with hw.InProcessCluster(tmp_path) as c:
        c.deploy(counting(), tasks=3)
        c.depot("mb", "items").append_many([Item(k) for k in range(30)], ack="append")
        c.wait_for_microbatch("mb", "count", processed=30)
    with hw.InProcessCluster(tmp_path) as c:
        c.deploy(counting())
        c.depot("mb", "items").append_many([Item(k) for k in range(30)], ack="append")
        c.wait_for_microbatch("mb", "count", processed=30)
        time.sleep(0.1)
        assert c.query("mb", "both_sums")() == (60, 60)


def test_stream_and_microbatch_writers_of_one_pstate_are_refused(cluster):
    m = hw.Module("mixed")
    items = m.depot("items", Item)
    totals = m.pstate("totals", hw.Map(int, int))

    @m.stream(items)
    def fast(ctx: hw.Context, item: Item) -> None:
        ctx.pstate(totals)[item.key].increment()

    @m.microbatch(items)
    def exact(ctx: hw.Context, item: Item) -> None:
        view = ctx.pstate("totals")[item.key]
        view.set(1)

    with pytest.raises(hw.DefinitionError, match="totals.*stream.*microbatch"):
        cluster.deploy(m)


def test_unknown_microbatch_names(cluster):
    cluster.deploy(counting())
    with pytest.raises(hw.NotFound, match="did you mean 'count'"):
        cluster.wait_for_microbatch("mb", "cont", processed=1)


def test_progress_reports_every_topology_and_partition(cluster):
    cluster.deploy(counting(), tasks=3)
    cluster.depot("mb", "items").append_many([Item(k) for k in range(30)], ack="append")
    cluster.wait_for_microbatch("mb", "count", processed=30)
    progress = cluster.progress("mb")
    assert sum(progress["count"]["items"]) == 30 and len(progress["count"]["items"]) == 3
    assert progress["echo"]["echoes"] == [0, 0, 0]


HELD_QUERY_S_MAX = 30  # a held query lets go after this, so a failing test never hangs
PROMPT_S = 5.0  # far below HELD_QUERY_S_MAX: an operation that took longer waited for the query


def held_query_module(entered: threading.Event, release: threading.Event) -> hw.Module:
    m = hw.Module("held")
    items = m.depot("items", Item)
    notes = m.depot("notes", Item, partition_by="key")
    counts = m.pstate("counts", hw.Map(int, int))
    noted = m.pstate("noted", hw.Map(int, int))

    @m.microbatch(items)
    def count(ctx: hw.Context, item: Item) -> None:
        ctx.hop(item.key, bump, item.key)

    @m.step
    def bump(ctx: hw.Context, key: int) -> None:
        ctx.pstate(counts)[key].increment()

    @m.stream(notes)
    def note(ctx: hw.Context, item: Item) -> int:
        ctx.pstate(noted)[item.key].increment()
        return item.key

    @m.query
    def held(ctx: hw.QueryContext) -> int:
        seen = sum(ctx.pstate(counts)[k].get(0) for k in range(8))
        entered.set()
        release.wait(HELD_QUERY_S_MAX)
        assert seen == sum(ctx.pstate(counts)[k].get(0) for k in range(8)), "a commit landed inside the query's cut"
        return seen

    return m


def promptly(fn, *args, **kwargs):
    started = time.monotonic()
    result = fn(*args, **kwargs)
    assert time.monotonic() - started < PROMPT_S, f"{fn.__name__} waited for a query"
    return result


def wait_for_phase(cluster, phase: str) -> None:
    deadline = time.monotonic() + PROMPT_S
    while cluster._microbatch_status("held", "count")["phase"] != phase:
        assert time.monotonic() < deadline, f"the batch never reached {phase!r}"
        time.sleep(0.005)


@pytest.mark.in_process_only("its handlers share an object with the test, which a worker process gets a copy of")
def test_reads_appends_and_streams_never_wait_for_a_running_query(cluster):
    entered, release = threading.Event(), threading.Event()
    cluster.deploy(held_query_module(entered, release), tasks=2)
    outcome: list[int] = []
    query = threading.Thread(target=lambda: outcome.append(cluster.query("held", "held")(timeout=60)))
    query.start()
    try:
        assert entered.wait(PROMPT_S)
        cluster.depot("held", "items").append_many([Item(k) for k in range(8)], ack="append")
        wait_for_phase(cluster, "decided")  # the batch is decided and waits for the query to end
        counts, noted = cluster.pstate("held", "counts"), cluster.pstate("held", "noted")
        assert [promptly(counts[k].get, 0) for k in range(8)] == [0] * 8  # every task; not applied yet
        notes = cluster.depot("held", "notes")
        for key in range(8):  # keys on every task, task 0 included: appended and processed
            assert promptly(notes.append, Item(key))["note"] == key
        assert [noted[k].get() for k in range(8)] == [1] * 8
    finally:
        release.set()
        query.join(HELD_QUERY_S_MAX)
    assert outcome == [0]
    cluster.wait_for_microbatch("held", "count", processed=8, timeout=PROMPT_S)
    assert [cluster.pstate("held", "counts")[k].get() for k in range(8)] == [1] * 8


@pytest.mark.in_process_only("its handlers share an object with the test, which a worker process gets a copy of")
def test_a_timed_out_query_holds_no_commit(cluster):
    entered, release = threading.Event(), threading.Event()
    cluster.deploy(held_query_module(entered, release), tasks=2)
    try:
        with pytest.raises(hw.QueryTimeout):
            cluster.query("held", "held")(timeout=0.3)
        assert entered.is_set() and not release.is_set()  # still running in the background
        cluster.depot("held", "items").append_many([Item(k) for k in range(8)], ack="append")
        promptly(cluster.wait_for_microbatch, "held", "count", processed=8, timeout=PROMPT_S)
        assert [cluster.pstate("held", "counts")[k].get() for k in range(8)] == [1] * 8
    finally:
        release.set()


def test_a_phase_message_from_before_a_task_came_back_is_ignored(cluster):
    """A task that restarted or took over (a failover) has no plan for the batch in flight; a
    `prepare` sent before the coordinator's redrive may still reach it, and must not stop it."""
    from headwater.engine import messages
    from headwater.engine.messages import MbPhase

    cluster.deploy(bank, tasks=2)
    deposits = cluster.depot("mbbank", "deposits")
    deposits.append(Deposit(1, 50), ack="append")
    cluster.wait_for_microbatch("mbbank", "banking", processed=1)
    cluster.deployment("mbbank").transport.send(1, messages.encode(MbPhase("banking", 99, "prepare")))
    deposits.append(Deposit(2, 70), ack="append")
    cluster.wait_for_microbatch("mbbank", "banking", processed=2)
    assert [row["up"] and row["error"] is None for row in cluster.status()["mbbank"]] == [True, True]
    assert cluster.pstate("mbbank", "funds")[2].get() == 70
