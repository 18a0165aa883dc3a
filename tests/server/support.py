"""A module that exercises every client-facing path, and a server for it on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

import headwater as hw
from examples.bank import bank
from examples.orders import orders_module
from examples.registration import registration
from headwater.server import Auth, ConnectionLimits, ServerThread, create_app

class _Switch:
    """`FIXED["jobs"] = True` makes the jobs module's failing handler succeed on retry. A file, not a
    variable, so that handlers running in a LocalCluster's worker processes see it too."""

    def __init__(self) -> None:
        self._path = Path(tempfile.gettempdir()) / f"headwater-tests-fixed-{os.getpid()}"

    def __getitem__(self, name: str) -> bool:
        return self._path.exists()

    def __setitem__(self, name: str, value: bool) -> None:
        if value:
            self._path.touch()
        else:
            self._path.unlink(missing_ok=True)


FIXED = _Switch()


@dataclass
class Job:
    key: int
    sleep_s: float = 0.0  # in the root handler: the record itself is slow to process
    nap_s: float = 0.0  # in a hopped step: the record is durable (acked for ack=append) long before its tree ends
    fail: bool = False
    tag: str = ""
    at: datetime | None = None


def jobs_module() -> hw.Module:
    m = hw.Module("jobs")
    jobs = m.depot("jobs", Job, partition_by="key")
    m.depot("internal", Job, client_appends=False)
    done = m.pstate("done", hw.Map(int, int))
    tags = m.pstate("tags", hw.Map(int, hw.Set(str)))
    log = m.pstate("log", hw.Map(int, hw.List(int, subindexed=True)))
    seen = m.pstate("seen", hw.Map(int, hw.Map(datetime, str, subindexed=True)))

    @m.stream(jobs)
    def work(ctx: hw.Context, job: Job) -> int:
        if job.fail and not FIXED["jobs"]:
            raise ValueError(f"job {job.key} failed on purpose")
        if job.sleep_s:
            time.sleep(job.sleep_s)
        ctx.pstate(done)[job.key].increment()
        ctx.pstate(log)[job.key].append(ctx.offset)
        if job.tag:
            ctx.pstate(tags)[job.key].add(job.tag)
        if job.at is not None:
            ctx.pstate(seen)[job.key][job.at].set(job.tag)
        if job.nap_s:
            ctx.hop(job.key, nap, job.nap_s)
        return job.key * 2

    @m.step
    def nap(ctx: hw.Context, seconds: float) -> None:
        time.sleep(seconds)

    @m.query
    def double(ctx: hw.QueryContext, n: int) -> int:
        return n * 2

    @m.query
    def explode(ctx: hw.QueryContext) -> None:
        raise RuntimeError("the query exploded")

    return m


ALL_MODULES = (registration, orders_module, bank)


def deploy(cluster: hw.InProcessCluster, *, tasks: int = 2) -> hw.Module:
    jobs = jobs_module()
    for module in (*ALL_MODULES, jobs):
        cluster.deploy(module, tasks=tasks)
    return jobs


@contextlib.contextmanager
def served(cluster: hw.InProcessCluster, *, auth: Auth | None = None, limits: ConnectionLimits = ConnectionLimits(),
           **options: Any) -> Iterator[str]:
    """`cluster`'s modules served on a free loopback port; yields the base URL."""
    with ServerThread(create_app(cluster, auth=auth, **options), limits=limits) as url:
        yield url


SERVER_START_S_MAX = 30


def start_serving(argv: list[str], port: int, *, cwd: Any, what: str) -> subprocess.Popen[str]:
    """Run a `headwater serve` command and return it once it answers health on `port`."""
    process = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + SERVER_START_S_MAX
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health").status_code == 200:
                return process
        except httpx.TransportError:
            if process.poll() is not None:
                break
            time.sleep(0.05)
    process.kill()
    raise AssertionError(f"{what} did not start:\n{process.communicate()[0]}")
