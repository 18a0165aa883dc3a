"""Queries: routed reads, fan-out over tasks, queries calling queries, read-only, errors."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest

import headwater as hw


@dataclass
class Follow:
    user: int
    follows: int


@dataclass
class Score:
    user: str
    points: int


def social() -> hw.Module:
    m = hw.Module("social")
    follows = m.depot("follows", Follow, partition_by="user")
    scores = m.depot("scores", Score, partition_by="user")
    following = m.pstate("following", hw.Map(int, hw.Set(int, subindexed=True)))
    points = m.pstate("points", hw.Map(str, int))

    @m.stream(follows)
    def follow(ctx: hw.Context, f: Follow) -> None:
        ctx.pstate(following)[f.user].add(f.follows)

    @m.stream(scores)
    def score(ctx: hw.Context, s: Score) -> None:
        ctx.pstate(points)[s.user].increment(s.points)

    @m.step
    def neighbours(ctx: hw.Context, users: list[int]) -> list[int]:
        view = ctx.pstate(following)
        return sorted({n for u in users for n in view[u].keys()})

    @m.query
    def reach(ctx: hw.QueryContext, user: int, hops: int) -> list[int]:
        """Everyone `user` reaches in up to `hops` steps along follow edges, hopping to each key's task."""
        seen, frontier = {user}, {user}
        for _ in range(hops):
            by_task: dict[int, list[int]] = {}
            for u in frontier:
                by_task.setdefault(task_of(u, ctx.num_tasks), []).append(u)
            found = set()
            for task, users in by_task.items():
                found.update(ctx.call_task(task, neighbours, users))
            frontier = found - seen
            seen |= frontier
        return sorted(seen - {user})

    @m.step
    def local_top(ctx: hw.Context, n: int) -> list[tuple[int, str]]:
        return sorted(((-v, k) for k, v in ctx.pstate(points).items()))[:n]

    @m.query
    def top(ctx: hw.QueryContext, n: int) -> list[str]:
        merged = sorted(pair for part in ctx.call_all(local_top, n) for pair in part)
        return [user for _, user in merged[:n]]

    @m.query
    def fib(ctx: hw.QueryContext, n: int) -> int:
        return n if n < 2 else ctx.query(fib)(n - 1) + ctx.query("fib")(n - 2)

    @m.query
    def forever(ctx: hw.QueryContext, n: int) -> int:
        return ctx.query(forever)(n + 1)

    @m.query(route_by="user")
    def followers_of(ctx: hw.QueryContext, user: int) -> tuple[int | None, list[int]]:
        return ctx.task_id, ctx.pstate(following)[user].keys()

    @m.query
    def sneaky_write(ctx: hw.QueryContext, user: int) -> None:
        ctx.pstate(following)[user].add(1)

    @m.step
    def write_step(ctx: hw.Context) -> None:
        ctx.pstate(points)["x"].set(1)

    @m.query
    def sneaky_step(ctx: hw.QueryContext) -> None:
        ctx.call_all(write_step)

    @m.query
    def broken(ctx: hw.QueryContext, n: int) -> float:
        return 1 / n

    @m.query
    def slow(ctx: hw.QueryContext, seconds: float) -> bool:
        time.sleep(seconds)
        return True

    return m


def task_of(key: int, tasks: int) -> int:
    from headwater.schema import task_for_key

    return task_for_key(key, tasks)


@pytest.fixture
def net(cluster):
    module = social()
    cluster.deploy(module, tasks=4)
    edges = [(1, 2), (2, 3), (3, 4), (4, 5), (2, 6), (6, 1), (7, 8)]
    cluster.depot("social", "follows").append_many([Follow(a, b) for a, b in edges])
    cluster.depot("social", "scores").append_many(
        [Score(name, pts) for name, pts in [("ann", 5), ("bob", 9), ("cy", 1), ("dee", 7), ("ed", 3), ("bob", 2)]]
    )
    return cluster


def test_reach_over_a_graph_spread_across_tasks(net):
    reach = net.query("social", "reach")
    assert reach(1, 1) == [2]
    assert reach(1, 2) == [2, 3, 6]
    assert reach(1, 10) == [2, 3, 4, 5, 6]
    assert reach(7, 3) == [8]


def test_top_n_merges_partial_results_of_every_task(net):
    assert net.query("social", "top")(3) == ["bob", "dee", "ann"]


def test_queries_invoke_queries_with_a_depth_bound(net):
    assert net.query("social", "fib")(10) == 55
    with pytest.raises(hw.QueryDepthExceeded, match="forever"):
        net.query("social", "forever")(0)


def test_route_by_runs_the_body_on_the_task_owning_the_key(net):
    for user in (1, 2, 7):
        assert net.query("social", "followers_of")(user) == (task_of(user, 4), {1: [2], 2: [3, 6], 7: [8]}[user])


def test_queries_are_read_only(net):
    with pytest.raises(hw.ReadOnlyError, match="only read"):
        net.query("social", "sneaky_write")(1)
    with pytest.raises(hw.ReadOnlyError):
        net.query("social", "sneaky_step")()
    assert net.pstate("social", "points")["x"].get() is None


def test_query_errors_carry_the_remote_traceback(net):
    with pytest.raises(hw.HandlerError, match="ZeroDivisionError") as raised:
        net.query("social", "broken")(0)
    assert "return 1 / n" in raised.value.remote_traceback


def test_arguments_are_checked_against_type_hints(net):
    with pytest.raises(hw.SchemaError, match="argument 'n'"):
        net.query("social", "top")("three")
    with pytest.raises(hw.SchemaError, match=r"top\(n: int\)"):
        net.query("social", "top")(1, 2)


def test_a_slow_query_times_out_clearly(net):
    with pytest.raises(hw.QueryTimeout, match="within 0.05s"):
        net.query("social", "slow")(0.5, timeout=0.05)


def test_many_queries_run_at_once(net):
    results: list[list[str]] = []

    def run() -> None:
        for _ in range(20):
            results.append(net.query("social", "top")(2))

    threads = [threading.Thread(target=run) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [["bob", "dee"]] * 120


def test_a_query_calls_a_renamed_query_by_its_function(cluster):
    m = hw.Module("renamed")

    @m.query(name="double_it")
    def double(ctx: hw.QueryContext, n: int) -> int:
        return 2 * n

    @m.query
    def quadruple(ctx: hw.QueryContext, n: int) -> int:
        return ctx.query(double)(ctx.query("double_it")(n))

    cluster.deploy(m)
    assert cluster.query("renamed", "quadruple")(3) == 12
