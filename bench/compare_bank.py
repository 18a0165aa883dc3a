"""Workload 4 — event-sourced bank transfers with a projection of balances.

1,000 accounts are opened with the same balance; client threads transfer random small amounts
between random accounts (never overdrawing, so every transfer succeeds everywhere). An operation
ends when the transfer is durable **and** both balances in the projection show it — when a
reader of the balances would see it.

- headwater: `examples/bank.py`. A full-ack append to `transfers` returns after the debit on the
  sender's task and the credit the transfer hops to on the receiver's task are written: the
  `funds` PState is the projection and it is current when the append returns.
- eventsourcing (the Python library, https://eventsourcing.readthedocs.io): an `Account`
  aggregate with `Opened`/`Debited`/`Credited` events; `Bank.transfer` loads both accounts,
  debits one, credits the other and saves both in one atomic `save()` (optimistic concurrency:
  a conflicting transfer is retried). The projection is the library's `Projection` class writing
  a `balances` table and its tracking position in one transaction per event (a
  `TrackingRecorder` subclass, as its docs show).
  - on PostgreSQL it is run by the library's `ProjectionRunner` (subscription by LISTEN/NOTIFY);
  - on SQLite (WAL mode, `synchronous=FULL`: every commit synced) the library has no
    subscription (`SQLiteApplicationRecorder.subscribe` is not implemented), so a thread follows
    the application's notifications with `recorder.select_notifications` and calls the same
    `Projection.process_event`; the client wakes it after each save (what LISTEN/NOTIFY does for
    PostgreSQL), and it sleeps otherwise.
  The library's own `runner.wait()` polls every 100 ms and more; to be fair, clients here wait
  on an in-process condition the view signals right after each commit.

    .venv/bin/python -m bench.compare_bank [--quick]
"""

from __future__ import annotations

import os
import random
import threading
from typing import Any, Callable

import headwater as hw
from bench.common import Measured, closed_loop
from bench.harness import Env, Section, alternate, best_peer_verdicts, throughput_table
from bench.plots import latency_cdf, throughput_vs_clients
from examples.bank import Deposit, Transfer, bank

HEADWATER = "headwater (examples/bank.py, full ack)"
ES_SQLITE = "eventsourcing on SQLite + projection"
ES_POSTGRES = "eventsourcing on PostgreSQL + ProjectionRunner"
ACCOUNTS = 1_000
OPENING_BALANCE = 1_000_000_000
IDLE_WAIT_S = 0.1


class EventSourcingSystem:
    """The application the clients call, plus its running projection, on one backend."""

    def __init__(self, kind: str, env: dict[str, str]) -> None:
        from bench import es_bank as lib
        self.kind = kind
        self._stop = threading.Event()
        self._wake = threading.Event()  # set after each save: the in-process LISTEN/NOTIFY of the SQLite follower
        if kind == "postgres":
            from eventsourcing.projection import ProjectionRunner

            self.app = lib.Bank(env)
            self.runner = ProjectionRunner(application_class=lib.Bank, projection_class=lib.BalancesProjection,
                                           view_class=lib.PostgresBalances, env=env)
            self.runner.__enter__()
            self.view = self.runner.view
            self.follower = None
        else:
            from eventsourcing.persistence import InfrastructureFactory

            self.app = lib.Bank(env)
            view_env = dict(env, SQLITE_DBNAME=env["SQLITE_DBNAME"].replace(".db", "-balances.db"))
            self.view = InfrastructureFactory.construct(env=_environment("balances", view_env)).tracking_recorder(
                lib.SQLiteBalances)
            self.projection = lib.BalancesProjection(view=self.view)
            self.runner = None
            self.follower = threading.Thread(target=self._follow, args=(lib.Tracking,), daemon=True)
            self.follower.start()

    def _follow(self, tracking_class: Any) -> None:
        app, position = self.app, self.view.max_tracking_id(self.app.name) or 0
        while not self._stop.is_set():
            notifications = app.recorder.select_notifications(start=position + 1, limit=500)
            if not notifications:
                self._wake.wait(IDLE_WAIT_S)
                self._wake.clear()
                continue
            for notification in notifications:
                self.projection.process_event(app.mapper.to_domain_event(notification),
                                              tracking_class(app.name, notification.id))
                position = notification.id

    def open_accounts(self) -> None:
        self.app.open(range(ACCOUNTS), OPENING_BALANCE)
        self._wake.set()

    def transfer_and_wait(self, transfer_id: str, from_number: int, to_number: int, amount: int) -> None:
        position = self.app.transfer(transfer_id, from_number, to_number, amount)
        self._wake.set()
        self.view.progress.wait(position)

    def caught_up(self) -> None:
        last = self.app.recorder.max_notification_id() or 0
        self.view.progress.wait(last)

    def close(self) -> None:
        self._stop.set()
        if self.follower is not None:
            self.follower.join(5)
        if self.runner is not None:
            self.runner.__exit__(None, None, None)
        self.app.close()


def _environment(name: str, env: dict[str, str]) -> Any:
    from eventsourcing.utils import Environment

    return Environment(name, dict(os.environ) | env)


def transfer_args(run: int, n: int, i: int) -> tuple[str, int, int, int]:
    rng = random.Random(run * 1_000_003 + n * 10_007 + i)
    sender = rng.randrange(ACCOUNTS)
    receiver = (sender + 1 + rng.randrange(ACCOUNTS - 1)) % ACCOUNTS
    return f"t{run}-{n}-{i}", sender, receiver, rng.randint(1, 100)


def run(env: Env) -> Section:
    import psycopg

    pg = env.postgres()
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS eventsourcing")
        conn.execute("CREATE DATABASE eventsourcing")
    pg_env = {"PERSISTENCE_MODULE": "eventsourcing.postgres", "POSTGRES_DBNAME": "eventsourcing",
              "POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": str(pg.port), "POSTGRES_USER": "bench",
              "POSTGRES_PASSWORD": "", "POSTGRES_POOL_SIZE": str(max(env.clients) + 4),
              "POSTGRES_MAX_OVERFLOW": "8"}
    sqlite_dir = env.directory("w4-sqlite")
    sqlite_env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(sqlite_dir / "bank.db"),
                  "SQLITE_LOCK_TIMEOUT": "30"}
    systems: dict[str, EventSourcingSystem] = {}
    results: dict[tuple[str, int], Measured] = {}
    totals: dict[str, int] = {}
    try:
        for name, kind, config in ((ES_SQLITE, "sqlite", sqlite_env), (ES_POSTGRES, "postgres", pg_env)):
            system = EventSourcingSystem(kind, config)
            systems[name] = system
            system.open_accounts()
            system.caught_up()
        with hw.InProcessCluster(env.directory("w4-headwater")) as cluster:
            cluster.deploy(bank, tasks=env.tasks)
            cluster.depot("bank", "deposits").append_many([Deposit(n, OPENING_BALANCE) for n in range(ACCOUNTS)])
            transfers = cluster.depot("bank", "transfers")

            def headwater_client(run: int, n: int) -> Callable[[int], Any]:
                def op(i: int) -> None:
                    if transfers.append(Transfer(*transfer_args(run, n, i)))["transfer"] is not True:
                        raise RuntimeError("a transfer failed in headwater")
                return op

            def library_client(system: EventSourcingSystem) -> Callable[[int, int], Callable[[int], Any]]:
                return lambda run, n: (lambda i: system.transfer_and_wait(*transfer_args(run, n, i)))

            makers = {HEADWATER: headwater_client, ES_SQLITE: library_client(systems[ES_SQLITE]),
                      ES_POSTGRES: library_client(systems[ES_POSTGRES])}
            for run_index, clients, system_name in alternate(env, list(makers)):
                measured = results.setdefault((system_name, clients), Measured(system_name, clients))
                measured.runs.append(closed_loop(lambda n, m=makers[system_name], r=run_index: m(r, n), clients,
                                                 env.seconds, server_pids=pg.pids if system_name == ES_POSTGRES else None))
                last = measured.runs[-1]
                print(f"  w4 run {run_index + 1} {system_name:<48} clients={clients:<3} {last.ops_per_s:9,.0f}/s "
                      f"p50 {last.p50_ms:7.3f} ms p99 {last.p99_ms:7.3f} ms", flush=True)
            totals[HEADWATER] = cluster.query("bank", "total_funds")()
        for name, system in systems.items():
            system.caught_up()
            totals[name] = system.view.total()
    finally:
        for system in systems.values():
            system.close()
    expected = ACCOUNTS * OPENING_BALANCE
    conserved = {name: total == expected for name, total in totals.items()}
    measured_list = list(results.values())
    summaries = [m.summary() for m in measured_list]
    plots = [
        throughput_vs_clients(summaries, env.plots / "bank-throughput.png", "Bank transfers visible in the projection",
                              unit="transfers/s"),
        latency_cdf(summaries, env.plots / "bank-latency-1.png", "Transfer until the projection shows it", clients=1),
    ]
    markdown = "\n\n".join([
        f"{ACCOUNTS:,} accounts. Latency: from the transfer call until both new balances are in the projection.",
        throughput_table(measured_list, HEADWATER, unit="transfers/s"),
        "Money is conserved in every projection after the runs (sum of balances = "
        f"{expected:,}): " + ", ".join(f"{name}: {'yes' if ok else 'NO (' + str(totals[name]) + ')'}"
                                        for name, ok in conserved.items()) + ".",
        *(f"![{p}](bench/{p})" for p in plots),
    ])
    return Section("bank", "4. Event-sourced bank transfers with a projection", markdown,
                   {"measured": summaries, "totals": totals}, plots,
                   best_peer_verdicts("4. bank", measured_list, HEADWATER, [ES_SQLITE, ES_POSTGRES], unit="transfers/s"))


def main() -> None:
    from bench.suite import standalone

    standalone(run)


if __name__ == "__main__":
    main()
