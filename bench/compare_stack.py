"""Workload 2 — the usual stack for the registration job: Redis stream → worker → PostgreSQL.

The request `XADD`s the sign-up to a Redis stream and blocks in `BLPOP` on its own reply list;
a worker process (`bench/stack_worker.py`, one thread per client) takes it with `XREADGROUP`,
runs the PostgreSQL transaction (the one-statement version of workload 1), and pushes the answer
after the commit. The latency is the time until the write is visible to readers and the caller
knows whether the user existed — what headwater's full-ack append returns after, measured again
here in alternation. Redis syncs its append-only file on every write (`appendfsync always`);
PostgreSQL commits with `synchronous_commit=on`.

    .venv/bin/python -m bench.compare_stack [--quick]
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import headwater as hw
from bench.common import Measured, closed_loop
from bench.compare_registration import HEADWATER, prepare_postgres
from bench.harness import Env, Section, alternate, best_peer_verdicts, throughput_table
from bench.plots import latency_cdf, throughput_vs_clients
from bench.stack_worker import STREAM
from examples.registration import UserSignUp, registration

STACK = "Redis stream → worker → PostgreSQL"
REPLY_TIMEOUT_S = 30
STREAM_LENGTH_MAX = 100_000
ROOT = Path(__file__).resolve().parent.parent


class Workers:
    """The worker process, restarted with as many threads as there are clients."""

    def __init__(self, redis_port: int, dsn: str) -> None:
        self.redis_port, self.dsn = redis_port, dsn
        self.process: subprocess.Popen[str] | None = None
        self.threads = 0

    def ensure(self, threads: int) -> None:
        if self.process is not None and self.threads == threads:
            return
        self.stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.stack_worker", "--redis-port", str(self.redis_port), "--dsn", self.dsn,
             "--threads", str(threads)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
            env=os.environ | {"PYTHONPATH": str(ROOT)})
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError("the stack worker did not start")
        self.threads = threads

    def pids(self) -> list[int]:
        return [self.process.pid] if self.process is not None else []

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


def stack_client(redis_port: int, ms: int, day: str, run: int, n: int) -> Callable[[int], Any]:
    import redis

    r = redis.Redis(host="127.0.0.1", port=redis_port)

    def op(i: int) -> bool:
        request = f"{run}-{n}-{i}"
        r.xadd(STREAM, {"id": request, "email": f"s{request}@example.com", "pwd": "h", "ms": ms, "day": day},
               maxlen=STREAM_LENGTH_MAX, approximate=True)
        reply = r.blpop([f"reply:{request}"], timeout=REPLY_TIMEOUT_S)
        if reply is None:
            raise TimeoutError(f"no reply for {request} within {REPLY_TIMEOUT_S}s")
        return reply[1] == b"1"

    op.close = r.close  # type: ignore[attr-defined]
    return op


def run(env: Env) -> Section:
    pg, redis_server = env.postgres(), env.redis()
    prepare_postgres(pg.dsn)
    workers = Workers(redis_server.port, pg.dsn)
    ms = int(time.time() * 1000)
    day = datetime.fromtimestamp(ms / 1000, tz=timezone.utc).date().isoformat()
    results: dict[tuple[str, int], Measured] = {}
    try:
        with hw.InProcessCluster(env.directory("w2-headwater")) as cluster:
            cluster.deploy(registration, tasks=env.tasks)
            depot = cluster.depot("registration", "registrations")
            workers.ensure(1)
            check = stack_client(redis_server.port, ms, day, -1, 0)
            assert check(0) is False and check(0) is True  # the second sign-up of the same email existed
            for run_index, clients, system in alternate(env, [HEADWATER, STACK]):
                measured = results.setdefault((system, clients), Measured(system, clients))
                if system == HEADWATER:
                    make = lambda n, r=run_index: (  # noqa: E731
                        lambda i: depot.append(UserSignUp(f"s{r}-{n}-{i}@example.com", "h", ms)))
                    measured.runs.append(closed_loop(make, clients, env.seconds))
                else:
                    workers.ensure(clients)
                    measured.runs.append(closed_loop(
                        lambda n, r=run_index: stack_client(redis_server.port, ms, day, r, n), clients, env.seconds,
                        close_client=lambda op: op.close(), server_pids=lambda: [*workers.pids(), *pg.pids(),
                                                                                  redis_server.pid]))
                last = measured.runs[-1]
                print(f"  w2 run {run_index + 1} {system:<40} clients={clients:<3} {last.ops_per_s:9,.0f}/s "
                      f"p50 {last.p50_ms:7.3f} ms p99 {last.p99_ms:7.3f} ms", flush=True)
    finally:
        workers.stop()
    measured_list = list(results.values())
    summaries = [m.summary() for m in measured_list]
    plots = [
        throughput_vs_clients(summaries, env.plots / "stack-throughput.png", "Registration vs the usual stack",
                              unit="sign-ups/s"),
        latency_cdf(summaries, env.plots / "stack-latency-1.png", "Time until the write is visible", clients=1),
        latency_cdf(summaries, env.plots / "stack-latency-16.png", "Time until the write is visible",
                    clients=max(env.clients)),
    ]
    markdown = "\n\n".join([
        throughput_table(measured_list, HEADWATER, unit="sign-ups/s"),
        *(f"![{p}](bench/{p})" for p in plots),
    ])
    return Section("stack", "2. The usual stack: Redis stream → worker → PostgreSQL", markdown,
                   {"measured": summaries}, plots,
                   best_peer_verdicts("2. usual stack", measured_list, HEADWATER, [STACK], unit="sign-ups/s"))


def main() -> None:
    from bench.suite import standalone

    standalone(run)


if __name__ == "__main__":
    main()
