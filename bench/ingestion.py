"""Workload 12 — ingesting external logs: Redis Streams and PostgreSQL changes into a depot.

N click events (100,000; quick 20,000):

- **Redis Streams → headwater**: the events are in a Redis stream (`XADD`) before the module is
  deployed with `m.external_depot(..., hw.sources.RedisStream(...))` and a stream topology that
  counts clicks per user. Measured: from `deploy` until every event is ingested (the depot's end
  offsets), and until every one is processed (the counts add up).
- **Redis Streams → hand-written consumer → PostgreSQL**, what a team writes without headwater: a
  loop that `XREAD`s 1,000 entries at a time and inserts them into a table with the last entry id
  in the same transaction (so a restart neither loses nor repeats one, as headwater's depot
  does), at equal durability (PostgreSQL `synchronous_commit=on`).
- **PostgreSQL → headwater**: a table in a publication, read through logical decoding
  (`hw.sources.PostgresChanges`); the rows are inserted (1,000 per transaction) after the module
  started, and the time is from the first insert until every change is in the depot.

    .venv/bin/python -m bench.ingestion [--quick]
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import headwater as hw
from bench.harness import Env, Section, table
from bench.peers import Postgres

BATCH = 1_000  # entries per XADD pipeline, XREAD, and PostgreSQL transaction
WAIT_S = 300.0


@dataclass
class Click:
    user: int
    page: str


def click_module(source: hw.Source, event_type: object, name: str) -> hw.Module:
    m = hw.Module(name)
    clicks = m.external_depot("clicks", source, event_type)
    counts = m.pstate("counts", hw.Map(int, int), partitioned=False)

    @m.stream(clicks)
    def count(ctx: hw.Context, click: object) -> None:
        ctx.pstate(counts)[0].increment()

    return m


def _wait(predicate: object, what: str) -> float:
    started = time.perf_counter()
    while not predicate():  # type: ignore[operator]
        if time.perf_counter() - started > WAIT_S:
            raise RuntimeError(f"{what} did not finish within {WAIT_S}s")
        time.sleep(0.01)
    return time.perf_counter()


def redis_into_headwater(env: Env, redis_url: str, count: int) -> tuple[float, float]:
    source = hw.sources.RedisStream(redis_url, "clicks")
    with hw.InProcessCluster(env.directory("w12-redis")) as cluster:
        started = time.perf_counter()
        cluster.deploy(click_module(source, Click, "redis_clicks"), tasks=1)
        depot = cluster.depot("redis_clicks", "clicks")
        ingested = _wait(lambda: depot.partition_info(0).end_offset >= count, "ingestion from Redis")
        counts = cluster.pstate("redis_clicks", "counts")
        processed = _wait(lambda: (counts[0].get() or 0) >= count, "processing")
    return ingested - started, processed - started


def redis_into_postgres(redis: object, dsn: str, count: int) -> float:
    import psycopg

    client = redis.client()  # type: ignore[attr-defined]
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS clicks (id text PRIMARY KEY, user_id bigint, page text)")
        conn.execute("CREATE TABLE IF NOT EXISTS consumer (name text PRIMARY KEY, last_id text)")
        conn.execute("INSERT INTO consumer VALUES ('clicks', '0') ON CONFLICT DO NOTHING")
        conn.commit()
        started = time.perf_counter()
        last = conn.execute("SELECT last_id FROM consumer WHERE name = 'clicks'").fetchone()[0]
        done = 0
        while done < count:
            found = client.xread({"clicks": last}, count=BATCH, block=1000)
            if not found:
                continue
            entries = found[0][1]
            rows = [(entry_id.decode(), int(fields[b"user"]), fields[b"page"].decode()) for entry_id, fields in entries]
            with conn.cursor() as cursor:
                cursor.executemany("INSERT INTO clicks VALUES (%s, %s, %s)", rows)
                last = rows[-1][0]
                cursor.execute("UPDATE consumer SET last_id = %s WHERE name = 'clicks'", (last,))
            conn.commit()
            done += len(rows)
        return time.perf_counter() - started


def postgres_into_headwater(env: Env, count: int) -> tuple[float, float]:
    import psycopg

    postgres = Postgres(env.directory("w12-pg"), settings={"wal_level": "logical", "max_replication_slots": "4",
                                                           "max_wal_senders": "4"})
    try:
        dsn = f"postgresql://bench@127.0.0.1:{postgres.port}/postgres"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE orders (id bigint PRIMARY KEY, user_id bigint, page text)")
            conn.execute("CREATE PUBLICATION shop FOR TABLE orders")
        source = hw.sources.PostgresChanges(dsn, "shop")
        with hw.InProcessCluster(env.directory("w12-pg-hw")) as cluster:
            cluster.deploy(click_module(source, hw.sources.Change, "pg_orders"), tasks=1)
            deadline = time.monotonic() + 60
            while not _slot_exists(dsn):  # the poller made its replication slot: later commits reach it
                if time.monotonic() > deadline:
                    raise RuntimeError("the replication slot was not created")
                time.sleep(0.05)
            depot = cluster.depot("pg_orders", "clicks")
            started = time.perf_counter()
            with psycopg.connect(dsn) as conn:
                for first in range(0, count, BATCH):
                    with conn.cursor() as cursor:
                        cursor.executemany("INSERT INTO orders VALUES (%s, %s, %s)",
                                           [(i, i % 100, f"/p/{i % 37}") for i in range(first, first + BATCH)])
                    conn.commit()
            inserted = time.perf_counter()
            ingested = _wait(lambda: depot.partition_info(0).end_offset >= count, "ingestion from PostgreSQL")
        return inserted - started, ingested - started
    finally:
        postgres.close()


def _slot_exists(dsn: str) -> bool:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_replication_slots").fetchone()[0] > 0


def run(env: Env) -> Section:
    count = 20_000 if env.quick else 100_000
    redis = env.redis()
    client = redis.client()
    pipe = client.pipeline(transaction=False)
    for i in range(count):
        pipe.xadd("clicks", {"user": i % 100, "page": f"/p/{i % 37}"})
        if (i + 1) % BATCH == 0:
            pipe.execute()
    pipe.execute()
    redis_url = f"redis://127.0.0.1:{redis.port}/0"
    hw_ingested, hw_processed = redis_into_headwater(env, redis_url, count)
    consumer_s = redis_into_postgres(redis, env.postgres().dsn, count)
    pg_inserted, pg_ingested = postgres_into_headwater(env, count)
    print(f"  w12 redis→headwater {count / hw_ingested:,.0f}/s; consumer→postgres {count / consumer_s:,.0f}/s; "
          f"postgres→headwater {count / pg_ingested:,.0f}/s", flush=True)
    rows = [
        ["Redis stream → headwater depot (ingested)", f"{hw_ingested:.2f} s", f"{count / hw_ingested:,.0f}"],
        ["Redis stream → headwater depot, and processed by a topology", f"{hw_processed:.2f} s",
         f"{count / hw_processed:,.0f}"],
        ["Redis stream → hand-written consumer → PostgreSQL (id with the rows)", f"{consumer_s:.2f} s",
         f"{count / consumer_s:,.0f}"],
        ["PostgreSQL inserts → logical decoding → headwater depot", f"{pg_ingested:.2f} s",
         f"{count / pg_ingested:,.0f}"],
    ]
    markdown = "\n\n".join([
        f"{count:,} events, 1 task, in process; the source's position is stored with the records, and the "
        "hand-written consumer stores its last entry id in the same transaction as the rows.",
        table(["path", "time", "events/s"], rows),
        f"The PostgreSQL inserts themselves took {pg_inserted:.2f} s of the {pg_ingested:.2f} s (the changes "
        "are decoded while the inserts go on).",
    ])
    return Section("ingestion", "12. Ingesting external logs", markdown,
                   {"count": count, "redis_ingested_s": hw_ingested, "redis_processed_s": hw_processed,
                    "consumer_s": consumer_s, "pg_inserted_s": pg_inserted, "pg_ingested_s": pg_ingested})


def main() -> None:
    from bench.suite import standalone

    standalone(run)


if __name__ == "__main__":
    main()
