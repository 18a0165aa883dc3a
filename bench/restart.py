"""Workload 6 — restart after a million appended and processed events; disk and memory per event.

headwater: a child process appends N registration sign-ups (`append_many`, full ack, 5,000 at a
time: every event durable and processed into the `users` PState) and closes the cluster; a fresh
child process then times `InProcessCluster(path)` + `deploy(registration)` + the first successful
read of a user — time until serving — and reports its resident memory. Disk is `du` of the data
directory after the close.

The peers hold the same end state — N users and the per-day counter — loaded the fast way
(PostgreSQL `COPY`, Redis pipelined `HSET`; neither keeps the events themselves), and are
restarted the same way: a clean stop, a start, and the clock stops at the first successful read
of a user row (PostgreSQL) or hash (Redis, which answers `LOADING` until its AOF is replayed).

    .venv/bin/python -m bench.restart [--quick]          # the comparison
    .venv/bin/python -m bench.restart load DIR N         # the child processes
    .venv/bin/python -m bench.restart reopen DIR
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import du_bytes, rss_bytes
from bench.harness import Env, Section, Verdict, fmt, table

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 5_000
TIMESTAMP_MS = 1_700_000_000_000
DAY = "2023-11-14"


def email(i: int) -> str:
    return f"user{i}@example.com"


def pwd_hash(i: int) -> str:
    """A bcrypt-shaped hash (60 characters, mostly random): real data compresses about this badly."""
    digest = hashlib.sha512(i.to_bytes(8, "little")).digest()
    return "$2b$12$" + base64.b64encode(digest, b"./").decode()[:53]


# ---- the child processes ----------------------------------------------------------------------
def child_load(directory: str, events: int, tasks: int) -> dict[str, Any]:
    import headwater as hw
    from examples.registration import UserSignUp, registration

    baseline = rss_bytes()
    started = time.perf_counter()
    cluster = hw.InProcessCluster(directory)
    cluster.deploy(registration, tasks=tasks)
    depot = cluster.depot("registration", "registrations")
    for start in range(0, events, CHUNK):
        depot.append_many([UserSignUp(email(i), pwd_hash(i), TIMESTAMP_MS) for i in range(start, min(events, start + CHUNK))])
    loaded = time.perf_counter()
    counted = cluster.query("registration", "signups_on")(DAY)
    assert counted == events, (counted, events)
    close_started = time.perf_counter()
    cluster.close()
    closed = time.perf_counter()
    return {"load_s": loaded - started, "close_s": closed - close_started,
            "maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "baseline_rss": baseline}


def child_reopen(directory: str, events: int) -> dict[str, Any]:
    import headwater as hw
    from examples.registration import registration

    baseline = rss_bytes()
    started = time.perf_counter()
    cluster = hw.InProcessCluster(directory)
    cluster.deploy(registration)
    users = cluster.pstate("registration", "users")
    first = users[email(events // 2)]["pwd_hash"].get()
    serving = time.perf_counter() - started
    assert first == pwd_hash(events // 2), first
    rss_serving = rss_bytes()
    # Then touch a spread of users, as a serving process would.
    touched = 0
    for i in range(0, events, max(1, events // 10_000)):
        touched += users[email(i)]["pwd_hash"].get() == pwd_hash(i)
    rss_touched = rss_bytes()
    count = cluster.query("registration", "signups_on")(DAY)
    cluster.close()
    return {"serving_s": serving, "baseline_rss": baseline, "rss_serving": rss_serving, "rss_touched": rss_touched,
            "touched": touched, "counted": count}


def _child(*args: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "bench.restart", *args], cwd=ROOT, capture_output=True, text=True,
                         env=os.environ | {"PYTHONPATH": str(ROOT)})
    if out.returncode != 0:
        raise RuntimeError(f"bench.restart {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---- the peers --------------------------------------------------------------------------------
def postgres_side(env: Env, events: int) -> dict[str, Any]:
    import psycopg

    pg = env.postgres()
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
        before = du_bytes(str(pg.data))
        conn.execute("DROP TABLE IF EXISTS restart_users; DROP TABLE IF EXISTS restart_signups_by_day")
        conn.execute("CREATE TABLE restart_users (email text PRIMARY KEY, pwd_hash text NOT NULL, registered_ms bigint NOT NULL);"
                     "CREATE TABLE restart_signups_by_day (day date PRIMARY KEY, n bigint NOT NULL)")
        started = time.perf_counter()
        with conn.cursor() as cur, cur.copy("COPY restart_users FROM STDIN") as copy:
            for i in range(events):
                copy.write_row((email(i), pwd_hash(i), TIMESTAMP_MS))
        conn.execute("INSERT INTO restart_signups_by_day VALUES (%s, %s)", (DAY, events))
        load_s = time.perf_counter() - started
        conn.execute("VACUUM ANALYZE restart_users")
        conn.execute("CHECKPOINT")
        relation = conn.execute("SELECT pg_total_relation_size('restart_users')").fetchone()[0]
        after = du_bytes(str(pg.data))
    stop_started = time.perf_counter()
    pg.stop()
    stop_s = time.perf_counter() - stop_started
    started = time.perf_counter()
    pg.start()
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pwd_hash FROM restart_users WHERE email = %s", (email(events // 2),)).fetchone()
        serving = time.perf_counter() - started
        assert row == (pwd_hash(events // 2),), row
        rss = sum(rss_bytes(pid) for pid in pg.pids())
        conn.execute("DROP TABLE restart_users; DROP TABLE restart_signups_by_day")
    return {"load_s": load_s, "stop_s": stop_s, "serving_s": serving, "disk_bytes": after - before,
            "relation_bytes": relation, "rss": rss}


def redis_side(env: Env, events: int) -> dict[str, Any]:
    server = env.redis()
    client = server.client()
    client.flushall()
    client.bgrewriteaof()  # start from a compact file so that its size is this data set's
    while client.info("persistence").get("aof_rewrite_in_progress"):
        time.sleep(0.05)
    before = du_bytes(str(server.root))
    used_before = client.info("memory")["used_memory_rss"]
    started = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    for i in range(events):
        pipe.hset(f"user:{email(i)}", mapping={"pwd_hash": pwd_hash(i), "registered_ms": TIMESTAMP_MS})
        if i % 5_000 == 4_999:
            pipe.execute()
    pipe.hincrby("signups_by_day", DAY, events)
    pipe.execute()
    load_s = time.perf_counter() - started
    disk = du_bytes(str(server.root)) - before
    client.close()
    stop_started = time.perf_counter()
    server.stop()
    stop_s = time.perf_counter() - stop_started
    started = time.perf_counter()
    server.start()  # returns once a read is answered (not LOADING)
    client = server.client()
    value = client.hget(f"user:{email(events // 2)}", "pwd_hash")
    serving = time.perf_counter() - started
    assert value == pwd_hash(events // 2).encode(), value
    rss = client.info("memory")["used_memory_rss"]
    client.flushall()
    client.close()
    return {"load_s": load_s, "stop_s": stop_s, "serving_s": serving, "disk_bytes": disk, "rss": rss,
            "rss_data": rss - used_before}


# ---- the comparison ---------------------------------------------------------------------------
def run(env: Env, events: int | None = None) -> Section:
    events = events or (100_000 if env.quick else 1_000_000)
    data = env.directory("w6-headwater")
    print(f"  w6 loading {events:,} events into headwater", flush=True)
    load = _child("load", str(data), str(events), str(env.tasks))
    disk = du_bytes(str(data))
    reopen = _child("reopen", str(data), str(events))
    assert reopen["counted"] == events
    print(f"  w6 headwater load {load['load_s']:.1f} s, serving after {reopen['serving_s']:.3f} s", flush=True)
    pg = postgres_side(env, events)
    print(f"  w6 PostgreSQL serving after {pg['serving_s']:.3f} s", flush=True)
    rd = redis_side(env, events)
    print(f"  w6 Redis serving after {rd['serving_s']:.3f} s", flush=True)
    per_million = 1_000_000 / events
    hw_rss_serving = reopen["rss_serving"] - reopen["baseline_rss"]
    hw_rss_touched = reopen["rss_touched"] - reopen["baseline_rss"]
    rows = [
        ["events appended and processed (headwater) / rows or hashes loaded (peers)", f"{events:,}", f"{events:,}",
         f"{events:,}"],
        ["load time (s)", fmt(load["load_s"], 1) + " (full-ack appends, 5,000 a call)", fmt(pg["load_s"], 1) + " (COPY)",
         fmt(rd["load_s"], 1) + " (pipelined HSET)"],
        ["clean stop (s)", fmt(load["close_s"]), fmt(pg["stop_s"]), fmt(rd["stop_s"])],
        ["**restart: time until the first successful read (s)**", f"**{reopen['serving_s']:.3f}**",
         f"**{pg['serving_s']:.3f}**", f"**{rd['serving_s']:.3f}**"],
        ["disk bytes per event / row", f"{disk / events:,.0f} (log + PState + RocksDB files)",
         f"{pg['disk_bytes'] / events:,.0f} (data dir growth; table + index: {pg['relation_bytes'] / events:,.0f})",
         f"{rd['disk_bytes'] / events:,.0f} (AOF)"],
        ["resident memory after restart and first read (MiB)",
         f"{reopen['rss_serving'] / 2**20:,.0f} (the whole Python process; {hw_rss_serving / 2**20:,.1f} above "
         "its size before opening)",
         f"{pg['rss'] / 2**20:,.0f} (all server processes)", f"{rd['rss'] / 2**20:,.0f} (used_memory_rss)"],
        ["resident memory per million PState entries / rows / hashes (MiB)",
         f"{hw_rss_serving * per_million / 2**20:,.1f} after the first read; {hw_rss_touched * per_million / 2**20:,.1f} "
         "after reading 10,000 users spread over the key space",
         "n/a: rows are read from disk into shared buffers on demand",
         f"{rd['rss_data'] * per_million / 2**20:,.0f} (growth over the empty server: all data is in memory)"],
        [f"peak resident memory while loading {events:,} events, above the process's start (MiB)",
         f"{(load['maxrss_bytes'] - load['baseline_rss']) / 2**20:,.0f}", "", ""],
    ]
    ratio_serving = {"PostgreSQL": pg["serving_s"], "Redis": rd["serving_s"]}
    markdown = "\n\n".join([
        table(["measure", "headwater", "PostgreSQL", "Redis (AOF always)"], rows),
        "Restart, headwater ÷ peer: " + ", ".join(f"{reopen['serving_s'] / v:.2f}× {k}'s time" for k, v in
                                                 ratio_serving.items()) + ".",
        ("" if events == 1_000_000 else
         f"**Measured at {events:,} events, not 1,000,000** (the time budget): per-event and per-million figures "
         "are these measurements scaled linearly; restart times are as measured at this size."),
    ])
    verdicts = [Verdict("6. restart", f"time until serving, {events:,} events", reopen["serving_s"], name, value,
                        higher_is_better=False, unit="s") for name, value in ratio_serving.items()]
    verdicts.append(Verdict("6. restart", "disk bytes per event / row", disk / events, "PostgreSQL (table + index)",
                            pg["relation_bytes"] / events, higher_is_better=False, unit="B"))
    verdicts.append(Verdict("6. restart", "disk bytes per event / row", disk / events, "Redis (AOF)",
                            rd["disk_bytes"] / events, higher_is_better=False, unit="B"))
    verdicts.append(Verdict("6. restart", "memory per million entries after reading 10,000", hw_rss_touched * per_million,
                            "Redis (all in memory)", rd["rss_data"] * per_million, higher_is_better=False, unit="B"))
    return Section("restart", f"6. Restart after {events:,} appended and processed events", markdown.strip(),
                   {"events": events, "headwater": {"load": load, "reopen": reopen, "disk_bytes": disk},
                    "postgres": pg, "redis": rd}, [], verdicts)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "load":
        print(json.dumps(child_load(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
    elif len(sys.argv) > 1 and sys.argv[1] == "reopen":
        print(json.dumps(child_reopen(sys.argv[2], int(sys.argv[3]))))
    else:
        from bench.suite import standalone

        standalone(run)


if __name__ == "__main__":
    main()
