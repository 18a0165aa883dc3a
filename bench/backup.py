"""Workload 13 — backups: a full backup of a million events, an incremental one, a restore, and appends meanwhile.

N registration sign-ups (1,000,000; quick 100,000) are appended (full ack: processed into the
`users` PState) to an `InProcessCluster` with `--tasks` tasks. Then, with one client appending
(full ack, one event at a time) all along:

- a **full backup** into an empty destination: time, bytes and files copied, and the longest any
  task was held for the cut (`stall`);
- after 1% more sign-ups, an **incremental backup** into the same destination: what it copied
  against what it found there already;
- a **restore** of the latest backup into a new data directory, then `deploy` over it and a count
  of the users (the data is all there).

The client's append latency is reported for the seconds before the first backup and for the
appends sent while a backup ran.

    .venv/bin/python -m bench.backup [--quick] [--tasks N]
"""

from __future__ import annotations

import shutil
import threading
import time
from typing import Any

import headwater as hw
from bench.common import du_bytes
from bench.harness import Env, Section, fmt, table
from bench.restart import CHUNK, DAY, TIMESTAMP_MS, email, pwd_hash

BEFORE_S = 3.0  # how long the append latency is measured before the first backup


class Appender:
    """One client appending full-ack sign-ups one at a time, each latency kept with when it was sent."""

    def __init__(self, cluster: hw.InProcessCluster, first: int) -> None:
        from examples.registration import UserSignUp

        self._depot = cluster.depot("registration", "registrations")
        self._event = UserSignUp
        self._next = first
        self._stop = threading.Event()
        self.latencies: list[tuple[float, float]] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            i = self._next
            self._next += 1
            sent = time.perf_counter()
            self._depot.append(self._event(email(i), pwd_hash(i), TIMESTAMP_MS))
            self.latencies.append((sent, time.perf_counter() - sent))

    def between(self, start: float, stop: float) -> list[float]:
        return sorted(latency for sent, latency in self.latencies if start <= sent <= stop)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(60)
        return self._next


def _percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def _load(cluster: hw.InProcessCluster, start: int, stop: int) -> None:
    from examples.registration import UserSignUp

    depot = cluster.depot("registration", "registrations")
    for first in range(start, stop, CHUNK):
        depot.append_many([UserSignUp(email(i), pwd_hash(i), TIMESTAMP_MS)
                           for i in range(first, min(stop, first + CHUNK))])


def run(env: Env) -> Section:
    from examples.registration import registration

    events = 100_000 if env.quick else 1_000_000
    more = events // 100
    data, destination = env.root / "backup-data", env.root / "backup-destination"
    with hw.InProcessCluster(data) as cluster:
        cluster.deploy(registration, tasks=env.tasks)
        loading = time.perf_counter()
        _load(cluster, 0, events)
        print(f"  w13 loaded {events:,} events in {time.perf_counter() - loading:.1f}s", flush=True)
        appender = Appender(cluster, 10 * events)
        time.sleep(BEFORE_S)
        first_started = time.perf_counter()
        full = cluster.backup(destination)
        first_ended = time.perf_counter()
        _load(cluster, events, events + more)
        second_started = time.perf_counter()
        incremental = cluster.backup(destination)
        second_ended = time.perf_counter()
        appended = appender.stop() - 10 * events
        stored = cluster.query("registration", "signups_on")(DAY)
    before = appender.between(first_started - BEFORE_S, first_started)
    during = appender.between(first_started, first_ended) + appender.between(second_started, second_ended)
    print(f"  w13 full {full.duration_s:.2f}s {full.bytes_copied / 1e6:.1f} MB stall {full.stall_s * 1000:.1f} ms; "
          f"incremental {incremental.duration_s:.2f}s {incremental.bytes_copied / 1e6:.2f} MB", flush=True)

    restored = env.root / "backup-restored"
    restoring = time.perf_counter()
    hw.restore(destination, restored)
    restore_s = time.perf_counter() - restoring
    with hw.InProcessCluster(restored) as cluster:
        reopening = time.perf_counter()
        cluster.deploy(registration)
        counted = cluster.query("registration", "signups_on")(DAY)
        reopen_s = time.perf_counter() - reopening
    assert counted >= events + more, (counted, events + more)
    data_bytes = du_bytes(data)
    shutil.rmtree(data, ignore_errors=True)

    def backup_row(name: str, info: hw.BackupInfo, added: str) -> list[str]:
        return [name, added, f"{info.duration_s:.2f} s", f"{info.bytes_copied / 1e6:,.1f} MB ({info.files_copied})",
                f"{info.bytes_reused / 1e6:,.1f} MB ({info.files_reused})", f"{info.stall_s * 1000:.1f} ms"]

    rows = [
        backup_row("full backup (empty destination)", full, f"{events:,}"),
        backup_row("incremental backup (same destination)", incremental, f"+{more:,} (+{appended:,} by the client)"),
        ["restore (copy and check every file)", "", f"{restore_s:.2f} s", "", "", ""],
        ["deploy over the restored data, count the users", "", f"{reopen_s:.2f} s", "", "", ""],
    ]
    latency_rows = [[name, str(len(values)), fmt(_percentile(values, 0.5) * 1000),
                     fmt(_percentile(values, 0.99) * 1000), fmt(values[-1] * 1000 if values else float("nan"))]
                    for name, values in (("before the backups", before), ("sent during a backup", during))]
    markdown = "\n\n".join([
        f"{events:,} registration sign-ups (full ack, processed into the `users` PState), {env.tasks} tasks, "
        f"in process; data directory {data_bytes / 1e6:,.0f} MB. Copied and reused are bytes (files); the "
        "stall is the longest any task was held for the cut (an append's wait for a backup).",
        table(["step", "events", "time", "copied", "reused", "stall"], rows),
        "One client appending one sign-up at a time with a full ack, all along (ms):",
        table(["appends", "count", "p50", "p99", "max"], latency_rows),
    ])
    data_out: dict[str, Any] = {
        "events": events, "more": more, "tasks": env.tasks, "full": full.to_json(),
        "incremental": incremental.to_json(),
        "restore_s": restore_s, "reopen_s": reopen_s, "data_bytes": data_bytes, "stored": stored,
        "append_ms_before": [_percentile(before, 0.5) * 1000, _percentile(before, 0.99) * 1000],
        "append_ms_during": [_percentile(during, 0.5) * 1000, _percentile(during, 0.99) * 1000],
    }
    return Section("backup", "13. Backups", markdown, data_out)


def main() -> None:
    from bench.suite import standalone

    standalone(run)


if __name__ == "__main__":
    main()
