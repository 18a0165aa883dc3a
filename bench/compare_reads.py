"""Workload 3 — point reads of a nested field: an order's shipping address.

The same orders (`examples/orders.py`: customer, shipping address, three line items) are loaded
into each system, then client threads read the shipping address of random orders:

- headwater in process: `cluster.pstate("orders", "orders")[order_id]["shipping"].get()`
  (an `Address` dataclass comes back);
- headwater over HTTP: the same read through `hw.connect(url)`, against `headwater serve
  examples/orders.py` running in its own process on 127.0.0.1;
- PostgreSQL: `SELECT doc #> '{shipping}' FROM orders WHERE id = $1` on a `jsonb` column
  (primary key on `id`; psycopg decodes the sub-document into a dict);
- Redis: `HGET order:<id> shipping` on a hash per order, JSON-decoded.

All four read the whole shipping sub-document: headwater stores an `Address` as one leaf value, so
`["shipping"]["city"]` is not a path it has; asking PostgreSQL and Redis for the same bytes keeps
the work equal.

    .venv/bin/python -m bench.compare_reads [--quick]
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import httpx
import msgspec

import headwater as hw
from bench.common import Measured, closed_loop
from bench.harness import Env, Section, alternate, best_peer_verdicts, throughput_table
from bench.peers import free_port
from bench.plots import latency_cdf, throughput_vs_clients
from examples.orders import Address, LineItem, NewOrder, orders_module

IN_PROCESS = "headwater in process"
OVER_HTTP = "headwater over HTTP (hw.connect)"
POSTGRES = "PostgreSQL jsonb #> path"
REDIS = "Redis HGET"
ROOT = Path(__file__).resolve().parent.parent
LOAD_BATCH = 2_000
CITIES = ["Springfield", "Portland", "Madison", "Austin", "Salem", "Dover", "Albany", "Helena"]


def make_orders(count: int, seed: int = 7) -> list[NewOrder]:
    rng = random.Random(seed)

    def uid() -> uuid.UUID:
        return uuid.UUID(int=rng.getrandbits(128), version=4)

    return [NewOrder(uid(), uid(), [LineItem(uid(), rng.randint(1, 5), rng.randint(100, 10_000)) for _ in range(3)],
                     Address(f"{rng.randint(1, 999)} Main St", rng.choice(CITIES), "IL", f"{rng.randint(10000, 99999)}"))
            for _ in range(count)]


def as_document(order: NewOrder) -> dict[str, Any]:
    return msgspec.to_builtins({"customer_id": order.customer_id, "shipping": order.shipping, "items": order.items})


class Server:
    """`headwater serve examples/orders.py` in its own process, on a free loopback port."""

    def __init__(self, data: Path, tasks: int) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "headwater.cli", "serve", "examples/orders.py", "--data", str(data),
             "--port", str(port), "--tasks", str(tasks)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ | {"PYTHONPATH": str(ROOT)})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/api/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        error = self.process.stderr.read().decode() if self.process.stderr and self.process.poll() is not None else ""
        self.stop()
        raise RuntimeError(f"headwater serve did not start: {error[-2000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
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
    server: Server | None = None
    http_note = ""
    results: dict[tuple[str, int], Measured] = {}
    with hw.InProcessCluster(env.directory("w3-headwater")) as cluster:
        cluster.deploy(orders_module, tasks=env.tasks)
        depot = cluster.depot("orders", "new_orders")
        for start in range(0, count, LOAD_BATCH):
            depot.append_many(orders[start:start + LOAD_BATCH])
        view = cluster.pstate("orders", "orders")
        remote = None
        try:
            server = Server(env.directory("w3-headwater-http"), env.tasks)
            remote = hw.connect(server.url, modules=[orders_module])
            remote_depot = remote.depot("orders", "new_orders")
            for start in range(0, count, LOAD_BATCH):
                remote_depot.append_many(orders[start:start + LOAD_BATCH])
        except Exception as e:  # noqa: BLE001 - the row says n/a and why; the other rows still run
            http_note = f"n/a: the HTTP server could not be used ({type(e).__name__}: {e})"
            print(f"  w3 {http_note}", flush=True)
            if server is not None:
                server.stop()
                server = None
        remote_view = remote.pstate("orders", "orders") if remote is not None and server is not None else None

        def in_process(run: int, n: int) -> Callable[[int], Any]:
            return lambda i: view[pick(ids, n, i)]["shipping"].get()

        def over_http(run: int, n: int) -> Callable[[int], Any]:
            assert remote_view is not None
            return lambda i: remote_view[pick(ids, n, i)]["shipping"].get()

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

        makers = {IN_PROCESS: in_process, POSTGRES: postgres, REDIS: redis_hget}
        if remote_view is not None:
            makers[OVER_HTTP] = over_http
        # Every system returns the same address before anything is timed.
        for order_id, shipping in expected.items():
            assert view[order_id]["shipping"].get() == shipping
            if remote_view is not None:
                assert remote_view[order_id]["shipping"].get() == shipping
        sample = orders[0]
        with psycopg.connect(pg.dsn, autocommit=True) as conn:
            got = conn.execute("SELECT doc #> '{shipping}' FROM orders WHERE id = %s", (sample.order_id,)).fetchone()[0]
        assert got == msgspec.to_builtins(sample.shipping), got
        assert json.loads(redis_server.client().hget(f"order:{sample.order_id}", "shipping")) == got
        try:
            for run_index, clients, system in alternate(env, list(makers)):
                measured = results.setdefault((system, clients), Measured(system, clients))
                close = (lambda op: op.close()) if system in (POSTGRES, REDIS) else None
                servers = {POSTGRES: pg.pids, REDIS: lambda: [redis_server.pid],
                           OVER_HTTP: lambda: [server.process.pid] if server else []}.get(system)
                measured.runs.append(closed_loop(lambda n, m=makers[system], r=run_index: m(r, n), clients, env.seconds,
                                                 close_client=close, server_pids=servers))
                last = measured.runs[-1]
                print(f"  w3 run {run_index + 1} {system:<34} clients={clients:<3} {last.ops_per_s:9,.0f}/s "
                      f"p50 {last.p50_ms * 1000:7.1f} µs p99 {last.p99_ms * 1000:7.1f} µs", flush=True)
        finally:
            if remote is not None:
                remote.close()
            if server is not None:
                server.stop()
    measured_list = list(results.values())
    summaries = [m.summary() for m in measured_list]
    plots = [
        throughput_vs_clients(summaries, env.plots / "reads-throughput.png", "Point reads of a nested field",
                              unit="reads/s"),
        latency_cdf(summaries, env.plots / "reads-latency-1.png", "Point read latency", clients=1),
        latency_cdf(summaries, env.plots / "reads-latency-16.png", "Point read latency", clients=max(env.clients)),
    ]
    parts = [f"{count:,} orders loaded in each system.", throughput_table(measured_list, IN_PROCESS, unit="reads/s")]
    if http_note:
        parts.append(f"headwater over HTTP: {http_note}")
    else:
        parts.append("The HTTP rows compare with the in-process row above them only through the table's ratio "
                     "column, which always divides headwater *in process* by the row; "
                     + _http_ratios(measured_list))
    parts += [f"![{p}](bench/{p})" for p in plots]
    verdicts = best_peer_verdicts("3. reads, in process", measured_list, IN_PROCESS, [POSTGRES, REDIS], unit="reads/s")
    verdicts += best_peer_verdicts("3. reads, over HTTP", measured_list, OVER_HTTP, [POSTGRES, REDIS], unit="reads/s")
    return Section("reads", "3. Point reads of a nested field", "\n\n".join(parts),
                   {"measured": summaries, "orders": count, "http_note": http_note}, plots, verdicts)


def _http_ratios(measured: list[Measured]) -> str:
    """headwater over HTTP against PostgreSQL and Redis, which are also reached over loopback."""
    by = {(m.system, m.clients): m for m in measured}
    parts = []
    for clients in sorted({m.clients for m in measured}):
        http = by.get((OVER_HTTP, clients))
        if http is None:
            continue
        pg, rd = by[(POSTGRES, clients)], by[(REDIS, clients)]
        parts.append(f"{clients} client{'s' if clients > 1 else ''}: {http.ops_per_s / pg.ops_per_s:.2f}× PostgreSQL's "
                     f"and {http.ops_per_s / rd.ops_per_s:.2f}× Redis's throughput, p50 {http.p50_ms / pg.p50_ms:.2f}× "
                     f"and {http.p50_ms / rd.p50_ms:.2f}×")
    return "headwater over HTTP ÷ peer (both across a socket): " + "; ".join(parts) + "."


def main() -> None:
    from bench.suite import standalone

    standalone(run)


if __name__ == "__main__":
    main()
