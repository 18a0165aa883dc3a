"""A module whose processing can be held back by a flag file, run in a child that a test kills.

It lets a test crash a process while a keyed append is durable but its processing unfinished:
not started at all (a root handler held), or half done (one topology finished, another's hop held).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import headwater as hw

HOLD_S_MAX = 120  # a held handler gives up after this, so a forgotten child never runs forever
HALF_DONE, UNSTARTED = 0, 4  # job ids; with two tasks they live on different tasks


@dataclass
class Job:
    id: int


def _hold(flag: str) -> None:
    deadline = time.monotonic() + HOLD_S_MAX
    while Path(flag).exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def module(flag: str) -> hw.Module:
    m = hw.Module("keyed")
    jobs = m.depot("jobs", Job, partition_by="id")
    started = m.pstate("started", hw.Map(int, int))
    finished = m.pstate("finished", hw.Map(int, int))

    @m.stream(jobs)
    def quick(ctx: hw.Context, job: Job) -> int:
        if job.id == UNSTARTED:
            _hold(flag)  # nothing of its processing commits before the crash
        ctx.pstate(started)[job.id].increment()
        return job.id + 100

    @m.stream(jobs)
    def hopper(ctx: hw.Context, job: Job) -> int:
        ctx.hop(job.id, finish, job.id)
        return job.id * 10

    @m.step
    def finish(ctx: hw.Context, job_id: int) -> None:
        _hold(flag)  # HALF_DONE: quick's tree and hopper's root commit, hopper's hop never does
        ctx.pstate(finished)[job_id].increment()

    return m


def main(path: str, flag: str) -> None:
    Path(flag).touch()
    cluster = hw.InProcessCluster(path)
    cluster.deploy(module(flag), tasks=2)
    depot = cluster.depot("keyed", "jobs")
    depot.append(Job(HALF_DONE), ack=hw.Ack.APPEND, idempotency_key=f"job-{HALF_DONE}")
    started = cluster.pstate("keyed", "started")
    while started[HALF_DONE].get() is None:  # its first round committed: quick is done with it
        time.sleep(0.01)
    depot.append(Job(UNSTARTED), ack=hw.Ack.APPEND, idempotency_key=f"job-{UNSTARTED}")
    print("READY", flush=True)
    time.sleep(HOLD_S_MAX)
    os._exit(1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
