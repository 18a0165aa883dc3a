"""Tick depots: a stream topology gets a tick per period on task 0; a microbatch at most one per batch."""

from __future__ import annotations

import datetime as dt
import time

import pytest

import headwater as hw

WAIT_S = 20.0


def clock_module(every_s: float) -> hw.Module:
    m = hw.Module("clock")
    ticks = m.tick_depot("ticks", every_s=every_s)
    seen = m.pstate("seen", hw.Map(str, hw.List(float)), partitioned=False)
    batches = m.pstate("batches", hw.Map(str, hw.List(int)), partitioned=False)

    @m.stream(ticks)
    def on_tick(ctx: hw.Context, tick: hw.Tick) -> None:
        assert ctx.task_id == 0 and tick.time.tzinfo is not None
        ctx.pstate(seen)["stream"].append(tick.time.timestamp())

    @m.microbatch(ticks, per_batch=True)
    def on_batch(ctx: hw.Context, found: list) -> None:
        ctx.pstate(batches)["sizes"].append(len(found))

    return m


def test_a_stream_topology_gets_one_tick_per_period_on_task_0(cluster):
    cluster.deploy(clock_module(0.1), tasks=2)
    seen = cluster.pstate("clock", "seen")
    deadline = time.monotonic() + WAIT_S
    while len(seen["stream"].get() or []) < 6:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    times = seen["stream"].get()
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(0.09 <= gap <= 0.6 for gap in gaps), gaps  # one per period (slack for a busy machine)
    assert abs(times[-1] - dt.datetime.now(dt.timezone.utc).timestamp()) < 5
    sizes = cluster.pstate("clock", "batches")["sizes"].get() or []
    assert sizes and set(sizes) == {1}  # every batch saw exactly one tick: the latest
    assert "ticks" in cluster.status()["clock"][0]["sources"]


def test_ticks_are_not_repeated_or_made_up_after_a_restart(tmp_path):
    path = tmp_path / "data"
    with hw.InProcessCluster(path) as cluster:
        cluster.deploy(clock_module(0.2), tasks=1)
        time.sleep(0.9)
        first = cluster.pstate("clock", "seen")["stream"].get()
    time.sleep(1.0)  # down for a second: the five ticks missed meanwhile are not made up
    with hw.InProcessCluster(path) as cluster:
        cluster.deploy(clock_module(0.2))
        time.sleep(0.5)
        after = cluster.pstate("clock", "seen")["stream"].get()
    assert len(first) >= 3 and after[:len(first)] == first  # nothing lost or replaced
    new = after[len(first):]
    assert new and new[0] >= first[-1] + 0.2  # the first tick after the restart is a new one
    assert len(new) <= 4  # one at once, then one per period: not the five missed


@pytest.mark.parametrize("every_s", [0, 0.001, -1, "1", True])
def test_a_tick_period_is_checked(every_s):
    with pytest.raises(hw.DefinitionError, match="every_s"):
        hw.Module("m").tick_depot("ticks", every_s=every_s)
