"""Workload 10 — watching PStates: how soon a commit reaches its subscribers, and what one costs.

A `game` module keeps per-room scores (`hw.Map(str, hw.Map(str, int, subindexed=True))`); every
change adds a point to one player of `room-1`, and every subscriber watches that room.

In process, on an `InProcessCluster` of `--tasks` tasks:

- append → diff latency: a full-ack append changes one player's score in a watched room; the
  time from the append call until the subscription hands out the diff (p50, p99);
- fan-out: one change watched by 1,000 and by 10,000 subscriptions of the same path (the
  `SUBSCRIPTIONS_MAX` of a deployment): the time from the append's return until the last of them
  has its diff;
- memory per subscription: the growth of the process's resident memory over 10,000 subscriptions,
  divided by their number.

Over the network, what a browser app sees, against what people build for it today. Each path has
a writer and subscribers, all in this process on one asyncio event loop; the server runs in
processes of its own on loopback:

- **headwater**: `headwater serve` of this module (the `serve` function, in a child process: the
  tasks in the server process, and with `--workers 2`, a `LocalCluster` whose worker processes
  each serve the port). The writer POSTs the score to the depot's HTTP append endpoint (full
  ack); each subscriber is a `websockets` client on the watch socket of `["room-1"]` and has the
  change when its `diffs` message arrives. The client asks for per-message compression, as
  browsers do; one more row, against the same server, does not;
- **PostgreSQL `LISTEN/NOTIFY` + re-query**: a `scores` table with a trigger that `NOTIFY`s the
  changed row's key on commit; the writer runs one upsert (autocommit); each subscriber is a
  psycopg connection that `LISTEN`s and, on a notification, selects the changed row's points;
- **Redis pub/sub**: the writer runs one script that `HINCRBY`s the room's hash and `PUBLISH`es
  the player and new total; each subscriber is a connection subscribed to the room's channel,
  and the message carries the value (no re-read).

For each path: latency, sequential (the next write when the previous change has arrived), from
the write's start until the subscriber has the new value, p50 and p99, in `env.runs` runs that
alternate the paths; and fan-out, one change to 100 and to 1,000 subscribers (each its own socket
or connection, all of every path connected at once), from the write's start until the last has
it, `FAN_OUT_ROUNDS` changes per path, alternating the paths change by change. Every subscriber
lives in this one process, on one thread: at 1,000, reading a thousand messages (with each path's
client library) is part of every path's time.

Durability is each system's as `bench.peers` starts it: a headwater full-ack append is answered
once its record is synced to disk and processed; PostgreSQL commits with `synchronous_commit=on`
(and delivers notifications after the commit); Redis runs with `appendfsync always` (it sends
replies and published messages after the AOF write and fsync of the same event-loop turn).

    .venv/bin/python -m bench.reactivity [--quick] [--runs N]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import resource
import signal
import statistics
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import headwater as hw
from bench.common import percentile, rss_bytes
from bench.harness import Env, Section, Verdict, table
from bench.peers import Postgres

LATENCY_SAMPLES = 2_000  # in process; quick: 300
NEXT_WAIT_S = 10.0
NETWORK_SAMPLES = 1_000  # per path and run, over the network; quick: 200
WARMUP_SAMPLES = 20  # changes before each run's samples, not counted (connections warm, code paths taken)
FAN_OUT_COUNTS = (100, 1_000)  # subscribers of one change over the network, each its own connection
FAN_OUT_ROUNDS = 5  # changes sent to each count of subscribers; quick: 2
FAN_OUT_WAIT_S = 60.0  # the longest one change may take to reach every subscriber
# An idle keep-alive connection older than this is not reused: the server closes them after 5 s,
# and a request sent as it does would be lost.
KEEP_ALIVE_REUSE_S = 1.0
CONNECTING_MAX = 50  # connections opened at once while the subscribers connect
SERVE_WORKERS = (0, 2)  # `headwater serve --workers N`: 0 is the tasks in the server process
SERVER_START_S = 120.0
SERVER_STOP_S = 30.0
# PostgreSQL runs a backend process per connection: 1,000 listeners, the writer and some room.
POSTGRES_CONNECTIONS_MAX = max(FAN_OUT_COUNTS) + 100
ROOM = "room-1"
GOAL_IN_PROCESS_P50_MS = 1.0
GOAL_WEBSOCKET_P50_MS = 5.0
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Score:
    room: str
    player: str
    points: int


def game_module() -> hw.Module:
    game = hw.Module("game")
    scores_in = game.depot("scores", Score, partition_by="room")
    scores = game.pstate("scores", hw.Map(str, hw.Map(str, int, subindexed=True)))

    @game.stream(scores_in)
    def add_score(ctx: hw.Context, s: Score) -> None:
        ctx.pstate(scores)[s.room][s.player].update(lambda total: (total or 0) + s.points)

    return game


game = game_module()  # what `headwater serve bench.reactivity` finds and deploys


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def in_process(env: Env) -> tuple[str, dict[str, Any]]:
    samples = 300 if env.quick else LATENCY_SAMPLES
    with hw.InProcessCluster(env.directory("w10-reactivity")) as cluster:
        cluster.deploy(game_module(), tasks=env.tasks)
        depot = cluster.depot("game", "scores")
        room = cluster.pstate("game", "scores")[ROOM]
        depot.append(Score(ROOM, "ann", 1))
        latencies = []
        with room.watch() as subscription:
            for i in range(samples):
                started = time.perf_counter()
                depot.append(Score(ROOM, f"p{i % 50}", 1))
                change = subscription.next(timeout=NEXT_WAIT_S)
                latencies.append((time.perf_counter() - started) * 1000)
                assert change is not None
        plain = []
        for i in range(samples):  # the same appends with nobody watching, for comparison
            started = time.perf_counter()
            depot.append(Score("room-2", f"p{i % 50}", 1))
            plain.append((time.perf_counter() - started) * 1000)

        fan_out = []
        rss_before = _rss_mib()
        subscriptions = []
        for count in (1_000, 10_000):
            while len(subscriptions) < count:
                subscriptions.append(room.watch())
            rss_after = _rss_mib()
            depot.append(Score(ROOM, "ann", 1))
            appended = time.perf_counter()
            for subscription in subscriptions:
                assert subscription.next(timeout=NEXT_WAIT_S) is not None
            fan_out.append((count, (time.perf_counter() - appended) * 1000, rss_after))
        for subscription in subscriptions:
            subscription.close()
    per_subscription_kib = (fan_out[-1][2] - rss_before) * 1024 / fan_out[-1][0]
    print(f"  w10 in process append→diff p50 {percentile(latencies, 0.5):.3f} ms; fan-out {fan_out}", flush=True)
    markdown = "\n\n".join([
        f"In process: full-ack append of one score change, on an `InProcessCluster` of {env.tasks} tasks:",
        table(["measure", "p50 ms", "p99 ms", "goal"], [
            ["append → the watcher has its diff", f"{percentile(latencies, 0.5):.3f}",
             f"{percentile(latencies, 0.99):.3f}", f"p50 ≤ {GOAL_IN_PROCESS_P50_MS:g} ms"],
            ["append alone (nobody watching the room)", f"{percentile(plain, 0.5):.3f}",
             f"{percentile(plain, 0.99):.3f}", ""]]),
        "One change watched by many subscriptions of the same path, in process (from the append's return "
        "until the last subscription has the diff):",
        table(["subscriptions", "until the last has it", "resident memory"],
              [[f"{count:,}", f"{ms:.1f} ms", f"{rss:,.0f} MiB"] for count, ms, rss in fan_out]),
        f"Memory per subscription: about {per_subscription_kib:.1f} KiB (the growth of the peak resident "
        "memory over 10,000 subscriptions, divided by their number).",
    ])
    return markdown, {"latency_ms": latencies, "plain_ms": plain, "fan_out": fan_out,
                      "per_subscription_kib": per_subscription_kib}


# --- Over the network: one writer and its subscribers per path, on one asyncio event loop ---


class Subscriber(Protocol):
    async def next(self) -> Any:
        """Wait for the next change and return the new value (a diff, or the re-read value)."""

    async def close(self) -> None: ...


class Delivery:
    """One path from a writer to its subscribers."""

    name: str

    async def write(self, player: str) -> None:
        """Add a point to `player` in ROOM, as the path's writer does."""
        raise NotImplementedError

    async def subscribe(self) -> Subscriber:
        """A new subscriber: a change written after this returns reaches it (unless `ready` says otherwise)."""
        raise NotImplementedError

    async def ready(self, count: int) -> None:
        """Wait until the server counts `count` subscribers, where `subscribe` returns before it does."""

    async def close(self) -> None:
        raise NotImplementedError


class WebSocketWatch(Delivery):
    """headwater: HTTP append (full ack) → the `diffs` message on a watch socket."""

    def __init__(self, url: str, workers: int, *, deflate: bool = True) -> None:
        self.name = "headwater: HTTP append → WebSocket diff" + (f" (--workers {workers})" if workers else "")
        if not deflate:
            self.name += " (client without permessage-deflate)"
        self._compression = "deflate" if deflate else None
        self._http = KeepAlive(url)
        self._socket_url = (url.replace("http://", "ws://", 1) + "/api/modules/game/pstates/scores/watch?path="
                            + urllib.parse.quote(json.dumps([ROOM])))

    async def write(self, player: str) -> None:
        body = json.dumps({"room": ROOM, "player": player, "points": 1}).encode()
        status = await self._http.post("/api/modules/game/depots/scores/append", body)
        assert status == 200, status

    async def subscribe(self) -> Subscriber:
        from websockets.asyncio.client import connect

        socket = await connect(self._socket_url, ping_interval=None, open_timeout=NEXT_WAIT_S,
                               compression=self._compression)
        first = json.loads(await asyncio.wait_for(socket.recv(), NEXT_WAIT_S))
        assert first["type"] == "value", first  # sent once the server's subscription is made
        return _Socket(socket)

    async def close(self) -> None:
        await self._http.close()


class KeepAlive:
    """One keep-alive HTTP/1.1 connection that POSTs JSON: the writer's side of headwater's path.

    As lean as a browser's `fetch` is for the page that calls it: httpx, the obvious asyncio
    client, spends most of a millisecond of Python per request, which would be counted against
    headwater here while PostgreSQL's and Redis's writers run their protocols in C."""

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        self._host, self._port = parts.hostname, parts.port
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._used_at = 0.0

    async def post(self, target: str, body: bytes) -> int:
        """POST `body` to `target`; the answer's status (its body is read and dropped)."""
        if self._streams is not None and time.monotonic() - self._used_at > KEEP_ALIVE_REUSE_S:
            await self.close()  # the server may be closing it (its idle timeout) while this request goes
        if self._streams is None:
            self._streams = await asyncio.open_connection(self._host, self._port)
        reader, writer = self._streams
        writer.write(b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (target.encode(), self._host.encode(), self._port,
                                                        len(body), body))
        status_line = await reader.readline()
        assert status_line, "the server closed the connection without answering"
        status = int(status_line.split()[1])
        length = None
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        assert length is not None, "the server's answer has no Content-Length"
        await reader.readexactly(length)
        self._used_at = time.monotonic()
        return status

    async def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            await self._streams[1].wait_closed()
            self._streams = None


class _Socket:
    def __init__(self, socket: Any) -> None:
        self._socket = socket

    async def next(self) -> Any:
        while True:
            message = json.loads(await asyncio.wait_for(self._socket.recv(), NEXT_WAIT_S))
            if message["type"] in ("diffs", "resync"):
                return message
            assert message["type"] == "heartbeat", message

    async def close(self) -> None:
        await self._socket.close()


POSTGRES_SETUP = """
CREATE TABLE IF NOT EXISTS scores (room text, player text, points bigint NOT NULL, PRIMARY KEY (room, player));
CREATE OR REPLACE FUNCTION notify_score() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('scores', NEW.room || '/' || NEW.player);
  RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER score_changed AFTER INSERT OR UPDATE ON scores FOR EACH ROW EXECUTE FUNCTION notify_score();
"""
POSTGRES_UPSERT = ("INSERT INTO scores VALUES (%s, %s, 1) "
                   "ON CONFLICT (room, player) DO UPDATE SET points = scores.points + 1")
POSTGRES_REREAD = "SELECT points FROM scores WHERE room = %s AND player = %s"


class PostgresNotify(Delivery):
    """PostgreSQL: an upsert whose trigger NOTIFYs on commit → the listener re-reads the row."""

    name = "PostgreSQL: upsert + trigger NOTIFY → LISTEN + re-query"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._writer: Any = None

    async def open(self) -> PostgresNotify:
        import psycopg

        self._writer = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
        await self._writer.execute(POSTGRES_SETUP)
        return self

    async def write(self, player: str) -> None:
        await self._writer.execute(POSTGRES_UPSERT, (ROOM, player))

    async def subscribe(self) -> Subscriber:
        import psycopg

        conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
        await conn.execute("LISTEN scores")
        return _Listener(conn)

    async def close(self) -> None:
        await self._writer.close()


class _Listener:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def next(self) -> Any:
        # The generator holds the connection's lock until it ends: the query comes after it.
        payloads = [n.payload async for n in self._conn.notifies(timeout=NEXT_WAIT_S, stop_after=1)]
        if not payloads:
            raise TimeoutError(f"no notification within {NEXT_WAIT_S} s")
        room, player = payloads[-1].split("/", 1)
        cursor = await self._conn.execute(POSTGRES_REREAD, (room, player))
        return (await cursor.fetchone())[0]

    async def close(self) -> None:
        await self._conn.close()


# One round trip: the new total is in the message, so a subscriber need not read it back.
REDIS_WRITE = """
local total = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('PUBLISH', KEYS[2], ARGV[1] .. '=' .. total)
return total
"""


class RedisPubSub(Delivery):
    """Redis: one script HINCRBYs the room's hash and PUBLISHes the new total → the subscriber."""

    name = "Redis: HINCRBY + PUBLISH → SUBSCRIBE (value in the message)"

    def __init__(self, port: int) -> None:
        import redis.asyncio

        self._connect = lambda: redis.asyncio.Redis(host="127.0.0.1", port=port)
        self._writer = self._connect()
        self._script = self._writer.register_script(REDIS_WRITE)

    async def write(self, player: str) -> None:
        await self._script(keys=[f"scores:{ROOM}", f"room:{ROOM}"], args=[player])

    async def subscribe(self) -> Subscriber:
        client = self._connect()
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(f"room:{ROOM}")
        return _RedisSubscriber(client, pubsub)

    async def ready(self, count: int) -> None:
        # SUBSCRIBE is sent without waiting for its reply: a message published before the server
        # read it would be missed.
        deadline = time.monotonic() + FAN_OUT_WAIT_S
        while (await self._writer.pubsub_numsub(f"room:{ROOM}"))[0][1] < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count} subscribers did not all subscribe within {FAN_OUT_WAIT_S} s")
            await asyncio.sleep(0.001)

    async def close(self) -> None:
        await self._writer.aclose()


class _RedisSubscriber:
    def __init__(self, client: Any, pubsub: Any) -> None:
        self._client, self._pubsub = client, pubsub

    async def next(self) -> Any:
        deadline = time.monotonic() + NEXT_WAIT_S
        while time.monotonic() < deadline:
            message = await self._pubsub.get_message(timeout=max(0.0, deadline - time.monotonic()))
            if message is not None:
                return message["data"]
        raise TimeoutError(f"no message within {NEXT_WAIT_S} s")

    async def close(self) -> None:
        await self._pubsub.aclose()
        await self._client.aclose()


async def latency_ms(delivery: Delivery, samples: int) -> tuple[list[float], list[float]]:
    """Sequential changes, each from its write's start: until the subscriber has the new value, and
    until the writer had its answer (the append's ack, the commit, the script's reply)."""
    async def answered_ms(player: str, started: float) -> float:
        await delivery.write(player)
        return (time.perf_counter() - started) * 1000

    subscriber = await delivery.subscribe()
    await delivery.ready(1)
    delivered, answered = [], []
    try:
        for i in range(WARMUP_SAMPLES + samples):
            started = time.perf_counter()
            write = asyncio.create_task(answered_ms(f"p{i % 50}", started))
            try:
                await subscriber.next()
                delivered.append((time.perf_counter() - started) * 1000)
            finally:
                answered.append(await write)
    finally:
        await subscriber.close()
    return delivered[WARMUP_SAMPLES:], answered[WARMUP_SAMPLES:]


async def _bounded(count: int, make: Callable[[], Awaitable[Any]]) -> list[Any]:
    """`count` results of `make()`, at most CONNECTING_MAX under way at once."""
    gate = asyncio.Semaphore(CONNECTING_MAX)

    async def one() -> Any:
        async with gate:
            return await make()

    return list(await asyncio.gather(*(one() for _ in range(count))))


class Audience:
    """The subscribers of one path, each on its own connection, grown to each count in turn."""

    def __init__(self, delivery: Delivery, server_pid: int | None = None) -> None:
        self.delivery = delivery
        self.subscribers: list[Subscriber] = []
        self._server_pid = server_pid
        self._server_growth_bytes = 0  # of the server's resident memory while this audience connected

    async def grow(self, count: int) -> None:
        before = rss_bytes(self._server_pid) if self._server_pid else 0
        self.subscribers += await _bounded(count - len(self.subscribers), self.delivery.subscribe)
        await self.delivery.ready(count)
        if self._server_pid:
            self._server_growth_bytes += rss_bytes(self._server_pid) - before

    async def change_ms(self, player: str) -> float:
        """One change: ms from the write's start until the last subscriber has it."""
        async def arrival(subscriber: Subscriber) -> float:
            await subscriber.next()
            return time.perf_counter()

        started = time.perf_counter()
        write = asyncio.create_task(self.delivery.write(player))
        try:
            arrivals = await asyncio.wait_for(asyncio.gather(*(arrival(s) for s in self.subscribers)), FAN_OUT_WAIT_S)
        finally:
            await write
        return (max(arrivals) - started) * 1000

    def server_kib_per_subscriber(self) -> float | None:
        """The growth of the server's resident memory while this audience connected, per subscriber."""
        if not self._server_pid or not self.subscribers:
            return None
        return self._server_growth_bytes / 1024 / len(self.subscribers)

    async def close(self) -> None:
        await asyncio.gather(*(s.close() for s in self.subscribers), return_exceptions=True)
        self.subscribers = []


# --- The headwater server: `serve` in a child process ---


def _serve(data: str, tasks: int, workers: int, announce: Any) -> None:
    from headwater.server.auth import Auth
    from headwater.server.run import serve

    # Worker processes import this module by name, from the repository root.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    with contextlib.suppress(KeyboardInterrupt):  # how `served` stops it, as Ctrl-C stops `headwater serve`
        serve("bench.reactivity", data=data, port=0, tasks=tasks, workers=workers, auth=Auth([]),
              announce=lambda url, cluster: announce.send(url))


@contextlib.contextmanager
def served(data: Path, tasks: int, workers: int) -> Iterator[tuple[str, int]]:
    """`headwater serve bench.reactivity --workers <workers>` on a free loopback port: (url, pid).

    A child process of its own (spawned: this one has threads), stopped as Ctrl-C stops it."""
    context = multiprocessing.get_context("spawn")
    receiving, sending = context.Pipe(duplex=False)
    process = context.Process(target=_serve, args=(str(data), tasks, workers, sending), name=f"serve-{workers}")
    process.start()
    try:
        deadline = time.monotonic() + SERVER_START_S
        while not receiving.poll(0.05):
            if not process.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"headwater serve --workers {workers} did not start (exit code {process.exitcode})")
        yield receiving.recv(), process.pid
    finally:
        if process.is_alive():
            os.kill(process.pid, signal.SIGINT)
            process.join(SERVER_STOP_S)
        if process.is_alive():
            process.kill()
            process.join()


# --- Running and reporting ---


@dataclass
class Network:
    """What the network part measured, per path name."""

    latency_runs: dict[str, list[list[float]]]  # per run, each change's ms until the subscriber had it
    answered_runs: dict[str, list[list[float]]]  # per run, each change's ms until the writer had its answer
    fan_out: dict[str, dict[int, dict[str, Any]]]
    notes: dict[str, str]  # path -> why something was not measured


async def _measure(deliveries: list[Delivery], *, runs: int, samples: int, counts: tuple[int, ...], rounds: int,
                   server_pids: dict[str, int]) -> Network:
    result = Network({d.name: [] for d in deliveries}, {d.name: [] for d in deliveries}, {}, {})
    for run in range(runs):  # alternating, so that background load falls on every path alike
        for delivery in deliveries if run % 2 == 0 else list(reversed(deliveries)):
            delivered, answered = await latency_ms(delivery, samples)
            result.latency_runs[delivery.name].append(delivered)
            result.answered_runs[delivery.name].append(answered)
            print(f"  w10 run {run + 1}: {delivery.name}: p50 "
                  f"{percentile(result.latency_runs[delivery.name][-1], 0.5):.3f} ms", flush=True)
    audiences = [Audience(d, server_pids.get(d.name)) for d in deliveries]
    try:
        for count in counts:
            await _fan_out(audiences, count, rounds, result)
    finally:
        for audience in audiences:
            await audience.close()
    return result


async def _fan_out(audiences: list[Audience], count: int, rounds: int, result: Network) -> None:
    """Every path's audience grown to `count`, then `rounds` changes to each, alternating the paths."""
    for audience in list(audiences):
        await _or_drop(audiences, audience, result, audience.grow(count))
    measured = {audience.delivery.name: {"ms": []} for audience in audiences}
    for round_ in range(rounds):
        for audience in list(audiences if round_ % 2 == 0 else reversed(audiences)):
            ms = await _or_drop(audiences, audience, result, audience.change_ms(f"fan-{round_}"))
            if ms is not None:
                measured[audience.delivery.name]["ms"].append(ms)
    for audience in audiences:
        name = audience.delivery.name
        if (kib := audience.server_kib_per_subscriber()) is not None:
            measured[name]["server_kib_per_subscriber"] = kib
        result.fan_out.setdefault(name, {})[count] = measured[name]
        print(f"  w10 fan-out to {count:,}: {name}: {statistics.median(measured[name]['ms']):.1f} ms", flush=True)


async def _or_drop(audiences: list[Audience], audience: Audience, result: Network, step: Awaitable[Any]) -> Any:
    """`await step`; if it fails, the path's fan-out row says why and it is measured no further."""
    try:
        return await step
    except Exception as e:  # noqa: BLE001 - the row says n/a and why; the other paths still run
        name = audience.delivery.name
        result.notes[name] = f"{type(e).__name__}: {e}"
        print(f"  w10 fan-out {name}: {result.notes[name]}", flush=True)
        audiences.remove(audience)
        await audience.close()
        return None


def over_network(env: Env, *, samples: int, counts: tuple[int, ...], rounds: int,
                 workers: tuple[int, ...] = SERVE_WORKERS) -> Network:
    """The network measures of every path: headwater served with each of `workers`, PostgreSQL, Redis."""
    redis = env.redis()
    # A PostgreSQL of its own, with room for 1,000 listeners (the shared one allows 200 connections).
    # Its unprivileged user must reach its directory through the benchmark's root, as for the shared one.
    os.chmod(env.root, 0o755)
    postgres = Postgres(env.directory("w10-postgres"), settings={"max_connections": str(POSTGRES_CONNECTIONS_MAX)})
    try:
        with contextlib.ExitStack() as servers:
            served_at = {n: servers.enter_context(served(env.directory(f"w10-serve-{n}"), env.tasks, n))
                         for n in workers}

            async def measure() -> Network:
                deliveries: list[Any] = []
                server_pids = {}  # with --workers, the sockets are in the workers: no memory per socket
                for n, (url, pid) in served_at.items():
                    deliveries.append(WebSocketWatch(url, n))
                    if n == 0:
                        # Browsers offer per-message compression and the server accepts it; without it,
                        # what the compression costs.
                        deliveries.append(WebSocketWatch(url, n, deflate=False))
                        server_pids |= {d.name: pid for d in deliveries[-2:]}
                deliveries += [await PostgresNotify(postgres.dsn).open(), RedisPubSub(redis.port)]
                try:
                    return await _measure(deliveries, runs=env.runs, samples=samples, counts=counts, rounds=rounds,
                                          server_pids=server_pids)
                finally:
                    for delivery in deliveries:
                        await delivery.close()

            return asyncio.run(measure())
    finally:
        postgres.close()


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}"


def _spread(values: list[float]) -> str:
    return f"{min(values):.2f}–{max(values):.2f}"


def network_markdown(network: Network, *, samples: int, runs: int, rounds: int) -> str:
    rows = []
    for name, per_run in network.latency_runs.items():
        p50s = [percentile(r, 0.5) for r in per_run]
        p99s = [percentile(r, 0.99) for r in per_run]
        goal = ""
        if name.startswith("headwater"):
            goal = f"p50 ≤ {GOAL_WEBSOCKET_P50_MS:g} ms: " + (
                "met" if statistics.median(p50s) <= GOAL_WEBSOCKET_P50_MS else "not met")
        answered = _ms([percentile(r, 0.5) for r in network.answered_runs[name]])
        rows.append([name, _ms(p50s), _spread(p50s), _ms(p99s), _spread(p99s), answered, goal])
    counts = sorted({c for measured in network.fan_out.values() for c in measured})
    fan_rows = []
    for name in network.latency_runs:
        measured = network.fan_out.get(name, {})
        cells = [f"{_ms(measured[c]['ms'])} ({_spread(measured[c]['ms'])})" if c in measured else "n/a"
                 for c in counts]
        fan_rows.append([name + (f" ({network.notes[name]})" if name in network.notes else ""), *cells])
    memory = {"deflate" not in name: m["server_kib_per_subscriber"] for name, measured in network.fan_out.items()
              for c, m in measured.items() if "server_kib_per_subscriber" in m and c == max(counts)}
    parts = [
        f"Over loopback, one change at a time, from the write's start until the subscriber has the new value "
        f"({samples:,} changes per run, {runs} runs alternating the paths; the median of the runs' p50 and p99, "
        "and their range):",
        table(["path", "p50 ms", "p50 range", "p99 ms", "p99 range", "writer answered, p50 ms", "goal"], rows),
        f"One change to many subscribers, each on its own connection: from the write's start until the last "
        f"has it, ms (median of {rounds} changes, and their range):",
        table(["path", *[f"{c:,} subscribers" for c in counts]], fan_rows),
    ]
    if True in memory:
        without = f" ({memory[False]:.0f} KiB without compression)" if False in memory else ""
        parts.append(f"The headwater server's resident memory grew by about {memory[True]:.0f} KiB per watch "
                     f"socket{without} while {max(counts):,} sockets connected (tasks in the server process).")
    return "\n\n".join(parts)


def network_verdicts(network: Network) -> list[Verdict]:
    """headwater's best WebSocket path against the best peer on p50, p99 and fan-out to the most subscribers."""
    def median_of(name: str, q: float) -> float:
        return statistics.median(percentile(r, q) for r in network.latency_runs[name])

    # headwater as a browser has it: with the per-message compression browsers ask for.
    mine = [n for n in network.latency_runs if n.startswith("headwater") and "deflate" not in n]
    peers = [n for n in network.latency_runs if not n.startswith("headwater")]
    verdicts = []
    for label, q in (("p50", 0.5), ("p99", 0.99)):
        ref = min(mine, key=lambda n: median_of(n, q))
        peer = min(peers, key=lambda n: median_of(n, q))
        verdicts.append(Verdict("10. watching", f"change → subscriber over loopback, {label}", median_of(ref, q),
                                peer, median_of(peer, q), higher_is_better=False, unit="ms"))
    fanned = {n: m for n, m in network.fan_out.items() if m}
    if fanned:
        count = max(c for m in fanned.values() for c in m)
        with_count = {n: statistics.median(m[count]["ms"]) for n, m in fanned.items() if count in m}
        ref = min((n for n in with_count if n in mine), key=with_count.get, default=None)
        peer = min((n for n in with_count if n in peers), key=with_count.get, default=None)
        if ref and peer:
            verdicts.append(Verdict("10. watching", f"one change to {count:,} subscribers over loopback",
                                    with_count[ref], peer, with_count[peer], higher_is_better=False, unit="ms"))
    return verdicts


def run(env: Env) -> Section:
    samples = 200 if env.quick else NETWORK_SAMPLES
    rounds = 2 if env.quick else FAN_OUT_ROUNDS
    # In process first: its memory per subscription is read from the process's peak resident memory,
    # which the network part's thousands of sockets would raise.
    in_process_markdown, in_process_data = in_process(env)
    network = over_network(env, samples=samples, counts=FAN_OUT_COUNTS, rounds=rounds)
    markdown = "\n\n".join([network_markdown(network, samples=samples, runs=env.runs, rounds=rounds),
                            in_process_markdown])
    return Section("reactivity", "10. Watching PStates", markdown,
                   in_process_data | {"network_latency_ms": network.latency_runs,
                                      "network_answered_ms": network.answered_runs,
                                      "network_fan_out": network.fan_out, "network_notes": network.notes},
                   verdicts=network_verdicts(network))


def main() -> None:
    from bench.suite import standalone

    standalone(run)


if __name__ == "__main__":
    main()
