"""Benchmark: the HTTP API over loopback, server and client in separate processes, fsync on.

Measures, with the remote client (`hw.connect`), full-ack append latency from one client, point
read latency, the client's CPU per request, and full-ack append and point read throughput from 16
concurrent client threads; and the same single-client requests with the standard library's
http.client, to separate what the server costs from what the Python client adds. Prints a table;
timings never fail anything.

    make bench            # or: .venv/bin/python bench/http_api.py --tasks 2 --seconds 5
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import headwater as hw  # noqa: E402
from bench.common import closed_loop, percentile  # noqa: E402
from bench.peers import free_port  # noqa: E402
from examples.registration import UserSignUp  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..")


def start_server(data: str, tasks: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [sys.executable, "-m", "headwater.cli", "serve", "examples/registration.py", "--data", data,
               "--port", str(port), "--tasks", str(tasks)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/api/health") as response:
                if response.status == 200:
                    return process, url
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.05)
    process.kill()
    raise SystemExit(f"the server did not start: {process.stderr.read().decode() if process.stderr else ''}")


def timed(fn: Callable[[int], object], count: int) -> list[float]:
    timings = []
    for i in range(count):
        started = time.perf_counter()
        fn(i)
        timings.append(time.perf_counter() - started)
    return timings


def timed_with_cpu(fn: Callable[[int], object], count: int) -> tuple[list[float], float]:
    """Latencies, and this process's CPU per call in µs: with the server in another process,
    that is what the client costs."""
    cpu_started = time.process_time()
    timings = timed(fn, count)
    return timings, (time.process_time() - cpu_started) / count * 1e6


def raw_http(url: str, count: int) -> tuple[list[float], list[float]]:
    """The same requests on one keep-alive connection with the standard library's http.client:
    what the server costs, without the Python client's own overhead (its HTTP layer and the View)."""
    import http.client
    import json

    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port))

    def call(method: str, path: str, body: bytes | None = None) -> None:
        connection.request(method, path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        assert response.status == 200, response.status

    append_path = "/api/modules/registration/depots/registrations/append"
    event = lambda i: json.dumps({"email": f"raw{i}@example.com", "pwd_hash": "h", "timestamp_ms": 1}).encode()  # noqa: E731
    appends = timed(lambda i: call("POST", append_path, event(i)), count)
    read_path = "/api/modules/registration/pstates/users/get?path=" + "%5B%22raw1%40example.com%22%5D"
    reads = timed(lambda i: call("GET", read_path), count)
    connection.close()
    return appends, reads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=2)
    parser.add_argument("--count", type=int, default=2000, help="sequential requests per latency run")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="headwater-bench-http-") as directory:
        process, url = start_server(os.path.join(directory, "data"), args.tasks)
        try:
            with hw.connect(url) as client:
                depot = client.depot("registration", "registrations")
                users = client.pstate("registration", "users")
                append = lambda i: depot.append(UserSignUp(f"solo{i}@example.com", "h", 1_700_000_000_000))  # noqa: E731
                read = lambda i: users[f"solo{i % 100}@example.com"].get()  # noqa: E731
                timed(lambda i: append(10_000_000 + i), 300)  # warm up
                appends, append_cpu_us = timed_with_cpu(append, args.count)
                reads, read_cpu_us = timed_with_cpu(read, args.count)
                raw_appends, raw_reads = raw_http(url, args.count)
                appending = closed_loop(
                    lambda n: lambda i: depot.append(UserSignUp(f"c{n}-{i}@example.com", "h", 1_700_000_000_000)),
                    args.clients, args.seconds)
                reading = closed_loop(lambda n: lambda i: users[f"c{n}-{i % 100}@example.com"].get(),
                                      args.clients, args.seconds)
                append_rate, concurrent_appends = appending.ops_per_s, appending.latencies_s
                read_rate, concurrent_reads = reading.ops_per_s, reading.latencies_s
        finally:
            process.terminate()
            process.wait(30)
    print(f"\nheadwater HTTP benchmark — {os.cpu_count()} cores, loopback, server in its own process, "
          f"tasks={args.tasks}, fsync on\n")
    print(f"| {'measure':<50} | {'value':>12} |")
    print(f"|{'-' * 52}|{'-' * 14}|")
    rows = [
        ("full-ack append p50, 1 client (ms; target <= 2)", f"{percentile(appends, 0.5) * 1000:.3f}"),
        ("full-ack append p99, 1 client (ms)", f"{percentile(appends, 0.99) * 1000:.3f}"),
        ("point read p50, 1 client (ms; target <= 1)", f"{percentile(reads, 0.5) * 1000:.3f}"),
        ("point read p99, 1 client (ms)", f"{percentile(reads, 0.99) * 1000:.3f}"),
        ("client CPU per full-ack append (µs)", f"{append_cpu_us:.0f}"),
        ("client CPU per point read (µs)", f"{read_cpu_us:.0f}"),
        ("  same, bare http.client: full-ack append p50 (ms)", f"{percentile(raw_appends, 0.5) * 1000:.3f}"),
        ("  same, bare http.client: point read p50 (ms)", f"{percentile(raw_reads, 0.5) * 1000:.3f}"),
        (f"full-ack appends/s, {args.clients} client threads", f"{append_rate:,.0f}"),
        (f"full-ack append p50, {args.clients} clients (ms)", f"{percentile(concurrent_appends, 0.5) * 1000:.3f}"),
        (f"full-ack append p99, {args.clients} clients (ms)", f"{percentile(concurrent_appends, 0.99) * 1000:.3f}"),
        (f"point reads/s, {args.clients} client threads", f"{read_rate:,.0f}"),
        (f"point read p50, {args.clients} clients (ms)", f"{percentile(concurrent_reads, 0.5) * 1000:.3f}"),
        (f"point read p99, {args.clients} clients (ms)", f"{percentile(concurrent_reads, 0.99) * 1000:.3f}"),
    ]
    for name, value in rows:
        print(f"| {name:<50} | {value:>12} |")


if __name__ == "__main__":
    main()
