"""Watching PState paths: the first value, then element diffs of every commit, rebuilt == get().

The property test writes random operations under a watched path (maps, sets, lists and records,
subindexed or not) through a real topology and checks, after each commit, that the value rebuilt
from the diffs equals what `get()` returns.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import headwater as hw
from tests.clusters import CLUSTER_KINDS, open_cluster
from headwater.client.subscriptions import SUBSCRIPTION_QUEUE_MAX
from headwater.pstate.diffs import apply, diff

WAIT_S = 10.0


@dataclass
class Op:
    room: str
    kind: str  # "score", "unscore", "tag", "untag", "say", "trim", "title", "reset"
    who: str = ""
    amount: int = 0


def game(subindexed: bool) -> hw.Module:
    m = hw.Module("game")
    ops = m.depot("ops", Op, partition_by="room")
    rooms = m.pstate("rooms", hw.Map(str, hw.Record(
        scores=hw.Map(str, int, subindexed=subindexed),
        tags=hw.Set(str, subindexed=subindexed),
        chat=hw.List(str, subindexed=subindexed),
        title=str)))

    @m.stream(ops)
    def apply_op(ctx: hw.Context, op: Op) -> None:
        room = ctx.pstate(rooms)[op.room]
        if op.kind == "score":
            room["scores"][op.who].update(lambda v: (v or 0) + op.amount)
        elif op.kind == "unscore":
            room["scores"][op.who].delete()
        elif op.kind == "tag":
            room["tags"].add(op.who)
        elif op.kind == "untag":
            room["tags"].discard(op.who)
        elif op.kind == "say":
            room["chat"].append(f"{op.who}:{op.amount}")
        elif op.kind == "trim" and room["chat"].size():
            room["chat"][-1].delete()
        elif op.kind == "title":
            room["title"].set(op.who)
        elif op.kind == "reset":
            room.delete()

    return m


def caught_up(subscription: hw.Subscription, rebuilt: list, view: Any) -> Any:
    """Apply diffs until the rebuilt value equals get() (bounded); return it."""
    deadline = time.monotonic() + WAIT_S
    expected = view.get()
    while rebuilt[0] != expected:
        assert time.monotonic() < deadline, (rebuilt[0], expected)
        change = subscription.next(timeout=0.05)
        if change is not None:
            rebuilt[0] = apply(rebuilt[0], change)
    return rebuilt[0]


names = st.sampled_from(["ann", "bo", "cy"])
operations = st.lists(st.builds(Op, room=st.just("r1"), kind=st.sampled_from(
    ["score", "unscore", "tag", "untag", "say", "trim", "title", "reset"]), who=names,
    amount=st.integers(-3, 9)), min_size=1, max_size=12)


@pytest.mark.parametrize("kind", CLUSTER_KINDS)
@pytest.mark.parametrize("subindexed", [False, True])
def test_diffs_rebuild_what_get_returns_after_every_commit(subindexed, kind, tmp_path):
    with open_cluster(kind, tmp_path / "data") as cluster:
        cluster.deploy(game(subindexed), tasks=2)
        depot = cluster.depot("game", "ops")
        view = cluster.pstate("game", "rooms")["r1"]

        @settings(max_examples=25 if kind == "in_process" else 10, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
        @given(operations)
        def check(ops: list[Op]) -> None:
            with view.watch() as subscription:
                rebuilt = [subscription.value]
                assert rebuilt[0] == view.get()
                for op in ops:
                    depot.append(op)
                    caught_up(subscription, rebuilt, view)
                for change in _drain(subscription):  # nothing else arrives: every diff was needed
                    rebuilt[0] = apply(rebuilt[0], change)
                assert rebuilt[0] == view.get()

        check()


def _drain(subscription: hw.Subscription) -> list:
    found = []
    while (change := subscription.next(timeout=0.05)) is not None:
        found.append(change)
    return found


def test_element_diffs_not_whole_collections_and_a_batch_arrives_together(cluster):
    cluster.deploy(game(True), tasks=2)
    depot = cluster.depot("game", "ops")
    depot.append(Op("r1", "score", "ann", 5))
    with cluster.pstate("game", "rooms")["r1"]["scores"].watch() as subscription:
        assert subscription.value == {"ann": 5}
        depot.append(Op("r1", "score", "bo", 2))
        assert subscription.next(timeout=WAIT_S) == hw.diffs.Put(("bo",), 2)
        depot.append(Op("r1", "unscore", "ann"))
        assert subscription.next(timeout=WAIT_S) == hw.diffs.Remove(("ann",))
        depot.append(Op("r1", "tag", "x"))  # outside the watched path: nothing comes
        assert subscription.next(timeout=0.3) is None
        assert subscription.value == {"bo": 2}


def test_a_thousand_subscriptions_on_one_module(cluster):
    """1,000 subscriptions over 100 rooms: each sees its own room's change, and nothing else."""
    cluster.deploy(game(True), tasks=2)
    rooms = cluster.pstate("game", "rooms")
    subscriptions = [rooms[f"r{i % 100}"]["scores"].watch() for i in range(1000)]
    try:
        cluster.depot("game", "ops").append_many([Op(f"r{room}", "score", "ann", room) for room in range(100)])
        deadline = time.monotonic() + WAIT_S * 3
        for i, subscription in enumerate(subscriptions):
            change = subscription.next(timeout=max(0.0, deadline - time.monotonic()))
            assert change == hw.diffs.Put((), {"ann": i % 100}), (i, change)  # the map appears whole
            assert subscription.value == {"ann": i % 100}
        assert all(subscription.next(timeout=0) is None for subscription in subscriptions)  # one change each
    finally:
        for subscription in subscriptions:
            subscription.close()


def test_callback_subscriptions_and_close(cluster):
    cluster.deploy(game(False), tasks=1)
    got: list = []
    done = threading.Event()

    def on_change(change: Any, value: Any) -> None:
        got.append((change, value))
        done.set()

    subscription = cluster.pstate("game", "rooms")["r1"]["title"].watch(callback=on_change)
    cluster.depot("game", "ops").append(Op("r1", "title", "hello"))
    assert done.wait(WAIT_S) and got == [(hw.diffs.Put((), "hello"), "hello")]
    subscription.close()
    cluster.depot("game", "ops").append(Op("r1", "title", "again"))
    time.sleep(0.2)
    assert len(got) == 1 and list(subscription) == []


def test_a_slow_subscriber_is_resynced_with_bounded_memory(cluster, monkeypatch):
    from headwater.client import subscriptions

    monkeypatch.setattr(subscriptions, "SUBSCRIPTION_QUEUE_MAX", 5)
    cluster.deploy(game(True), tasks=1)
    depot = cluster.depot("game", "ops")
    with cluster.pstate("game", "rooms")["r1"]["chat"].watch() as slow:
        for i in range(20):
            depot.append(Op("r1", "say", "ann", i))
        deadline = time.monotonic() + WAIT_S
        while len(slow._queue) == 0 and not slow._resync:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.3)
        assert len(slow._queue) <= 5
        changes = _drain(slow)
        assert isinstance(changes[0], hw.diffs.Resync)
        value = changes[0].value
        for change in changes[1:]:
            value = apply(value, change)
        assert value == [f"ann:{i}" for i in range(20)]
    assert SUBSCRIPTION_QUEUE_MAX >= 1000


def test_an_update_that_deletes_a_watched_pstate_ends_its_subscriptions_and_resyncs_the_others(cluster):
    with_notes = game(False)
    with_notes.pstate("notes", hw.Map(str, str))
    cluster.deploy(with_notes, tasks=2)
    cluster.depot("game", "ops").append(Op("r1", "title", "before"))
    kept = cluster.pstate("game", "rooms")["r1"].watch()
    gone = cluster.pstate("game", "notes")["r1"].watch()
    try:
        cluster.update(game(False), delete=["notes"])
        change = kept.next(timeout=WAIT_S)
        assert isinstance(change, hw.diffs.Resync) and change.value == {"title": "before"}
        deadline = time.monotonic() + WAIT_S
        while not gone.closed:
            assert time.monotonic() < deadline, "the watch of a deleted PState never ended"
            time.sleep(0.02)
        assert list(gone) == []  # a reader's loop ends
        assert gone.ended is not None and "notes" in gone.ended and kept.ended is None
        cluster.depot("game", "ops").append(Op("r1", "title", "after"))
        assert kept.next(timeout=WAIT_S) == hw.diffs.Put(("title",), "after")
    finally:
        kept.close()
        gone.close()


def test_an_update_resyncs_every_subscription(cluster):
    cluster.deploy(game(False), tasks=1)
    cluster.depot("game", "ops").append(Op("r1", "title", "before"))
    with cluster.pstate("game", "rooms")["r1"].watch() as subscription:
        cluster.update(game(False))
        change = subscription.next(timeout=WAIT_S)
        assert isinstance(change, hw.diffs.Resync) and change.value == {"title": "before"}


async def _first_two(subscription: hw.Subscription) -> list:
    found = []
    async for change in subscription:
        found.append(change)
        if len(found) == 2:
            return found
    return found


def test_async_iteration(cluster):
    import asyncio

    cluster.deploy(game(False), tasks=1)
    depot = cluster.depot("game", "ops")
    with cluster.pstate("game", "rooms")["r1"]["scores"].watch() as subscription:
        depot.append(Op("r1", "score", "ann", 1))
        depot.append(Op("r1", "score", "ann", 1))
        assert asyncio.run(_first_two(subscription)) == [hw.diffs.Put((), {"ann": 1}), hw.diffs.Put(("ann",), 2)]


def test_diff_and_apply_agree_on_nested_values():
    old = {"a": {"x": [1, 2, 3], "s": {1, 2}}, "b": 1}
    new = {"a": {"x": [1, 5], "s": {2, 3}, "n": None}, "c": [1]}
    changes = diff(old, new)
    value = {"a": {"x": [1, 2, 3], "s": {1, 2}}, "b": 1}
    for change in changes:
        value = apply(value, change)
    assert value == new
    assert hw.diffs.Truncate(("a", "x"), 2) in changes and hw.diffs.Remove(("b",)) in changes


def test_a_watch_follows_its_task_when_its_worker_dies(any_cluster):
    """On a cluster of workers, SIGKILL the worker leading the watched task: the subscription gets a
    Resync once the task runs again, and the diffs of later commits."""
    import os
    import signal

    any_cluster.deploy(game(False), tasks=2)
    depot = any_cluster.depot("game", "ops")
    depot.append(Op("r1", "score", "ann", 1))
    with any_cluster.pstate("game", "rooms")["r1"]["scores"].watch() as subscription:
        depot.append(Op("r1", "score", "ann", 1))
        assert subscription.next(timeout=WAIT_S) == hw.diffs.Put(("ann",), 2)
        rows = any_cluster.status()["game"]
        task = next(t for t in range(2) if any_cluster.pstate("game", "rooms", task=t)["r1"].exists())
        if rows[task]["worker"] is None:
            return  # in process: no worker to kill
        os.kill(rows[task]["pid"], signal.SIGKILL)
        change = subscription.next(timeout=60)
        assert isinstance(change, hw.diffs.Resync) and change.value == {"ann": 2}
        deadline = time.monotonic() + 60
        while True:
            try:
                depot.append(Op("r1", "score", "bo", 7), idempotency_key="after-kill")
                break
            except hw.Unavailable:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert subscription.next(timeout=WAIT_S) == hw.diffs.Put(("bo",), 7)
        assert subscription.value == {"ann": 2, "bo": 7}


def test_a_subscription_whose_task_moves_away_resyncs_from_where_it_runs_now(tmp_path):
    """What a worker does when a task it led is led elsewhere while it lives on (a deposed leader):
    its own clients' subscriptions leave its hub for the new leader's, with a `Resync`."""
    from headwater.cluster.watching import RemoteWatches

    class NewLeader:  # the worker that leads the task now: here, the same task read anew
        def __init__(self, cluster: hw.InProcessCluster) -> None:
            self.cluster, self.unwatched = cluster, []

        def watch_on(self, task: int, pstate: str, steps: tuple, watch_id: int) -> Any:
            return self.cluster.pstate("game", pstate)[steps[0]][steps[1]].get()

        def unwatch_on(self, task: int, watch_id: int) -> None:
            self.unwatched.append(watch_id)

    with hw.InProcessCluster(tmp_path / "data") as cluster:
        cluster.deploy(game(False), tasks=1)
        depot = cluster.depot("game", "ops")
        depot.append(Op("r1", "score", "ann", 1))
        hub = cluster.deployment("game").hub
        subscription = cluster.pstate("game", "rooms")["r1"]["scores"].watch()
        assert subscription.value == {"ann": 1} and hub.count == 1
        released = hub.release_task(0)
        assert [(s, pstate, steps) for s, pstate, steps in released] == [(subscription, "rooms", ("r1", "scores"))]
        assert hub.count == 0
        depot.append(Op("r1", "score", "bo", 2))  # meanwhile: the old hub no longer tells it
        leader = NewLeader(cluster)
        remote = RemoteWatches(leader)
        try:
            remote.adopt(subscription, 0, "rooms", ("r1", "scores"))
            assert subscription.next(timeout=WAIT_S) == hw.diffs.Resync({"ann": 1, "bo": 2})
            assert subscription.value == {"ann": 1, "bo": 2}
            subscription.close()
            assert len(leader.unwatched) == 1  # closing it ends the watch where it is served now
        finally:
            remote.close()
