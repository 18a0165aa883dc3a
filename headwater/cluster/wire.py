"""The data plane between processes: framed messages over TCP, and calls that wait for an answer.

Loopback between the processes of one machine; a `RayCluster` whose nodes are on several machines
links them over the nodes' addresses instead.

A `Link` is one connection. Each frame is a 4-byte big-endian length and a msgpack envelope
(`ToTask`, `ToClient`, `Call`, `Answer`, `Hello`, `Failed`); the engine's own messages ride
inside as the bytes they already are. Frames on one link arrive in the order they were sent,
which keeps the engine's ordering guarantees (per partition, per hop channel). A reader thread
per link hands each frame to its owner; a `Call` is answered by an `Answer` with the same id.

Values in calls (read requests, results, errors) are pickled: both ends are processes of one
cluster running the same trusted code, and keys and results are arbitrary Python objects.
"""

from __future__ import annotations

import itertools
import logging
import pickle
import socket
import struct
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import cloudpickle
import msgspec

from headwater.cluster.replication import (
    ReplicaAck,
    ReplicaFenced,
    ReplicaHello,
    ReplicaPoll,
    Replicate,
    SnapshotChunk,
)
from headwater.errors import HeadwaterError, Unavailable

__all__ = [
    "CALL_TIMEOUT_S",
    "CLIENT_PROCESS_SHIFT",
    "CONNECT_S",
    "FRAME_BYTES_MAX",
    "Answer",
    "Call",
    "Failed",
    "Hello",
    "Link",
    "ToClient",
    "WatchDiffs",
    "ToTask",
    "client_process",
    "connect",
    "dump_error",
    "dumps",
    "load_error",
]

_log = logging.getLogger("headwater.cluster")

FRAME_BYTES_MAX = 256 * 1024 * 1024  # a frame larger than this is a broken or hostile peer: the link closes
CALL_TIMEOUT_S = 60.0  # the longest a call waits for its answer unless the caller says otherwise
CONNECT_S = 10.0  # the longest connecting to another process may take (another machine's, under RayCluster)
_HEADER = struct.Struct(">I")


class ToTask(msgspec.Struct, tag=1, array_like=True):
    """An engine message for task `task` of `module`."""

    module: str
    task: int
    message: bytes


class ToClient(msgspec.Struct, tag=2, array_like=True):
    """A reply for client endpoint `client` of `module`'s deployment (appends' acks, completions)."""

    module: str
    client: int
    message: bytes


# A client endpoint's id names the process that holds it: the supervisor's are below 1 << 40,
# worker w's are (w + 1) << 40 plus a count, so a task replies straight to the right process.
CLIENT_PROCESS_SHIFT = 40


def client_process(client: int) -> int | None:
    """The worker holding client endpoint `client`, or None for the supervisor."""
    process = client >> CLIENT_PROCESS_SHIFT
    return process - 1 if process else None


class Call(msgspec.Struct, tag=4, array_like=True):
    call: int
    op: str
    payload: bytes  # pickled tuple of arguments


class Answer(msgspec.Struct, tag=5, array_like=True):
    call: int
    ok: bool
    payload: bytes  # pickled result, or the error (dump_error)


class Failed(msgspec.Struct, tag=7, array_like=True):
    """Task `task` of `module` stopped on an internal error (`error`): clients must hear it at once."""

    module: str
    task: int
    error: str


class WatchDiffs(msgspec.Struct, tag=8, array_like=True):
    """The diffs of one commit for subscription `watch` of `module`'s deployment, in the process
    that holds it (pickled `hw.diffs`: they hold the user's values)."""

    module: str
    watch: int
    diffs: bytes


class Hello(msgspec.Struct, tag=6, array_like=True):
    """A worker's first frame to the supervisor: who it is and where its peers reach it."""

    worker: int
    port: int
    pid: int
    host: str = "127.0.0.1"  # the address its peers connect to (a RayCluster node's IP, else loopback)


Envelope = (
    ToTask | ToClient | Call | Answer | Hello | Failed | WatchDiffs
    | Replicate | ReplicaAck | ReplicaHello | ReplicaPoll | SnapshotChunk | ReplicaFenced
)
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Envelope)


def dumps(value: Any) -> bytes:
    """Pickle `value`; what plain pickle cannot (a lambda in a path's filter, say) goes by value."""
    try:
        return pickle.dumps(value)
    except (pickle.PicklingError, AttributeError, TypeError):
        return cloudpickle.dumps(value)


def dump_error(error: BaseException) -> bytes:
    """An exception as bytes that `load_error` turns back into the same class and message.

    Headwater's errors take keyword arguments of their own, so they are rebuilt from their
    message and attributes instead of by calling their constructor again.
    """
    if isinstance(error, HeadwaterError) or type(error).__module__ == "builtins":
        try:
            return pickle.dumps((type(error), str(error), vars(error)))
        except Exception:
            pass
    return pickle.dumps((RuntimeError, f"{type(error).__name__}: {error}", {}))


def load_error(data: bytes) -> BaseException:
    cls, message, attributes = pickle.loads(data)
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(attributes)
    return error


class _Pending:
    __slots__ = ("answer", "done")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.answer: Answer | None = None


class Link:
    """One connection: send envelopes, make calls, and hand every frame that arrives to `on_frame`."""

    def __init__(self, sock: socket.socket, on_frame: Callable[[Link, Any], None], name: str,
                 on_close: Callable[[Link], None] | None = None) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._on_frame = on_frame
        self._on_close = on_close
        self.name = name
        self._send_lock = threading.Lock()
        self._queued: deque[bytes] = deque()  # frames waiting for whoever holds the send lock
        self._calls: dict[int, _Pending] = {}
        self._ids = itertools.count(1)
        self.closed = False
        self._reader = threading.Thread(target=self._read, name=f"headwater-link-{name}", daemon=True)

    def start(self) -> Link:
        self._reader.start()
        return self

    # ---- sending -----------------------------------------------------------------------------
    def send(self, envelope: Any) -> None:
        self.send_frames([_encoder.encode(envelope)])

    @staticmethod
    def encode(envelope: Any) -> bytes:
        return _encoder.encode(envelope)

    def send_frames(self, frames: list[bytes]) -> None:
        """Send encoded envelopes in order, with one write.

        Senders combine: whoever holds the link writes everything queued meanwhile with its own
        (16 appenders, one write instead of 16), and a sender that finds the link busy leaves
        its frames to the holder. Order is the order of queueing.
        """
        self._queued.append(b"".join(piece for frame in frames for piece in (_HEADER.pack(len(frame)), frame)))
        while self._queued:
            if not self._send_lock.acquire(blocking=False):
                return  # the holder writes ours too: it looks again after it lets go
            try:
                if self.closed:
                    raise Unavailable(f"the connection to {self.name} is closed")
                data = b"".join(self._queued.popleft() for _ in range(len(self._queued)))
                try:
                    self._sock.sendall(data)
                except OSError as e:
                    raise Unavailable(f"the connection to {self.name} broke: {e}") from e
            finally:
                self._send_lock.release()

    def call(self, op: str, *args: Any, timeout_s: float = CALL_TIMEOUT_S) -> Any:
        """Run `op` on the other end and return its result, or raise its error."""
        call_id = next(self._ids)
        pending = self._calls[call_id] = _Pending()
        try:
            self.send(Call(call_id, op, dumps(args)))
            if not pending.done.wait(timeout_s):
                raise Unavailable(f"{self.name} did not answer {op} within {timeout_s}s")
        finally:
            self._calls.pop(call_id, None)
        answer = pending.answer
        if answer is None:
            raise Unavailable(f"the connection to {self.name} closed before it answered {op}")
        if not answer.ok:
            raise load_error(answer.payload)
        return pickle.loads(answer.payload)

    def answer(self, call: Call, run: Callable[..., Any]) -> None:
        """Run a call that arrived and send its answer (on whatever thread the owner chose)."""
        try:
            result = run(*pickle.loads(call.payload))
            payload, ok = dumps(result), True
        except BaseException as e:
            payload, ok = dump_error(e), False
        try:
            self.send(Answer(call.call, ok, payload))
        except Unavailable:
            pass  # the caller is gone; nobody waits for this answer

    # ---- receiving ---------------------------------------------------------------------------
    def _read(self) -> None:
        reader = self._sock.makefile("rb")
        try:
            while True:
                header = reader.read(_HEADER.size)
                if len(header) < _HEADER.size:
                    return
                (size,) = _HEADER.unpack(header)
                if size > FRAME_BYTES_MAX:
                    return
                frame = reader.read(size)
                if len(frame) < size:
                    return
                try:
                    envelope = _decoder.decode(frame)
                except msgspec.DecodeError as e:  # the length framing still holds: drop this frame only
                    _log.error("dropped a frame from %s that is not a headwater envelope: %s", self.name, e)
                    continue
                if isinstance(envelope, Answer):
                    pending = self._calls.get(envelope.call)
                    if pending is not None:
                        pending.answer = envelope
                        pending.done.set()
                else:
                    self._on_frame(self, envelope)
        except (OSError, ValueError, msgspec.DecodeError):
            return
        finally:
            self.close()

    def close(self) -> None:
        with self._send_lock:
            if self.closed:
                return
            self.closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        for pending in list(self._calls.values()):
            pending.done.set()  # answer None: the caller hears the link closed
        if self._on_close is not None:
            self._on_close(self)


def connect(port: int, on_frame: Callable[[Link, Any], None], name: str,
            on_close: Callable[[Link], None] | None = None, *, host: str = "127.0.0.1") -> Link:
    sock = socket.create_connection((host, port), timeout=CONNECT_S)
    sock.settimeout(None)  # the bound was for connecting; a link then waits for frames as long as it lives
    return Link(sock, on_frame, name, on_close).start()
