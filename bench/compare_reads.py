"""Workload 3 — point reads of a nested field: an order's shipping address.

The same orders (`examples/orders.py`: customer, shipping address, three line items) are loaded
into each system, then client threads read the shipping address of random orders:

- headwater in process: `cluster.pstate("orders", "orders")[order_id]["shipping"].get()`
  (an `Address` dataclass comes back);
- headwater over HTTP: the same read through `hw.connect(url)`, against `headwater serve
  examples.orders` running in its own process on 127.0.0.1, three times: with its tasks in the
  server process (the default, `--workers 0`) and with them in one and in two worker processes
  (`--workers 1`, `--workers 2`: a `LocalCluster`; the server's CPU column counts the workers
  too). The app is named as a module, not as the file `examples/orders.py`: a module loaded from
  a file path travels to the workers by value, and its dataclasses' string annotations
  (`uuid.UUID`) then fail there with `NameError: name 'uuid' is not defined`;
- PostgreSQL: `SELECT doc #> '{shipping}' FROM orders WHERE id = $1` on a `jsonb` column
  (primary key on `id`; psycopg decodes the sub-document into a dict);
- Redis: `HGET order:<id> shipping` on a hash per order, JSON-decoded.

All four read the whole shipping sub-document: headwater stores an `Address` as one leaf value, so
`["shipping"]["city"]` is not a path it has; asking PostgreSQL and Redis for the same bytes keeps
the work equal.

    .venv/bin/python -m bench.compare_reads [--quick]
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec

import headwater as hw
from bench.common import Measured, closed_loop
from bench.harness import Env, Section, alternate, best_peer_verdicts, ratio, table, throughput_table
from bench.peers import free_port
from bench.plots import latency_cdf, throughput_vs_clients
from examples.orders import Address, LineItem, NewOrder, orders_module

IN_PROCESS = "headwater in process"
OVER_HTTP = "headwater over HTTP (in-process server)"
SERVE_WORKERS = (1, 2)  # `headwater serve --workers N` rows beside the in-process server's (--workers 0)
POSTGRES = "PostgreSQL jsonb #> path"
REDIS = "Redis HGET"
ROOT = Path(__file__).resolve().parent.parent
SERVE_APP = "examples.orders"  # what `headwater serve` deploys (importable from ROOT, in the workers too)
LOAD_BATCH = 2_000
SERVER_START_S = 60.0  # how long `headwater serve` may take to answer /api/health
SERVER_STOP_S = 30.0  # how long it may take to stop after SIGTERM before it is killed
CITIES = ["Springfield", "Portland", "Madison", "Austin", "Salem", "Dover", "Albany", "Helena"]


def make_orders(count: int, seed: int = 7) -> list[NewOrder]:
    rng = random.Random(seed)

    def uid() -> uuid.UUID:
        return uuid.UUID(int=rng.getrandbits(128), version=4)

    return [NewOrder(uid(), uid(), [LineItem(uid(), rng.randint(1, 5), rng.randint(100, 10_000)) for _ in range(3)],
                     Address(f"{rng.randint(1, 999)} Main St", rng.choice(CITIES), "IL",
                             f"{rng.randint(10000, 99999)}"))
            for _ in range(count)]


def over_http(workers: int) -> str:
    """The row of `headwater serve --workers <workers>` (0: the tasks in the server process)."""
    return OVER_HTTP if workers == 0 else f"headwater over HTTP (--workers {workers})"


def as_document(order: NewOrder) -> dict[str, Any]:
    return msgspec.to_builtins({"customer_id": order.customer_id, "shipping": order.shipping, "items": order.items})


class Server:
    """`headwater serve examples.orders [--workers N]` in its own process, on a free loopback port.

    Its data directory is `data` (a directory of the benchmark's temporary root) and its output
    goes to `data` + `.log` beside it (a pipe nobody reads could fill and stall it). It runs in a
    session of its own, with the worker processes it starts: `stop()` ends the server and then
    whatever of its process group outlived it.
    """

    def __init__(self, data: Path, tasks: int, workers: int = 0) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.workers = workers
        self.log = data.with_suffix(".log")
        with open(self.log, "wb") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [sys.executable, "-m", "headwater.cli", "serve", SERVE_APP, "--data", str(data),
                 "--port", str(port), "--tasks", str(tasks), "--workers", str(workers)],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=os.environ | {"PYTHONPATH": str(ROOT)},
                start_new_session=True)
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/api/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self._exited():
                break
            time.sleep(0.05)
        output = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
        raise RuntimeError(f"headwater serve --workers {self.workers} did not start; its output: {output}")

    def _exited(self) -> bool:
        """Whether the server has exited, without reaping it: its process group stays reachable by id."""
        if self.process.returncode is not None:
            return True
        return os.waitid(os.P_PID, self.process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None

    def pids(self) -> list[int]:
        """The server process and its children (the worker processes with --workers N)."""
        if self._exited():
            return []
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True).stdout
        return [self.process.pid, *(int(p) for p in out.split())]

    def stop(self) -> None:
        if self.process.returncode is None:
            if not self._exited():
                self.process.terminate()
            deadline = time.monotonic() + SERVER_STOP_S
            while not self._exited() and time.monotonic() < deadline:
                time.sleep(0.05)
            # The server is stopped or still running, and not reaped: its group id is still its own.
            # Killing the group ends it (if it outstayed SERVER_STOP_S) and any worker it left behind.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def load_postgres(dsn: str, orders: list[NewOrder]) -> None:
    import psycopg
    from psycopg.types.json import Jsonb

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS orders")
        conn.execute("CREATE TABLE orders (id uuid PRIMARY KEY, doc jsonb NOT NULL)")
        with conn.cursor() as cur, cur.copy("COPY orders (id, doc) FROM STDIN") as copy:
            for order in orders:
                copy.write_row((order.order_id, Jsonb(as_document(order))))
        conn.execute("VACUUM ANALYZE orders")


def load_redis(client: Any, orders: list[NewOrder]) -> None:
    pipe = client.pipeline(transaction=False)
    for i, order in enumerate(orders):
        doc = as_document(order)
        pipe.hset(f"order:{order.order_id}", mapping={k: json.dumps(v) for k, v in doc.items()})
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()


def pick(ids: list[Any], n: int, i: int) -> Any:
    return ids[(n * 7919 + i * 104_729) % len(ids)]


def run(env: Env) -> Section:
    import psycopg
    import redis

    count = 5_000 if env.quick else 20_000
    orders = make_orders(count)
    ids = [o.order_id for o in orders]
    expected = {o.order_id: o.shipping for o in orders[:50]}
    pg, redis_server = env.postgres(), env.redis()
    load_postgres(pg.dsn, orders)
    load_redis(redis_server.client(), orders)
    http_notes: dict[str, str] = {}  # HTTP row -> why it could not be measured
    results: dict[tuple[str, int], Measured] = {}
    # Every server is stopped on the way out, whatever happens after it started.
    with hw.InProcessCluster(env.directory("w3-headwater")) as cluster, contextlib.ExitStack() as servers:
        cluster.deploy(orders_module, tasks=env.tasks)
        depot = cluster.depot("orders", "new_orders")
        for start in range(0, count, LOAD_BATCH):
            depot.append_many(orders[start:start + LOAD_BATCH])
        view = cluster.pstate("orders", "orders")
        remote_views: dict[str, Any] = {}  # HTTP row -> the orders PState through hw.connect
        server_pids: dict[str, Callable[[], list[int]]] = {}
        for workers in (0, *SERVE_WORKERS):
            system = over_http(workers)
            try:
                server = Server(env.directory(f"w3-headwater-http-workers-{workers}"), env.tasks, workers)
                servers.callback(server.stop)
                remote = hw.connect(server.url, modules=[orders_module])
                servers.callback(remote.close)  # before the server stops
                remote_depot = remote.depot("orders", "new_orders")
                for start in range(0, count, LOAD_BATCH):
                    remote_depot.append_many(orders[start:start + LOAD_BATCH])
            except Exception as e:  # the row says n/a and why; the other rows still run
                http_notes[system] = f"n/a: the HTTP server could not be used ({type(e).__name__}: {e})"
                print(f"  w3 {system}: {http_notes[system]}", flush=True)
                continue
            remote_views[system] = remote.pstate("orders", "orders")
            server_pids[system] = server.pids

        def in_process(run: int, n: int) -> Callable[[int], Any]:
            return lambda i: view[pick(ids, n, i)]["shipping"].get()

        def reader_over_http(system: str) -> Callable[[int, int], Callable[[int], Any]]:
            remote_view = remote_views[system]
            return lambda run, n: lambda i: remote_view[pick(ids, n, i)]["shipping"].get()

        def postgres(run: int, n: int) -> Callable[[int], Any]:
            conn = psycopg.connect(pg.dsn, autocommit=True)
            op = lambda i: conn.execute("SELECT doc #> '{shipping}' FROM orders WHERE id = %s",  # noqa: E731
                                        (pick(ids, n, i),)).fetchone()[0]
            op.close = conn.close  # type: ignore[attr-defined]
            return op

        def redis_hget(run: int, n: int) -> Callable[[int], Any]:
            client = redis.Redis(host="127.0.0.1", port=redis_server.port)
            op = lambda i: json.loads(client.hget(f"order:{pick(ids, n, i)}", "shipping"))  # noqa: E731
            op.close = client.close  # type: ignore[attr-defined]
            return op

        # The order of the table's rows: headwater in process, over HTTP by worker count, the peers.
        makers = {IN_PROCESS: in_process, **{system: reader_over_http(system) for system in remote_views},
                  POSTGRES: postgres, REDIS: redis_hget}
        # Every system returns the same address before anything is timed.
        for order_id, shipping in expected.items():
            assert view[order_id]["shipping"].get() == shipping
            for remote_view in remote_views.values():
                assert remote_view[order_id]["shipping"].get() == shipping
        sample = orders[0]
        with psycopg.connect(pg.dsn, autocommit=True) as conn:
            got = conn.execute("SELECT doc #> '{shipping}' FROM orders WHERE id = %s", (sample.order_id,)).fetchone()[0]
        assert got == msgspec.to_builtins(sample.shipping), got
        assert json.loads(redis_server.client().hget(f"order:{sample.order_id}", "shipping")) == got
        for run_index, clients, system in alternate(env, list(makers)):
            measured = results.setdefault((system, clients), Measured(system, clients))
            close = (lambda op: op.close()) if system in (POSTGRES, REDIS) else None
            pids = {POSTGRES: pg.pids, REDIS: lambda: [redis_server.pid], **server_pids}.get(system)
            measured.runs.append(closed_loop(lambda n, m=makers[system], r=run_index: m(r, n), clients, env.seconds,
                                             close_client=close, server_pids=pids))
            last = measured.runs[-1]
            print(f"  w3 run {run_index + 1} {system:<40} clients={clients:<3} {last.ops_per_s:9,.0f}/s "
                  f"p50 {last.p50_ms * 1000:7.1f} µs p99 {last.p99_ms * 1000:7.1f} µs", flush=True)
    measured_list = list(results.values())
    summaries = [m.summary() for m in measured_list]
    plots = [
        throughput_vs_clients(summaries, env.plots / "reads-throughput.png", "Point reads of a nested field",
                              unit="reads/s"),
        latency_cdf(summaries, env.plots / "reads-latency-1.png", "Point read latency", clients=1),
        latency_cdf(summaries, env.plots / "reads-latency-16.png", "Point read latency", clients=max(env.clients)),
    ]
    http_rows = [over_http(workers) for workers in (0, *SERVE_WORKERS)]
    parts = [f"{count:,} orders loaded in each system.", throughput_table(measured_list, IN_PROCESS, unit="reads/s")]
    parts += [f"{system}: {note}" for system, note in http_notes.items()]
    if any(system not in http_notes for system in http_rows):
        parts.append("The HTTP rows are `headwater serve` with its tasks in the server process (`--workers 0`, the "
                     "default) and in one and two worker processes (`--workers N`, a `LocalCluster`); their CPU in "
                     "servers counts the server and its workers. They compare with the in-process row above them "
                     "only through the table's ratio column, which always divides headwater *in process* by the "
                     "row. Against the peers, which are also reached over loopback:\n\n"
                     + _http_ratios(measured_list, [s for s in http_rows if s not in http_notes]))
    parts += [f"![{p}](bench/{p})" for p in plots]
    verdicts = best_peer_verdicts("3. reads, in process", measured_list, IN_PROCESS, [POSTGRES, REDIS], unit="reads/s")
    verdicts += best_peer_verdicts("3. reads, over HTTP", measured_list, http_rows, [POSTGRES, REDIS], unit="reads/s",
                                   labels={system: system.removeprefix("headwater over HTTP ").strip("()")
                                           for system in http_rows})
    # http_note: why the in-process server's row is missing (bench/analysis.py reads it), "" when it is there.
    return Section("reads", "3. Point reads of a nested field", "\n\n".join(parts),
                   {"measured": summaries, "orders": count, "http_note": http_notes.get(OVER_HTTP, ""),
                    "http_notes": http_notes}, plots, verdicts)


def _http_ratios(measured: list[Measured], http_rows: list[str]) -> str:
    """Each headwater-over-HTTP row ÷ PostgreSQL and ÷ Redis (all across a socket), per client count."""
    by = {(m.system, m.clients): m for m in measured}
    rows = []
    for clients in sorted({m.clients for m in measured}):
        pg, rd = by[(POSTGRES, clients)], by[(REDIS, clients)]
        for system in http_rows:
            http = by.get((system, clients))
            if http is not None:
                rows.append([str(clients), system, ratio(http.ops_per_s, pg.ops_per_s),
                             ratio(http.ops_per_s, rd.ops_per_s), ratio(http.p50_ms, pg.p50_ms),
                             ratio(http.p50_ms, rd.p50_ms)])
    return table(["clients", "headwater over HTTP", "throughput ÷ PostgreSQL", "÷ Redis", "p50 ÷ PostgreSQL",
                  "÷ Redis"], rows)


def main() -> None:
    from bench.suite import standalone

    standalone(run)


if __name__ == "__main__":
    main()
