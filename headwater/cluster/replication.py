"""Replication of a task's store: a leader ships every committed write batch, in order, to followers.

A replicated task (`deploy(module, tasks=N, replication=R)`) has a leader, which runs the task,
and R-1 followers on other workers, which only apply what the leader ships. The engine knows
nothing of it: the leader's task gets a `ShippingStore`, which numbers each write batch, adds its
position (epoch, seq) to the batch itself and sends it to the followers as it is written, and a
`HeldTransport`, which holds every message the task sends (replies, acks, hops) until each
in-sync follower has applied the batch written before it, and synced it if the leader had. So
an append is acknowledged, and anyone hears of a write, only when it is on every in-sync
replica, as only when it is durable on the leader's disk before.

The leader keeps the batches it shipped last (`BACKLOG_BYTES_MAX`) for a follower that fell
behind; a follower further behind, ahead of the leader, or on another history gets a copy of the
whole store (a RocksDB checkpoint sent file by file) and the batches after it. A follower joins
the in-sync set when it has applied everything the leader wrote, and leaves it when it does not
confirm a batch within `REPLICA_ACK_WAIT_S`, so acks never stall on it. Every shipment carries
the leader's epoch; a follower refuses one from an epoch older than the newest it has seen, and
tells that leader, which then releases nothing more: a deposed leader acknowledges nothing.
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import msgspec

from headwater.engine.transport import Transport
from headwater.errors import Unavailable
from headwater.storage import Batch, Reader, RocksStore, Store

__all__ = [
    "BACKLOG_BYTES_MAX",
    "HELD_BYTES_MAX",
    "POSITION_KEY",
    "REPLICA_ACK_WAIT_S",
    "HeldTransport",
    "Leader",
    "Replica",
    "ReplicaSet",
    "ShippingStore",
    "read_position",
    "task_directory",
]

_log = logging.getLogger("headwater.replication")

POSITION_KEY = b"replica/position"  # meta: (epoch, seq) of the last batch written, in that batch
REPLICA_ACK_WAIT_S = 2.0  # a follower that leaves a batch unconfirmed this long leaves the in-sync set
BACKLOG_BYTES_MAX = 64 * 1024 * 1024  # the latest shipped batches a leader keeps for followers catching up
HELD_BYTES_MAX = 64 * 1024 * 1024  # messages held for replication before the task starts no new records
COPY_WAIT_MAX_S = 120.0  # a copy of a store not taken within this is given up, and the follower asked again
SNAPSHOT_CHUNK_BYTES = 1024 * 1024  # a store copy travels in frames of at most this much
REPLICA_QUEUE_MAX = 4096  # shipments a follower has received and not yet applied; beyond, it drops and resyncs
_POSITION = struct.Struct(">QQ")


# ---- what crosses between workers (inside the wire's envelopes) ------------------------------
class Replicate(msgspec.Struct, tag=20, array_like=True):
    """Leader to follower: batch `seq` of term `epoch` (ops empty: only sync up to `seq`)."""

    module: str
    task: int
    epoch: int
    seq: int
    ops: bytes
    sync: bool


class ReplicaAck(msgspec.Struct, tag=21, array_like=True):
    """Follower to leader: everything up to `applied` is applied, up to `durable` synced."""

    module: str
    task: int
    worker: int
    epoch: int
    applied: int
    durable: int


class ReplicaHello(msgspec.Struct, tag=22, array_like=True):
    """Follower to leader: where its store stands, so the leader knows what to send it."""

    module: str
    task: int
    worker: int
    epoch: int
    seq: int


class ReplicaPoll(msgspec.Struct, tag=23, array_like=True):
    """Leader to follower: a leader started; say hello."""

    module: str
    task: int
    epoch: int


class SnapshotChunk(msgspec.Struct, tag=24, array_like=True):
    """Leader to follower: part of a copy of the whole store as of `seq` (`name` "" with `done`: complete)."""

    module: str
    task: int
    epoch: int
    seq: int
    copy: int  # which copy: a follower takes the parts of the one it began, and ignores others
    name: str
    data: bytes
    done: bool


class ReplicaFenced(msgspec.Struct, tag=25, array_like=True):
    """Follower to leader: your epoch is older than `epoch`; another leader took over."""

    module: str
    task: int
    epoch: int


REPLICATION_FRAMES = (Replicate, ReplicaAck, ReplicaHello, ReplicaPoll, SnapshotChunk, ReplicaFenced)

_batch_encoder = msgspec.msgpack.Encoder()
_batch_decoder = msgspec.msgpack.Decoder(tuple[list[tuple[str, bytes, bytes | None]], list[tuple[str, bytes, bytes]]])


def encode_batch(batch: Batch) -> bytes:
    return _batch_encoder.encode((batch.operations, batch.range_deletions))


def decode_batch(data: bytes) -> Batch:
    operations, range_deletions = _batch_decoder.decode(data)
    return Batch(list(operations), list(range_deletions))


# A task's replication as the controller has it: (epoch, replicas with the leader first, in-sync followers).
ReplicaSet = tuple[int, list[int], list[int]]


def task_directory(module_directory: Path, task_id: int, worker: int, replication: int) -> Path:
    """Where one replica of a task keeps its store: `task-<i>` unreplicated, else one per worker
    (on one machine the workers share a disk; on several, each keeps its own under the same path)."""
    return module_directory / (f"task-{task_id}" if replication == 1 else f"task-{task_id}-w{worker}")


def read_position(store: Store) -> tuple[int, int]:
    stored = store.get("meta", POSITION_KEY)
    return _POSITION.unpack(stored) if stored else (0, 0)


# ---- the leader --------------------------------------------------------------------------------
class _Follower:
    __slots__ = ("applied", "applied_at_copy", "copy", "durable", "in_sync", "oldest_unacked", "shipping", "worker")

    def __init__(self, worker: int) -> None:
        self.worker = worker
        self.applied = -1  # unknown until it says hello
        self.durable = -1
        self.in_sync = False
        self.shipping = False  # it gets every new batch (caught up, or catching up from the backlog)
        self.copy = 0  # the copy of the store on its way to it (0: none)
        self.applied_at_copy = 0  # the position that copy is of
        self.oldest_unacked: float | None = None  # when the oldest batch it has not confirmed was shipped


class Leader:
    """The leader side of one replicated task: numbering, shipping, catch-up and the held messages."""

    def __init__(self, module: str, task_id: int, epoch: int, store: RocksStore, directory: Path,
                 followers: list[int], in_sync: list[int], send: Callable[[int, Any], bool],
                 propose: Callable[[int, int, list[int]], bool]) -> None:
        self.module = module
        self.task_id = task_id
        self.epoch = epoch
        self._inner = store
        self._directory = directory
        self._send = send  # (worker, envelope) to a follower's worker, never blocking for long: False if unreachable
        # (task, epoch, in-sync workers): asks the controller to record a new in-sync set; True
        # when it did. A leader the controller no longer knows (deposed, or cut off) gets False.
        self._propose = propose
        self._lock = threading.RLock()
        self.previous_epoch, self.seq = read_position(store)
        self.term_start = self.seq  # batches after this one are of this term
        self.synced = self.seq
        self.fenced = False
        self._followers = {worker: _Follower(worker) for worker in followers}
        for worker in in_sync:  # as the controller recorded it: acks wait for them until it agrees otherwise
            if worker in self._followers:
                self._followers[worker].in_sync = True
        self._backlog: deque[tuple[int, bytes, bool]] = deque()  # (seq, ops, sync) shipped lately
        self._backlog_bytes = 0
        self._held: deque[tuple[int, int, Callable[[int, bytes], None], int, bytes]] = deque()
        self._held_bytes = 0
        self._copies = 0  # copies of the store started, to tell them apart
        self.store = ShippingStore(self, store)

    def start(self) -> None:
        now = time.monotonic()
        for follower in self._followers.values():
            follower.oldest_unacked = now  # polled again by `check` until it says hello
            self._send(follower.worker, ReplicaPoll(self.module, self.task_id, self.epoch))

    # ---- writes: number, ship, keep ------------------------------------------------------------
    def write(self, batch: Batch, sync: bool) -> None:
        # Shipped before this disk syncs, so the followers' disks sync while this one does.
        with self._lock:
            self.seq += 1
            batch.put("meta", POSITION_KEY, _POSITION.pack(self.epoch, self.seq))
            self._inner.write(batch, sync=False)
            ops = encode_batch(batch)
            if sync:
                self.synced = self.seq
            self._keep(self.seq, ops, sync)
            self._ship(self.seq, ops, sync)
        if sync:
            self._inner.sync()

    def sync(self) -> None:
        with self._lock:  # the followers hear of the sync first, so theirs and this one overlap
            if self.synced != self.seq:
                self.synced = self.seq
                self._keep(self.seq, b"", True)
                self._ship(self.seq, b"", True)
        self._inner.sync()

    def _keep(self, seq: int, ops: bytes, sync: bool) -> None:
        self._backlog.append((seq, ops, sync))
        self._backlog_bytes += len(ops) + 64
        while self._backlog_bytes > BACKLOG_BYTES_MAX and len(self._backlog) > 1:
            _, dropped, _ = self._backlog.popleft()
            self._backlog_bytes -= len(dropped) + 64

    def _ship(self, seq: int, ops: bytes, sync: bool) -> None:
        now = time.monotonic()
        for follower in self._followers.values():
            if follower.shipping:
                if follower.oldest_unacked is None:
                    follower.oldest_unacked = now
                self._send(follower.worker, Replicate(self.module, self.task_id, self.epoch, seq, ops, sync))

    # ---- held messages -------------------------------------------------------------------------
    def hold(self, deliver: Callable[[int, bytes], None], destination: int, message: bytes) -> None:
        """Deliver `message` once every in-sync follower has what was written before it."""
        with self._lock:
            if not self._held and self._covered(self.seq, self.synced):
                deliver(destination, message)
                return
            self._held.append((self.seq, self.synced, deliver, destination, message))
            self._held_bytes += len(message)

    def _covered(self, seq: int, synced: int) -> bool:
        if self.fenced:
            return False
        return all(f.applied >= seq and f.durable >= synced for f in self._followers.values() if f.in_sync)

    def _release(self) -> None:
        held = self._held
        while held and self._covered(held[0][0], held[0][1]):
            _, _, deliver, destination, message = held.popleft()
            self._held_bytes -= len(message)
            try:
                deliver(destination, message)
            except Exception:  # a closed transport: the message had nowhere to go
                _log.debug("a released message of task %d of %s could not be delivered", self.task_id, self.module)

    def congested(self) -> bool:
        return self._held_bytes > HELD_BYTES_MAX

    # ---- what followers say ----------------------------------------------------------------------
    def on_frame(self, envelope: Any) -> None:
        with self._lock:
            if isinstance(envelope, ReplicaAck):
                self._on_ack(envelope)
            elif isinstance(envelope, ReplicaHello):
                self._on_hello(envelope)
            elif isinstance(envelope, ReplicaFenced) and envelope.epoch > self.epoch:
                if not self.fenced:
                    _log.error("task %d of %s: a follower has seen epoch %d, newer than this leader's %d; this "
                               "leader acknowledges nothing more", self.task_id, self.module, envelope.epoch,
                               self.epoch)
                self.fenced = True

    def _on_ack(self, ack: ReplicaAck) -> None:
        follower = self._followers.get(ack.worker)
        if follower is None or ack.epoch > self.epoch:
            return
        follower.applied = max(follower.applied, ack.applied)
        follower.durable = max(follower.durable, ack.durable)
        if follower.copy and ack.applied >= follower.applied_at_copy:
            follower.copy = 0  # it took the copy
        if follower.applied >= self.seq and follower.durable >= self.synced:
            follower.oldest_unacked = None  # caught up: `check` proposes it for the in-sync set if it is not
        elif follower.oldest_unacked is not None:
            follower.oldest_unacked = time.monotonic()  # it progresses: the wait starts again
        self._release()

    def _on_hello(self, hello: ReplicaHello) -> None:
        follower = self._followers.get(hello.worker)
        if follower is None:
            return
        _log.info("task %d of %s at (%d, %d): the follower on worker %d says hello at (%d, %d)", self.task_id,
                  self.module, self.epoch, self.seq, hello.worker, hello.epoch, hello.seq)
        # A follower taking a copy says nothing until it has it: a hello means the copy never began
        # there (its start was lost), so whatever this leader sent it is void and it starts again.
        follower.copy = 0
        follower.shipping = False  # in the in-sync set or not, as the controller has it
        follower.applied = follower.durable = -1
        first_kept = self._backlog[0][0] if self._backlog else self.seq + 1
        # Its history is this leader's when it stands within this term, or at or before where this
        # term began on the history this leader recovered (this leader wrote that history too).
        same_history = (hello.epoch == self.epoch and hello.seq <= self.seq) or (
            hello.epoch == self.previous_epoch and hello.seq <= self.term_start)
        if same_history and hello.seq == self.seq:
            follower.applied = follower.durable = hello.seq
            follower.shipping = True
            follower.oldest_unacked = None
        elif same_history and hello.seq + 1 >= first_kept:
            follower.shipping = True
            follower.oldest_unacked = time.monotonic()
            for seq, ops, sync in self._backlog:
                if seq > hello.seq:
                    self._send(follower.worker, Replicate(self.module, self.task_id, self.epoch, seq, ops, sync))
        else:
            self._start_snapshot(follower)
        self._release()  # what waited for it alone, while it was in sync and then silent, leaves now

    def check(self, now: float) -> None:
        """Keep the in-sync set true, through the controller: a follower that left a batch unconfirmed
        longer than `REPLICA_ACK_WAIT_S` leaves it, one that has everything joins it; and a follower
        catching up that went silent is asked again.

        Only the controller changes the set, so a leader cut off from it (and so, perhaps, deposed)
        cannot drop its followers to acknowledge alone: its held messages wait."""
        with self._lock:
            if self.fenced:
                return
            wanted = set()
            for follower in self._followers.values():
                if follower.in_sync:
                    late = follower.oldest_unacked is not None and now - follower.oldest_unacked > REPLICA_ACK_WAIT_S
                    if not late:
                        wanted.add(follower.worker)
                elif (follower.shipping and not follower.copy and follower.applied >= self.seq
                      and follower.durable >= self.synced):
                    wanted.add(follower.worker)
                elif follower.oldest_unacked is not None and now - follower.oldest_unacked > (
                        COPY_WAIT_MAX_S if follower.copy else REPLICA_ACK_WAIT_S):
                    # Catching up and silent (what was sent to it was lost, or it is down): ask again;
                    # its hello, whenever it comes, says what it still needs.
                    follower.shipping = False
                    follower.copy = 0
                    follower.oldest_unacked = now
                    self._send(follower.worker, ReplicaPoll(self.module, self.task_id, self.epoch))
            current = {f.worker for f in self._followers.values() if f.in_sync}
            if wanted == current:
                return
            epoch = self.epoch
        accepted = self._propose(self.task_id, epoch, sorted(wanted))  # a call: never under the lock
        with self._lock:
            if not accepted or self.epoch != epoch:
                return
            for follower in self._followers.values():
                joined = follower.worker in wanted and not follower.in_sync
                left = follower.in_sync and follower.worker not in wanted
                follower.in_sync = follower.worker in wanted
                if joined or left:
                    _log.log(logging.INFO if joined else logging.WARNING,
                             "task %d of %s: the follower on worker %d %s the in-sync set at %d", self.task_id,
                             self.module, follower.worker, "joins" if joined else "leaves (it confirmed nothing "
                             f"for {REPLICA_ACK_WAIT_S}s; it catches up later)", self.seq)
            self._release()

    # ---- copies of the whole store -----------------------------------------------------------------
    def _start_snapshot(self, follower: _Follower) -> None:
        self._copies += 1
        copy = follower.copy = self._copies
        checkpoint = self._directory.with_name(f"{self._directory.name}.copy-{copy}")
        shutil.rmtree(checkpoint, ignore_errors=True)
        self._inner.checkpoint(checkpoint)  # under the lock: no write between it and `seq`
        seq = follower.applied_at_copy = self.seq
        # The copy begins before any later batch on the link: the follower keeps those for after it.
        begin = SnapshotChunk(self.module, self.task_id, self.epoch, seq, copy, "", b"", False)
        if not self._send(follower.worker, begin):
            follower.copy = 0  # its worker is unreachable: `check` asks it again later
            shutil.rmtree(checkpoint, ignore_errors=True)
            return
        follower.shipping = True
        follower.oldest_unacked = time.monotonic()
        threading.Thread(target=self._send_snapshot, args=(follower, checkpoint, seq, copy),
                         name=f"headwater-copy-{self.module}-{self.task_id}", daemon=True).start()

    def _send_snapshot(self, follower: _Follower, checkpoint: Path, seq: int, copy: int) -> None:
        worker = follower.worker
        try:
            for path in sorted(checkpoint.iterdir()):
                with path.open("rb") as file:
                    while follower.copy == copy:
                        data = file.read(SNAPSHOT_CHUNK_BYTES)
                        chunk = SnapshotChunk(self.module, self.task_id, self.epoch, seq, copy, path.name, data, False)
                        if not self._send(worker, chunk):
                            raise Unavailable(f"worker {worker} is unreachable")
                        if len(data) < SNAPSHOT_CHUNK_BYTES:
                            break
            if follower.copy == copy and not self._send(
                    worker, SnapshotChunk(self.module, self.task_id, self.epoch, seq, copy, "", b"", True)):
                raise Unavailable(f"worker {worker} is unreachable")
        except Exception as e:  # its worker went away, or the store closed: it says hello when it can
            _log.info("copying task %d of %s to worker %d stopped: %s", self.task_id, self.module, worker, e)
            with self._lock:
                if follower.copy == copy:
                    follower.copy = 0
                    follower.shipping = False
        finally:
            shutil.rmtree(checkpoint, ignore_errors=True)

    def describe(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{"worker": f.worker, "in_sync": f.in_sync, "lag": max(0, self.seq - f.applied)
                     if f.applied >= 0 else None} for f in self._followers.values()]


class ShippingStore(Store):
    """The leader task's store: every write is numbered and shipped to the followers as it is written."""

    def __init__(self, leader: Leader, inner: RocksStore) -> None:
        self._leader = leader
        self._inner = inner

    def reader(self, column_family: str) -> Reader:
        return self._inner.reader(column_family)

    def write(self, batch: Batch, *, sync: bool) -> None:
        self._leader.write(batch, sync)

    def sync(self) -> None:
        self._leader.sync()

    def close(self) -> None:
        self._inner.close()

    def compact(self, column_family: str, start: bytes, stop: bytes) -> None:
        self._inner.compact(column_family, start, stop)  # local disk space: each copy compacts its own

    def get(self, column_family: str, key: bytes) -> bytes | None:
        return self._inner.get(column_family, key)

    def iterate(self, column_family: str, start: bytes, stop: bytes | None = None, *,
                reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        return self._inner.iterate(column_family, start, stop, reverse=reverse)


class HeldTransport(Transport):
    """The leader task's transport: what it sends leaves once the followers have what came before it."""

    def __init__(self, leader: Leader, inner: Transport) -> None:
        self._leader = leader
        self._inner = inner

    @property
    def peers(self) -> Any:
        return self._inner.peers

    def send(self, task_id: int, message: bytes) -> None:
        self._leader.hold(self._inner.send, task_id, message)

    def reply(self, client_id: int, message: bytes) -> None:
        self._leader.hold(self._inner.reply, client_id, message)

    def flush(self) -> None:
        self._inner.flush()

    def congested(self) -> bool:
        return self._leader.congested() or self._inner.congested()

    def read(self, task_id: int, request: tuple[Any, ...]) -> Any:
        return self._inner.read(task_id, request)

    def consistent_reads(self) -> AbstractContextManager[None]:
        return self._inner.consistent_reads()

    def begin_commit(self, task_id: int, wake: bytes) -> bool:
        return self._inner.begin_commit(task_id, wake)

    def end_commit(self) -> None:
        self._inner.end_commit()


# ---- a follower --------------------------------------------------------------------------------
class Replica:
    """A follower of one task: applies what the leader ships, in order, on a thread of its own."""

    def __init__(self, module: str, task_id: int, worker: int, leader_worker: int, directory: Path,
                 send: Callable[[int, Any], bool]) -> None:
        self.module = module
        self.task_id = task_id
        self.worker = worker
        self.leader_worker = leader_worker
        self._directory = directory
        self._send = send
        self._store: RocksStore | None = RocksStore(directory)
        self.epoch, self.seq = read_position(self._store)  # of the last batch applied
        self.term = self.epoch  # the newest leader epoch heard of: older ones are refused
        self.durable = self.seq
        self._queue: deque[Any] = deque()
        self._ready = threading.Condition()
        self._closed = False
        self._incoming: Path | None = None  # a copy of the leader's store being received
        self._copy = 0  # which copy
        self._after_copy: list[Replicate] = []  # batches shipped while the copy travels
        self._thread = threading.Thread(target=self._run, name=f"headwater-replica-{module}-{task_id}", daemon=True)
        self._thread.start()
        self.hello()  # a leader already running answers; one starting later polls its followers

    def hello(self) -> None:
        self._send(self.leader_worker, ReplicaHello(self.module, self.task_id, self.worker, self.epoch, self.seq))

    def on_frame(self, envelope: Any) -> None:
        with self._ready:
            if len(self._queue) >= REPLICA_QUEUE_MAX:  # fallen far behind: start over from a hello
                self._queue.clear()
                self._queue.append(ReplicaPoll(self.module, self.task_id, self.term))
            else:
                self._queue.append(envelope)
            self._ready.notify()

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._queue and not self._closed:
                    self._ready.wait()
                if self._closed:
                    return
                taken = list(self._queue)
                self._queue.clear()
            try:
                self._apply(taken)
            except Exception:
                _log.exception("replica of task %d of %s failed to apply; asking the leader again", self.task_id,
                               self.module)
                self.hello()

    def _apply(self, frames: list[Any]) -> None:
        sync = changed = False
        for frame in frames:
            if frame.epoch < self.term:
                self._send(self.leader_worker, ReplicaFenced(self.module, self.task_id, self.term))
                continue
            self.term = frame.epoch
            if isinstance(frame, ReplicaPoll):
                if self._incoming is None:  # taking a copy, it says nothing until it has it
                    self.hello()
            elif isinstance(frame, SnapshotChunk):
                changed = self._on_chunk(frame) or changed
            elif self._incoming is not None:
                if len(self._after_copy) < REPLICA_QUEUE_MAX:
                    self._after_copy.append(frame)
            else:
                outcome = self._replicate(frame)
                if outcome is None:
                    return  # a gap: it said hello and waits for what the leader sends
                changed = changed or outcome
                sync = sync or frame.sync
        if self._store is None:
            return
        if sync and self.durable < self.seq:
            self._store.sync()
            self.durable = self.seq
            changed = True
        if changed:
            self._send(self.leader_worker, ReplicaAck(self.module, self.task_id, self.worker, self.term, self.seq,
                                                      self.durable))

    def _replicate(self, frame: Replicate) -> bool | None:
        """Apply one shipment: True if applied, False if had already, None on a gap (after a hello)."""
        if frame.seq <= self.seq:
            return frame.sync and self.durable < frame.seq
        if not frame.ops:
            return False
        if frame.seq != self.seq + 1:
            _log.info("replica of task %d of %s: batch %d after %d; asking the leader to catch it up", self.task_id,
                      self.module, frame.seq, self.seq)
            self.hello()
            return None
        assert self._store is not None
        self._store.write(decode_batch(frame.ops), sync=False)
        self.epoch, self.seq = frame.epoch, frame.seq
        return True

    def _on_chunk(self, chunk: SnapshotChunk) -> bool:
        incoming = self._directory.with_name(f"{self._directory.name}.incoming")
        if not chunk.name and not chunk.done:  # a copy begins
            if self._store is not None:
                self._store.close()
                self._store = None
            shutil.rmtree(incoming, ignore_errors=True)
            incoming.mkdir(parents=True)
            self._incoming, self._after_copy, self._copy = incoming, [], chunk.copy
            return False
        if self._incoming is None or chunk.copy != self._copy:
            return False  # part of a copy this replica did not begin (or gave up for a newer one)
        if chunk.name:
            with (incoming / chunk.name).open("ab") as file:
                file.write(chunk.data)
            return False
        for name in os.listdir(incoming):
            with (incoming / name).open("rb") as file:
                os.fsync(file.fileno())
        shutil.rmtree(self._directory, ignore_errors=True)
        incoming.rename(self._directory)
        self._incoming = None
        self._store = RocksStore(self._directory)
        self.epoch, self.seq = read_position(self._store)
        self.durable = self.seq
        _log.info("replica of task %d of %s: took a copy of the leader's store at %d", self.task_id, self.module,
                  self.seq)
        after, self._after_copy = self._after_copy, []
        for frame in after:
            if self._replicate(frame) is None:
                break
        self._store.sync()
        self.durable = self.seq
        return True

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify()
        self._thread.join(5)
        if self._store is not None:
            self._store.close()
            self._store = None
