"""The worker of the usual stack (workload 2), in a process of its own like a real worker fleet.

Each thread reads sign-ups from a Redis stream in a consumer group (`XREADGROUP`), registers each
one in PostgreSQL (the one-statement transaction of workload 1), then pushes the answer to the
request's reply list and acknowledges the stream entry — one pipelined round trip. The client,
blocked in `BLPOP` on that list, wakes once the PostgreSQL commit is visible.

    python -m bench.stack_worker --redis-port P --dsn DSN --threads N
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

import psycopg
import redis

from bench.compare_registration import postgres_one_statement

STREAM = "signups"
GROUP = "workers"
READ_COUNT_MAX = 16
BLOCK_MS = 200


def work(n: int, port: int, dsn: str, stopping: threading.Event) -> None:
    r = redis.Redis(host="127.0.0.1", port=port)
    conn = psycopg.connect(dsn, autocommit=True)
    name = f"w{n}"
    while not stopping.is_set():
        batches = r.xreadgroup(GROUP, name, {STREAM: ">"}, count=READ_COUNT_MAX, block=BLOCK_MS)
        for _stream, entries in batches or []:
            for entry_id, fields in entries:
                already = postgres_one_statement(conn, fields[b"email"].decode(), fields[b"pwd"].decode(),
                                                 int(fields[b"ms"]), fields[b"day"].decode())
                pipe = r.pipeline(transaction=False)
                pipe.lpush(b"reply:" + fields[b"id"], b"1" if already else b"0")
                pipe.xack(STREAM, GROUP, entry_id)
                pipe.execute()
    conn.close()
    r.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis-port", type=int, required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    r = redis.Redis(host="127.0.0.1", port=args.redis_port)
    try:
        r.xgroup_create(STREAM, GROUP, id="$", mkstream=True)
    except redis.ResponseError as e:
        if "BUSYGROUP" not in str(e):
            raise
    threads = [threading.Thread(target=work, args=(n, args.redis_port, args.dsn, stopping), daemon=True)
               for n in range(args.threads)]
    for t in threads:
        t.start()
    print("ready", flush=True)
    for t in threads:
        while t.is_alive():
            t.join(0.5)
    sys.exit(0)


if __name__ == "__main__":
    main()
