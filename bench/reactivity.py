"""Workload 10 — watching PStates: how soon a commit reaches its subscribers, and what one costs.

A `game` module keeps per-room scores (`hw.Map(str, hw.Map(str, int, subindexed=True))`). On an
`InProcessCluster` of `--tasks` tasks:

- append → diff latency: a full-ack append changes one player's score in a watched room; the
  time from the append call until the subscription hands out the diff (p50, p99);
- fan-out: one change watched by 1,000 and by 10,000 subscriptions of the same path (the
  `SUBSCRIPTIONS_MAX` of a deployment): the time from the append's return until the last of them
  has its diff;
- memory per subscription: the growth of the process's resident memory over 10,000 subscriptions,
  divided by their number.

    .venv/bin/python -m bench.reactivity [--quick]
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass

import headwater as hw
from bench.common import percentile
from bench.harness import Env, Section, table

LATENCY_SAMPLES = 2_000  # quick: 300
NEXT_WAIT_S = 10.0


@dataclass
class Score:
    room: str
    player: str
    points: int


def game_module() -> hw.Module:
    game = hw.Module("game")
    scores_in = game.depot("scores", Score, partition_by="room")
    scores = game.pstate("scores", hw.Map(str, hw.Map(str, int, subindexed=True)))

    @game.stream(scores_in)
    def add_score(ctx: hw.Context, s: Score) -> None:
        ctx.pstate(scores)[s.room][s.player].update(lambda total: (total or 0) + s.points)

    return game


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(env: Env) -> Section:
    samples = 300 if env.quick else LATENCY_SAMPLES
    with hw.InProcessCluster(env.directory("w10-reactivity")) as cluster:
        cluster.deploy(game_module(), tasks=env.tasks)
        depot = cluster.depot("game", "scores")
        room = cluster.pstate("game", "scores")["room-1"]
        depot.append(Score("room-1", "ann", 1))
        latencies = []
        with room.watch() as subscription:
            for i in range(samples):
                started = time.perf_counter()
                depot.append(Score("room-1", f"p{i % 50}", 1))
                change = subscription.next(timeout=NEXT_WAIT_S)
                latencies.append((time.perf_counter() - started) * 1000)
                assert change is not None
        plain = []
        for i in range(samples):  # the same appends with nobody watching, for comparison
            started = time.perf_counter()
            depot.append(Score("room-2", f"p{i % 50}", 1))
            plain.append((time.perf_counter() - started) * 1000)

        fan_out = []
        rss_before = _rss_mib()
        subscriptions = []
        for count in (1_000, 10_000):
            while len(subscriptions) < count:
                subscriptions.append(room.watch())
            rss_after = _rss_mib()
            depot.append(Score("room-1", "ann", 1))
            appended = time.perf_counter()
            for subscription in subscriptions:
                assert subscription.next(timeout=NEXT_WAIT_S) is not None
            fan_out.append((count, (time.perf_counter() - appended) * 1000, rss_after))
        for subscription in subscriptions:
            subscription.close()
    per_subscription_kib = (fan_out[-1][2] - rss_before) * 1024 / fan_out[-1][0]
    print(f"  w10 append→diff p50 {percentile(latencies, 0.5):.3f} ms; fan-out {fan_out}", flush=True)
    markdown = "\n\n".join([
        f"Full-ack append of one score change, on an `InProcessCluster` of {env.tasks} tasks:",
        table(["measure", "p50 ms", "p99 ms", "goal"], [
            ["append → the watcher has its diff", f"{percentile(latencies, 0.5):.3f}",
             f"{percentile(latencies, 0.99):.3f}", "p50 ≤ 1 ms"],
            ["append alone (nobody watching the room)", f"{percentile(plain, 0.5):.3f}",
             f"{percentile(plain, 0.99):.3f}", ""]]),
        "One change watched by many subscriptions of the same path (from the append's return until "
        "the last subscription has the diff):",
        table(["subscriptions", "until the last has it", "resident memory"],
              [[f"{count:,}", f"{ms:.1f} ms", f"{rss:,.0f} MiB"] for count, ms, rss in fan_out]),
        f"Memory per subscription: about {per_subscription_kib:.1f} KiB (the growth of the peak resident "
        "memory over 10,000 subscriptions, divided by their number).",
    ])
    return Section("reactivity", "10. Watching PStates", markdown,
                   {"latency_ms": latencies, "plain_ms": plain, "fan_out": fan_out,
                    "per_subscription_kib": per_subscription_kib})


def main() -> None:
    from bench.suite import standalone

    standalone(run)


if __name__ == "__main__":
    main()
