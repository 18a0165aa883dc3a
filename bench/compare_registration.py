"""Workload 1 — registration, the seed essay's example, against PostgreSQL at equal durability.

The job: check whether the email is registered, register it, bump the per-day sign-up counter,
and tell the caller whether the user already existed.

- headwater: `cluster.depot("registration", "registrations").append(UserSignUp(...))` in process
  (`examples/registration.py`), full ack: the record is fsynced, the topology ran, its writes are
  visible, and its return value comes back. Deployed with the suite's task count (default 2, one
  per core) and, in a second cluster, with one task.
- PostgreSQL, as a transaction: `SELECT` the user, `INSERT` it, upsert `signups_by_day`,
  `COMMIT` (psycopg 3, prepared statements, one connection per client thread, TCP loopback).
- PostgreSQL, one statement: the same work as one `INSERT ... ON CONFLICT DO NOTHING` CTE with
  the counter upsert, in one round trip: the fastest way we know to do it in PostgreSQL.

Every sign-up happens "now", so all of them bump the same day's counter — in PostgreSQL that row
is locked from the upsert until the commit is flushed; in headwater each task keeps its own
per-day counter (the example's design) and the query adds them up.

    .venv/bin/python -m bench.compare_registration [--quick]
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any, Callable

import headwater as hw
from bench.common import Measured, closed_loop
from bench.harness import Env, Section, alternate, best_peer_verdicts, throughput_table
from bench.plots import latency_cdf, throughput_vs_clients
from examples.registration import UserSignUp, registration

HEADWATER = "headwater full-ack append (in process)"
HEADWATER_ONE_TASK = "headwater full-ack append, 1 task"
LOCAL_WORKERS = 2
HEADWATER_LOCAL = f"headwater full-ack append, LocalCluster of {LOCAL_WORKERS} workers"
PG_TXN = "PostgreSQL transaction (SELECT, INSERT, upsert)"
PG_ONE = "PostgreSQL one statement (CTE)"

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (email text PRIMARY KEY, pwd_hash text NOT NULL, registered_ms bigint NOT NULL);
CREATE TABLE IF NOT EXISTS signups_by_day (day date PRIMARY KEY, n bigint NOT NULL);
"""
SELECT_USER = "SELECT 1 FROM users WHERE email = %s"
INSERT_USER = "INSERT INTO users (email, pwd_hash, registered_ms) VALUES (%s, %s, %s)"
BUMP_DAY = "INSERT INTO signups_by_day (day, n) VALUES (%s, 1) ON CONFLICT (day) DO UPDATE SET n = signups_by_day.n + 1"
ONE_STATEMENT = """
WITH inserted AS (
  INSERT INTO users (email, pwd_hash, registered_ms) VALUES (%(email)s, %(pwd)s, %(ms)s)
  ON CONFLICT (email) DO NOTHING RETURNING 1
), counted AS (
  INSERT INTO signups_by_day (day, n) SELECT %(day)s, 1 FROM inserted
  ON CONFLICT (day) DO UPDATE SET n = signups_by_day.n + 1 RETURNING 1
)
SELECT NOT EXISTS (SELECT 1 FROM inserted) AS already_registered, (SELECT count(*) FROM counted)
"""


def postgres_transaction(conn: Any, email: str, pwd: str, ms: int, day: str) -> bool:
    with conn.transaction():
        already = conn.execute(SELECT_USER, (email,)).fetchone() is not None
        if not already:
            conn.execute(INSERT_USER, (email, pwd, ms))
            conn.execute(BUMP_DAY, (day,))
    return already


def postgres_one_statement(conn: Any, email: str, pwd: str, ms: int, day: str) -> bool:
    row = conn.execute(ONE_STATEMENT, {"email": email, "pwd": pwd, "ms": ms, "day": day}).fetchone()
    return bool(row[0])


def prepare_postgres(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SCHEMA)


def check_semantics(depot: Any, dsn: str) -> None:
    """Both sides answer False for a new user and True for a repeat, before anything is timed."""
    import psycopg

    ms = int(time.time() * 1000)
    day = datetime.fromtimestamp(ms / 1000, tz=timezone.utc).date().isoformat()
    assert depot.append(UserSignUp("check@example.com", "h", ms))["register"] is False
    assert depot.append(UserSignUp("check@example.com", "h", ms))["register"] is True
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert postgres_transaction(conn, "check@example.com", "h", ms, day) is False
        assert postgres_transaction(conn, "check@example.com", "h", ms, day) is True
        assert postgres_one_statement(conn, "check2@example.com", "h", ms, day) is False
        assert postgres_one_statement(conn, "check2@example.com", "h", ms, day) is True


def run(env: Env) -> Section:
    import psycopg

    pg = env.postgres()
    prepare_postgres(pg.dsn)
    with hw.InProcessCluster(env.directory("w1-headwater")) as cluster, \
            hw.InProcessCluster(env.directory("w1-headwater-one-task")) as one_task_cluster, \
            hw.LocalCluster(env.directory("w1-headwater-local"), workers=LOCAL_WORKERS) as local_cluster:
        cluster.deploy(registration, tasks=env.tasks)
        depot = cluster.depot("registration", "registrations")
        one_task_cluster.deploy(registration, tasks=1)
        one_task_depot = one_task_cluster.depot("registration", "registrations")
        local_cluster.deploy(registration, tasks=LOCAL_WORKERS)  # a task per worker
        local_depot = local_cluster.depot("registration", "registrations")
        check_semantics(depot, pg.dsn)
        ms = int(time.time() * 1000)
        day = datetime.fromtimestamp(ms / 1000, tz=timezone.utc).date().isoformat()

        def headwater_client(run: int, n: int) -> Callable[[int], Any]:
            return lambda i: depot.append(UserSignUp(f"r{run}-c{n}-{i}@example.com", "h", ms))

        def headwater_one_task_client(run: int, n: int) -> Callable[[int], Any]:
            return lambda i: one_task_depot.append(UserSignUp(f"r{run}-c{n}-{i}@example.com", "h", ms))

        def headwater_local_client(run: int, n: int) -> Callable[[int], Any]:
            return lambda i: local_depot.append(UserSignUp(f"r{run}-c{n}-{i}@example.com", "h", ms))

        def postgres_client(fn: Callable[..., bool], prefix: str) -> Callable[[int, int], Callable[[int], Any]]:
            def make(run: int, n: int) -> Callable[[int], Any]:
                conn = psycopg.connect(pg.dsn, autocommit=True)
                op = lambda i: fn(conn, f"{prefix}{run}-c{n}-{i}@example.com", "h", ms, day)  # noqa: E731
                op.conn = conn  # type: ignore[attr-defined]
                return op
            return make

        makers = {HEADWATER: headwater_client, PG_TXN: postgres_client(postgres_transaction, "t"),
                  PG_ONE: postgres_client(postgres_one_statement, "o"), HEADWATER_LOCAL: headwater_local_client}
        if env.tasks != 1:
            makers[HEADWATER_ONE_TASK] = headwater_one_task_client
        headwaters = (HEADWATER, HEADWATER_ONE_TASK, HEADWATER_LOCAL)
        results: dict[tuple[str, int], Measured] = {}
        for run_index, clients, system in alternate(env, list(makers)):
            make = makers[system]
            measured = results.setdefault((system, clients), Measured(system, clients))
            is_headwater = system in headwaters
            measured.runs.append(closed_loop(lambda n, m=make, r=run_index: m(r, n), clients, env.seconds,
                                             close_client=None if is_headwater else (lambda op: op.conn.close()),
                                             server_pids=None if is_headwater else pg.pids))
            last = measured.runs[-1]
            print(f"  w1 run {run_index + 1} {system:<48} clients={clients:<3} {last.ops_per_s:9,.0f}/s "
                  f"p50 {last.p50_ms:7.3f} ms p99 {last.p99_ms:7.3f} ms", flush=True)
        # The answers agree: as many users as sign-ups counted, on both sides.
        headwater_count = cluster.query("registration", "signups_on")(day)
        headwater_count += one_task_cluster.query("registration", "signups_on")(day)
        headwater_count += local_cluster.query("registration", "signups_on")(day)
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        users = conn.execute("SELECT count(*) FROM users").fetchone()[0]
        counted = conn.execute("SELECT coalesce(sum(n), 0) FROM signups_by_day").fetchone()[0]
    assert users == counted, (users, counted)
    measured = list(results.values())
    summaries = [m.summary() for m in measured]
    plots = [
        throughput_vs_clients(summaries, env.plots / "registration-throughput.png", "Registration: sign-ups/s",
                              unit="sign-ups/s"),
        latency_cdf(summaries, env.plots / "registration-latency-1.png", "Registration latency", clients=1),
        latency_cdf(summaries, env.plots / "registration-latency-16.png", "Registration latency", clients=max(env.clients)),
    ]
    best_pg = {c: max((m for m in measured if m.clients == c and m.system not in headwaters),
                      key=lambda m: m.ops_per_s) for c in env.clients}
    best_hw = {c: max((m for m in measured if m.clients == c and m.system in headwaters), key=lambda m: m.ops_per_s)
               for c in env.clients}
    verdict = ", ".join(f"{c} client{'s' if c > 1 else ''}: {best_hw[c].ops_per_s / best_pg[c].ops_per_s:.2f}×"
                        + {HEADWATER_ONE_TASK: " (1 task)", HEADWATER_LOCAL: f" ({LOCAL_WORKERS} workers)"}.get(best_hw[c].system, "")
                        for c in env.clients)
    markdown = "\n\n".join([
        f"The ratio columns divide the headwater row with {env.tasks} tasks by each row.",
        throughput_table(measured, HEADWATER, unit="sign-ups/s"),
        f"The faster headwater row ÷ the faster PostgreSQL variant, throughput — {verdict} (goal: ≥ 2×).",
        f"Both sides counted every sign-up: headwater's `signups_on` queries say {headwater_count:,} for the day; "
        f"PostgreSQL holds {users:,} users and {counted:,} counted sign-ups.",
        *(f"![{p}](bench/{p})" for p in plots),
    ])
    verdicts = best_peer_verdicts("1. registration", measured, list(headwaters), [PG_TXN, PG_ONE], unit="sign-ups/s",
                                  goal=2.0, labels={HEADWATER: f"headwater with {env.tasks} tasks",
                                                    HEADWATER_ONE_TASK: "headwater with 1 task",
                                                    HEADWATER_LOCAL: f"headwater on {LOCAL_WORKERS} worker processes"})
    return Section("registration", "1. Registration (the seed essay's example)", markdown,
                   {"measured": summaries, "headwater_count": headwater_count, "postgres_users": users}, plots,
                   verdicts)


def main() -> None:
    from bench.suite import standalone

    standalone(run)


if __name__ == "__main__":
    main()
