"""Workload 7 — the data plane between worker processes: headwater's `Link` against two libraries.

`headwater/cluster/wire.py` frames the messages between a `LocalCluster`'s processes itself
(`Link`: a 4-byte length before each msgpack envelope, combined writes, a reader thread per
connection, calls answered by id). Would a well-kept library do as well? Between two OS
processes on 127.0.0.1, three framings carry the same envelopes (`wire.ToTask`, `wire.Call`,
`wire.Answer`, built by keyword and encoded by msgspec msgpack in all three):

- **headwater Link**, through its public methods as `worker.py` and `local.py` use them:
  `Link.send`, `Link.encode` + `Link.send_frames` for a batch, `Link.call` and `Link.answer`;
- **pyzmq**: PUSH/PULL for one-way messages (a batch is one multipart message, `send_multipart`)
  and DEALER/ROUTER for calls (what many callers sharing one connection would need);
- **asyncio streams** (on uvloop, as headwater's server runs) with a 4-byte length prefix,
  `StreamReader.readexactly` per header and per frame.

Measured, each for `MEASURE_S` seconds (`--quick`: `MEASURE_QUICK_S`) after `WARMUP_S`, with the
framings alternated over at least `ROUNDS_MIN` rounds (the table gives the median and the range
over rounds):

- one-way throughput: the peer process sends envelopes of `PAYLOAD_BYTES` (a hop's or a
  reply's size) as fast as the connection takes them, `BATCHES` envelopes per write; this
  process receives and decodes them. Two in-band markers (`ToTask`s naming module `MARK`, `END`)
  bound the window, so the count is exactly what was sent inside it. CPU is both processes'
  (every thread, zmq's I/O threads too);
- round trips: this process calls, the peer answers, one call outstanding: a `Call` whose
  pickled argument is `CALL_PAYLOAD_BYTES` long, answered by an `Answer` echoing it (values in
  headwater's calls are arbitrary Python objects, hence pickle in all three). `Link` is
  measured twice: answered on the peer's reader thread, and on a thread pool as `worker.py`
  answers calls (one more thread hand-off per call).

    .venv/bin/python -m bench.wire_framing [--quick]
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib.util
import itertools
import multiprocessing
import os
import pickle
import random
import socket
import statistics
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from bench.common import percentile, process_cpu_s
from bench.harness import Env, Section, fmt, ratio, table
from headwater.cluster import wire
from headwater.cluster.wire import Answer, Call, Link, ToTask

LINK = "headwater Link"
LINK_POOL = "headwater Link, answered on a thread pool (as worker.py does all but point reads)"
ZMQ = "pyzmq (PUSH/PULL, DEALER/ROUTER)"
ASYNCIO = "asyncio streams (uvloop) + msgspec"
FRAMINGS = [LINK, ZMQ, ASYNCIO]

PAYLOAD_BYTES = 120  # one-way messages: about a hop's or a reply's engine message
CALL_PAYLOAD_BYTES = 100  # round trips: the call's argument, echoed back by the answer
BATCHES = (1, 64)  # envelopes per write
MEASURE_S = 2.0  # measured seconds per framing, measurement and round
MEASURE_QUICK_S = 0.5
WARMUP_S = 0.3  # sent or called before the measured window opens
ROUNDS_MIN = 3
PEER_START_S = 30.0  # the peer process must connect within this
PEER_STOP_S = 10.0  # ... and exit within this once told to, or it is terminated
CALL_POOL_THREADS = 32  # as WORKER_CALL_THREADS in headwater/cluster/worker.py
MODULE = "orders"  # the module and task named in the envelopes
TASK = 1
MARK, END = "mark", "end"  # the module named by the ToTasks that open and close the measured window
HEADER = struct.Struct(">I")  # the asyncio framing's length prefix, as Link's
SEED = 7
PAYLOAD = random.Random(SEED).randbytes(PAYLOAD_BYTES)
CALL_PAYLOAD = random.Random(SEED + 1).randbytes(CALL_PAYLOAD_BYTES)

_encode = msgspec.msgpack.Encoder().encode
_decode_message = msgspec.msgpack.Decoder(ToTask).decode
_decode_call = msgspec.msgpack.Decoder(Call).decode
_decode_answer = msgspec.msgpack.Decoder(Answer).decode


def echo(value: Any) -> Any:
    return value


def message(module: str = MODULE, payload: bytes = PAYLOAD) -> ToTask:
    """One engine message for a task; the markers name module MARK or END and carry nothing."""
    return ToTask(module=module, task=TASK, message=payload)


def call_of(call: int) -> Call:
    return Call(call=call, op="echo", payload=wire.dumps((CALL_PAYLOAD,)))


def answer_to(call: Call) -> Answer:
    return Answer(call=call.call, ok=True, payload=wire.dumps(echo(*pickle.loads(call.payload))))


# ---- measurements ----------------------------------------------------------------------------------


@dataclass
class Window:
    """What the receiver saw between the markers, and the CPU both processes used meanwhile."""

    peer_pid: int
    count: int = 0
    started: float = 0.0
    cpu: float = 0.0
    counted_at_mark: int = -1
    result: tuple[float, float] | None = None  # messages/s, CPU µs per message

    def mark(self) -> None:
        self.counted_at_mark = self.count
        self.cpu = sum(os.times()[:2]) + process_cpu_s(self.peer_pid)
        self.started = time.perf_counter()

    def take(self, envelope: Any) -> None:
        """Count a message, or act on a marker (the window's start or end)."""
        if envelope.module == MODULE:
            self.count += 1
        elif envelope.module == MARK:
            self.mark()
        else:
            self.end()

    def end(self) -> None:
        elapsed = time.perf_counter() - self.started
        cpu = sum(os.times()[:2]) + process_cpu_s(self.peer_pid) - self.cpu
        messages = self.count - self.counted_at_mark
        if self.counted_at_mark < 0 or messages <= 0:
            raise RuntimeError("the measured window held no message")
        self.result = messages / elapsed, cpu / messages * 1e6


@dataclass
class RoundTrips:
    latencies_s: list[float] = field(default_factory=list)
    per_s: float = 0.0
    cpu_us: float = 0.0  # both processes, per round trip


class Peer:
    """The other process: `_peer(framing, mode, port, ...)` in a fresh interpreter (spawn)."""

    def __init__(self, framing: str, mode: str, port: int, seconds: float, batch: int = 1) -> None:
        context = multiprocessing.get_context("spawn")
        self.process = context.Process(target=_peer, args=(framing, mode, port, seconds, batch),
                                       name=f"wire-framing-{mode}", daemon=True)
        self.process.start()

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def stop(self) -> None:
        self.process.join(PEER_STOP_S)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(PEER_STOP_S)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


def _listener() -> socket.socket:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(PEER_START_S)
    return listener


def one_way(framing: str, batch: int, seconds: float) -> tuple[float, float]:
    """Messages/s received and CPU µs per message (both processes), the peer sending."""
    if framing == LINK:
        return _link_one_way(batch, seconds)
    if framing == ZMQ:
        return _zmq_one_way(batch, seconds)
    return _run_async(_asyncio_one_way(batch, seconds))


def round_trips(framing: str, seconds: float) -> RoundTrips:
    if framing in (LINK, LINK_POOL):
        return _link_round_trips(framing, seconds)
    if framing == ZMQ:
        return _zmq_round_trips(seconds)
    return _run_async(_asyncio_round_trips(seconds))


def _timed_calls(call: Callable[[], Any], seconds: float, peer_pid: int) -> RoundTrips:
    """`call()` back to back for WARMUP_S, then for `seconds` timed."""
    clock = time.perf_counter
    deadline = clock() + WARMUP_S
    while clock() < deadline:
        call()
    out = RoundTrips()
    record = out.latencies_s.append
    cpu = sum(os.times()[:2]) + process_cpu_s(peer_pid)
    began = clock()
    deadline = began + seconds
    while True:
        started = clock()
        if started >= deadline:
            break
        call()
        record(clock() - started)
    elapsed = clock() - began
    cpu = sum(os.times()[:2]) + process_cpu_s(peer_pid) - cpu
    out.per_s = len(out.latencies_s) / elapsed
    out.cpu_us = cpu / max(1, len(out.latencies_s)) * 1e6
    return out


# ---- headwater Link -----------------------------------------------------------------------------------


def _link_one_way(batch: int, seconds: float) -> tuple[float, float]:
    done = threading.Event()
    with _listener() as listener:
        peer = Peer(LINK, "send", listener.getsockname()[1], seconds, batch)
        window = Window(peer.pid)
        link = None
        try:
            sock, _ = listener.accept()

            def on_frame(_: Link, envelope: Any) -> None:
                window.take(envelope)
                if window.result is not None:
                    done.set()

            link = Link(sock, on_frame, "the sending process", on_close=lambda _: done.set()).start()
            done.wait(WARMUP_S + seconds + PEER_START_S)
        finally:
            if link is not None:
                link.close()
            peer.stop()
    if window.result is None:
        raise RuntimeError(f"Link: the sending process stopped early (exit code {peer.process.exitcode})")
    return window.result


def _link_round_trips(framing: str, seconds: float) -> RoundTrips:
    with _listener() as listener:
        peer = Peer(framing, "answer", listener.getsockname()[1], seconds)
        link = None
        try:
            sock, _ = listener.accept()
            link = Link(sock, lambda link, envelope: None, "the answering process").start()
            assert link.call("echo", CALL_PAYLOAD) == CALL_PAYLOAD
            return _timed_calls(lambda: link.call("echo", CALL_PAYLOAD), seconds, peer.pid)
        finally:
            if link is not None:
                link.close()  # the peer exits when its link closes
            peer.stop()


def _link_peer(framing: str, mode: str, port: int, seconds: float, batch: int) -> None:
    closed = threading.Event()
    pool = concurrent.futures.ThreadPoolExecutor(CALL_POOL_THREADS) if framing == LINK_POOL else None

    def on_frame(link: Link, envelope: Any) -> None:
        if type(envelope) is Call:
            if pool is None:
                link.answer(envelope, echo)
            else:
                pool.submit(link.answer, envelope, echo)

    link = wire.connect(port, on_frame, "the measuring process", on_close=lambda _: closed.set())
    if mode == "send":
        if batch == 1:
            _send_for(seconds, lambda: link.send(message()), link.send)
        else:
            _send_for(seconds, lambda: link.send_frames([Link.encode(message())
                                                         for _ in range(batch)]), link.send)
    closed.wait(WARMUP_S + seconds + PEER_STOP_S)


def _send_for(seconds: float, write: Callable[[], None], send_marker: Callable[[Any], None]) -> None:
    """`write()` back to back; the markers go in band WARMUP_S and WARMUP_S + seconds after the first."""
    clock = time.perf_counter
    mark_at = clock() + WARMUP_S
    end_at = mark_at + seconds
    while clock() < mark_at:
        write()
    send_marker(message(MARK, b""))
    while clock() < end_at:
        write()
    send_marker(message(END, b""))


# ---- pyzmq -------------------------------------------------------------------------------------------


def _zmq_one_way(batch: int, seconds: float) -> tuple[float, float]:
    import zmq

    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVTIMEO, int((WARMUP_S + seconds + PEER_START_S) * 1000))
    peer = None
    try:
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        peer = Peer(ZMQ, "send", port, seconds, batch)
        window = Window(peer.pid)
        while window.result is None:
            frames = [pull.recv()] if batch == 1 else pull.recv_multipart()
            for frame in frames:
                envelope = _decode_message(frame)
                window.take(envelope)
        return window.result
    except zmq.Again:
        exit_code = peer.process.exitcode if peer is not None else None
        raise RuntimeError(f"pyzmq: the sending process stopped early (exit code {exit_code})") from None
    finally:
        pull.close(linger=0)
        if peer is not None:
            peer.stop()
        context.term()


def _zmq_round_trips(seconds: float) -> RoundTrips:
    import zmq

    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.RCVTIMEO, int(PEER_START_S * 1000))
    dealer.setsockopt(zmq.SNDTIMEO, int(PEER_START_S * 1000))  # a DEALER with no peer yet blocks its sends
    peer = None
    ids = itertools.count(1)

    def call() -> Any:
        dealer.send(_encode(call_of(next(ids))))
        answer = _decode_answer(dealer.recv())
        return pickle.loads(answer.payload)

    try:
        port = dealer.bind_to_random_port("tcp://127.0.0.1")
        peer = Peer(ZMQ, "answer", port, seconds)
        assert call() == CALL_PAYLOAD
        return _timed_calls(call, seconds, peer.pid)
    finally:
        try:
            dealer.send(b"", zmq.NOBLOCK)  # the peer's signal to stop
        except zmq.ZMQError:
            pass  # no peer to tell: stop() ends it
        finally:
            dealer.close(linger=int(PEER_STOP_S * 1000))
            if peer is not None:
                peer.stop()
            context.term()


def _zmq_peer(mode: str, port: int, seconds: float, batch: int) -> None:
    import zmq

    context = zmq.Context()
    try:
        if mode == "send":
            push = context.socket(zmq.PUSH)
            push.connect(f"tcp://127.0.0.1:{port}")
            if batch == 1:
                _send_for(seconds, lambda: push.send(_encode(message())),
                          lambda marker: push.send(_encode(marker)))
            else:
                _send_for(seconds, lambda: push.send_multipart([_encode(message())
                                                                for _ in range(batch)]),
                          lambda marker: push.send(_encode(marker)))
            push.close(linger=int(PEER_STOP_S * 1000))  # every message delivered before the process exits
            return
        router = context.socket(zmq.ROUTER)
        router.connect(f"tcp://127.0.0.1:{port}")
        router.setsockopt(zmq.RCVTIMEO, int((WARMUP_S + seconds + PEER_START_S) * 1000))
        while True:
            identity, frame = router.recv_multipart()
            if not frame:
                break
            router.send_multipart([identity, _encode(answer_to(_decode_call(frame)))])
        router.close(linger=0)
    finally:
        context.term()


# ---- asyncio streams -----------------------------------------------------------------------------------


def _run_async(coroutine: Any) -> Any:
    try:
        import uvloop
    except ImportError:  # headwater's server depends on it everywhere but Windows
        return asyncio.run(coroutine)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = HEADER.unpack(await reader.readexactly(HEADER.size))
    return await reader.readexactly(size)


def _framed(frames: list[bytes]) -> bytes:
    return b"".join(piece for frame in frames for piece in (HEADER.pack(len(frame)), frame))


async def _serve_once(framing_mode: str, seconds: float, batch: int,
                      handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter, Peer], Any]) -> Any:
    """Start a peer, take its one connection and return `handle(reader, writer, peer)`'s result."""
    loop = asyncio.get_running_loop()
    result: asyncio.Future[Any] = loop.create_future()
    peers: list[Peer] = []

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            result.set_result(await handle(reader, writer, peers[0]))
        except BaseException as e:  # handed to the waiting caller
            if not result.done():
                result.set_exception(e)
        finally:
            writer.close()

    server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        peers.append(Peer(ASYNCIO, framing_mode, port, seconds, batch))
        return await asyncio.wait_for(result, WARMUP_S + seconds + PEER_START_S)
    finally:
        server.close()
        if peers:
            await loop.run_in_executor(None, peers[0].stop)


async def _asyncio_one_way(batch: int, seconds: float) -> tuple[float, float]:
    async def receive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Peer) -> tuple[float, float]:
        window = Window(peer.pid)
        while window.result is None:
            envelope = _decode_message(await _read_frame(reader))
            window.take(envelope)
        return window.result

    result: tuple[float, float] = await _serve_once("send", seconds, batch, receive)
    return result


async def _asyncio_round_trips(seconds: float) -> RoundTrips:
    async def calls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Peer) -> RoundTrips:
        ids = itertools.count(1)

        async def call() -> Any:
            frame = _encode(call_of(next(ids)))
            writer.write(HEADER.pack(len(frame)) + frame)
            await writer.drain()
            return pickle.loads(_decode_answer(await _read_frame(reader)).payload)

        assert await call() == CALL_PAYLOAD
        # _timed_calls, for a coroutine
        clock = time.perf_counter
        deadline = clock() + WARMUP_S
        while clock() < deadline:
            await call()
        out = RoundTrips()
        record = out.latencies_s.append
        cpu = sum(os.times()[:2]) + process_cpu_s(peer.pid)
        began = clock()
        deadline = began + seconds
        while True:
            started = clock()
            if started >= deadline:
                break
            await call()
            record(clock() - started)
        elapsed = clock() - began
        cpu = sum(os.times()[:2]) + process_cpu_s(peer.pid) - cpu
        out.per_s = len(out.latencies_s) / elapsed
        out.cpu_us = cpu / max(1, len(out.latencies_s)) * 1e6
        return out

    result: RoundTrips = await _serve_once("answer", seconds, 1, calls)
    return result


async def _asyncio_peer(mode: str, port: int, seconds: float, batch: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        if mode == "send":
            clock = time.perf_counter
            mark_at = clock() + WARMUP_S
            end_at = mark_at + seconds
            marked = False
            while True:
                now = clock()
                if not marked and now >= mark_at:
                    writer.write(_framed([_encode(message(MARK, b""))]))
                    marked = True
                elif now >= end_at:
                    writer.write(_framed([_encode(message(END, b""))]))
                    await writer.drain()
                    break
                if batch == 1:
                    frame = _encode(message())
                    writer.write(HEADER.pack(len(frame)) + frame)
                else:
                    writer.write(_framed([_encode(message()) for _ in range(batch)]))
                await writer.drain()
            await reader.read()  # until the measuring process closes
            return
        while True:
            try:
                call = _decode_call(await _read_frame(reader))
            except asyncio.IncompleteReadError:
                return  # the measuring process closed: done
            frame = _encode(answer_to(call))
            writer.write(HEADER.pack(len(frame)) + frame)
            await writer.drain()
    finally:
        writer.close()


# ---- the peer process ------------------------------------------------------------------------------


def _peer(framing: str, mode: str, port: int, seconds: float, batch: int) -> None:
    """The other process's side: `mode` "send" (one-way, `batch` per write) or "answer" (calls)."""
    if framing in (LINK, LINK_POOL):
        _link_peer(framing, mode, port, seconds, batch)
    elif framing == ZMQ:
        _zmq_peer(mode, port, seconds, batch)
    else:
        _run_async(_asyncio_peer(mode, port, seconds, batch))


# ---- the workload -----------------------------------------------------------------------------------


def _zmq_missing() -> str:
    if importlib.util.find_spec("zmq") is None:
        return "pyzmq is not installed (`.venv/bin/pip install -e '.[bench]'`): its rows are left out."
    return ""


def run(env: Env) -> Section:
    seconds = MEASURE_QUICK_S if env.quick else MEASURE_S
    rounds = max(env.runs, ROUNDS_MIN)
    note = _zmq_missing()
    framings = [f for f in FRAMINGS if not (note and f == ZMQ)]
    call_framings = [LINK, LINK_POOL, *framings[1:]]
    throughput: dict[tuple[str, int], list[tuple[float, float]]] = {}
    trips: dict[str, list[RoundTrips]] = {}
    for round_index in range(rounds):
        for batch in BATCHES:
            for framing in framings if round_index % 2 == 0 else list(reversed(framings)):
                rate, cpu = one_way(framing, batch, seconds)
                throughput.setdefault((framing, batch), []).append((rate, cpu))
                print(f"  w7 round {round_index + 1} one-way {framing:<40} batch {batch:<3} {rate:12,.0f} msgs/s "
                      f"{cpu:6.2f} µs CPU/msg", flush=True)
        for framing in call_framings if round_index % 2 == 0 else list(reversed(call_framings)):
            measured = round_trips(framing, seconds)
            trips.setdefault(framing, []).append(measured)
            print(f"  w7 round {round_index + 1} round trips {framing:<56} {measured.per_s:9,.0f}/s "
                  f"p50 {percentile(measured.latencies_s, 0.5) * 1e6:7.1f} µs "
                  f"p99 {percentile(measured.latencies_s, 0.99) * 1e6:7.1f} µs", flush=True)
    throughput_data = [{"framing": framing, "batch": batch, "msgs_per_s": [r for r, _ in runs],
                        "cpu_us_per_msg": [c for _, c in runs]} for (framing, batch), runs in throughput.items()]
    trip_data = [{"framing": framing, "per_s": [m.per_s for m in runs], "cpu_us": [m.cpu_us for m in runs],
                  "p50_us": [percentile(m.latencies_s, 0.5) * 1e6 for m in runs],
                  "p99_us": [percentile(m.latencies_s, 0.99) * 1e6 for m in runs]} for framing, runs in trips.items()]
    parts = [f"Two processes on 127.0.0.1; {seconds:g} s measured per framing, measurement and round, "
             f"{rounds} rounds with the framings' order alternated; median over rounds and the range "
             "(min\N{EN DASH}max). CPU counts both processes.",
             "**One-way messages** (msgspec-encoded `ToTask` envelopes carrying "
             f"{PAYLOAD_BYTES} bytes, decoded by the receiver):\n\n" + _throughput_table(throughput_data),
             f"**Round trips**, one call outstanding ({CALL_PAYLOAD_BYTES}-byte argument, pickled, echoed back):\n\n"
             + _round_trip_table(trip_data),
             "How each framing writes: `Link.send` and `Link.send_frames` write at once, one blocking `sendall` "
             "per call (frames other threads queue meanwhile ride along), so a message sent alone is one system "
             "call and, with `TCP_NODELAY`, about one TCP segment, whose loopback delivery the sender pays for; "
             "pyzmq's calls hand messages to its I/O thread, which writes whatever has queued in one go (each part "
             "of a multipart message is still one Python-level send and receive); uvloop writes at once while the "
             "socket takes the data and, once it is full, buffers what the coroutine writes and sends it in one "
             "go, so a sender that outpaces its receiver coalesces. A `Link` call reaches its answer through the "
             "link's reader thread and a `threading.Event` in the caller; `worker.py` also hands every call "
             "to a thread pool."]
    if note:
        parts.append(note)
    return Section("wire", "7. Framing between worker processes: Link, pyzmq, asyncio streams", "\n\n".join(parts),
                   {"throughput": throughput_data, "round_trips": trip_data, "measure_s": seconds, "rounds": rounds,
                    "note": note})


def _span(values: list[float], digits: int = 0) -> str:
    return f"{min(values):,.{digits}f}\N{EN DASH}{max(values):,.{digits}f}"


def _throughput_table(data: list[dict[str, Any]]) -> str:
    by = {(d["framing"], d["batch"]): d for d in data}
    rows = []
    for batch in BATCHES:
        link = by.get((LINK, batch))
        for framing in FRAMINGS:
            d = by.get((framing, batch))
            if d is None:
                continue
            rate = statistics.median(d["msgs_per_s"])
            versus = "" if framing == LINK or link is None else ratio(statistics.median(link["msgs_per_s"]), rate)
            rows.append([str(batch), framing, fmt(rate), _span(d["msgs_per_s"]),
                         fmt(statistics.median(d["cpu_us_per_msg"])), _span(d["cpu_us_per_msg"], 2), versus])
    return table(["messages per write", "framing", "messages/s (median)", "range over rounds", "CPU µs/msg",
                  "CPU range", "Link ÷ framing (above 1\N{MULTIPLICATION SIGN}: Link faster)"], rows)


def _round_trip_table(data: list[dict[str, Any]]) -> str:
    by = {d["framing"]: d for d in data}
    link = by.get(LINK)
    rows = []
    for framing in (LINK, LINK_POOL, *FRAMINGS[1:]):
        d = by.get(framing)
        if d is None:
            continue
        p50 = statistics.median(d["p50_us"])
        versus = "" if framing == LINK or link is None else ratio(statistics.median(link["p50_us"]), p50)
        rows.append([framing, fmt(p50), _span(d["p50_us"]), fmt(statistics.median(d["p99_us"])), _span(d["p99_us"]),
                     fmt(statistics.median(d["per_s"])), fmt(statistics.median(d["cpu_us"])), versus])
    return table(["framing", "p50 µs (median)", "p50 range", "p99 µs (median)", "p99 range", "round trips/s",
                  "CPU µs per round trip", "Link ÷ framing: p50 (below 1\N{MULTIPLICATION SIGN}: Link faster)"], rows)


def main() -> None:
    from bench.suite import standalone

    standalone(run)


if __name__ == "__main__":
    main()
