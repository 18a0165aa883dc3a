"""A round's effects: what one round of a task wrote and what it will send, committed together.

Everything a round does lands here first: its PState writes (over one `Txn`), progress,
metadata, hops, appends to other tasks and replies. `Round.end` writes the
batch, syncs the write-ahead log once if the round appended (group commit), and only then lets
the messages leave, so nobody hears of a write that a crash could still undo.
"""

from __future__ import annotations

from typing import Any

from headwater.engine import messages
from headwater.engine.admission import Admission
from headwater.engine.definitions import Ack
from headwater.engine.messages import Appended, AppendRecord, Busy, Completed
from headwater.engine.meta import U64, UNIQUE_KEY, progress_key
from headwater.engine.transport import Transport
from headwater.engine.txns import add_txn_to_batch
from headwater.pstate import Txn
from headwater.storage import Batch, Store

__all__ = ["Reply", "Round", "RoundWrites", "UniqueIds", "admitted_bytes"]

_FULL = Ack.FULL.value


class Reply:
    """Who waits for a record's processing, and the event bytes their append holds admitted (or None)."""

    __slots__ = ("ack", "admitted_bytes", "client", "request")

    def __init__(self, client: int, request: int, ack: str, admitted_bytes: int | None) -> None:
        self.client = client
        self.request = request
        self.ack = ack
        self.admitted_bytes = admitted_bytes


def admitted_bytes(append: AppendRecord) -> int | None:
    """A client append was admitted with its event's size; a topology's (ctx.append) was not admitted."""
    return len(append.event) if append.client >= 0 else None


class UniqueIds:
    """The task's counter behind `ctx.unique_id()`: task id in the high bits, the count below."""

    __slots__ = ("_task_id", "_count", "_dirty")

    def __init__(self, store: Store, task_id: int) -> None:
        stored = store.get("meta", UNIQUE_KEY)
        self._task_id = task_id
        self._count = U64.unpack(stored)[0] if stored else 0
        self._dirty = False

    def next(self) -> int:
        self._count += 1
        self._dirty = True
        return (self._task_id << 47) | self._count

    def save_into(self, batch: Batch) -> None:
        if self._dirty:
            batch.put("meta", UNIQUE_KEY, U64.pack(self._count))
            self._dirty = False


class RoundWrites:
    """Reads committed state with the writes of whichever round is being run over it.

    An invocation that awaits lives across rounds: its Txn sits over this rather than over one
    round's Txn, so what it reads after an await includes what other invocations committed or
    merged meanwhile, never a finished round's overlay that later writes have replaced.
    """

    __slots__ = ("_round",)

    def __init__(self, round_: Round) -> None:
        self._round = round_

    def get(self, key: bytes) -> bytes | None:
        return self._round.txn.get(key)

    def iterate(self, start: bytes, stop: bytes | None = None, *, reverse: bool = False) -> Any:
        return self._round.txn.iterate(start, stop, reverse=reverse)


class Round:
    """The effects of the round being run (one at a time per task), and the group commit that ends it."""

    __slots__ = ("admission", "batch", "durable_replies", "live", "outgoing", "outgoing_bytes", "progress", "replies",
                 "txn", "unanswered", "unsynced", "_reader", "_store", "_task_id", "_transport", "_unique")

    def __init__(self, store: Store, transport: Transport, task_id: int, unique: UniqueIds) -> None:
        self._store = store
        self._transport = transport
        self._task_id = task_id
        self._unique = unique
        self._reader = store.reader("pstate")
        # The PState writes of the round's invocations (each merged only if it succeeded), its
        # progress and metadata commit in one batch; only then do its messages go out.
        self.batch = Batch()
        self.txn = Txn(self._reader)
        self.live = RoundWrites(self)  # what an awaiting invocation's Txn reads through
        self.outgoing: list[tuple[int, bytes]] = []
        self.outgoing_bytes = 0  # of what handlers of this round sent (hops, appends)
        self.replies: list[tuple[int, bytes]] = []
        self.durable_replies: list[tuple[int, bytes]] = []  # Appended: may leave as soon as the sync is done
        # Full-ack appends made durable this round, by (client, request): their Completed reply
        # usually leaves in the same round and carries the offset, so an Appended reply is sent
        # only for those still processing when the round ends.
        self.unanswered: dict[tuple[int, int], tuple[int, int]] = {}
        self.progress: dict[tuple[str, int], int] = {}  # (topology, depot id) -> next offset
        self.admission = Admission()  # client appends in flight: taken, released as each is answered
        self.unsynced = False  # appends written since the last WAL sync

    # ---- what a round collects ---------------------------------------------------------------
    def send(self, task_id: int, data: bytes) -> None:
        """Send once this round commits."""
        self.outgoing.append((task_id, data))
        self.outgoing_bytes += len(data)

    def send_all(self, outbox: list[tuple[int, bytes]]) -> None:
        self.outgoing.extend(outbox)
        self.outgoing_bytes += sum(len(data) for _, data in outbox)

    def appended(self, append: AppendRecord, offset: int) -> None:
        """A client append is durable once this round syncs: tell it so (a full ack hears it with its results)."""
        if append.ack == _FULL:
            self.unanswered[(append.client, append.request)] = (append.partition, offset)
        elif append.ack != Ack.NONE.value:
            self.durable_replies.append((append.client, messages.encode(Appended(append.request, append.partition,
                                                                                 offset))))

    def complete(self, reply: Reply, partition: int, offset: int, results: dict[str, bytes],
                 errors: list[tuple[str, str, str]], *, failure: str | None = None, kind: str | None = None) -> None:
        """Answer a waiting client (a full ack, or any failure) and give back its admission."""
        if reply.client >= 0 and (reply.ack == _FULL or failure is not None):
            done = Completed(reply.request, partition, offset, results, errors, failure, kind)
            self.replies.append((reply.client, messages.encode(done)))
            if self.unanswered:
                self.unanswered.pop((reply.client, reply.request), None)
        if reply.admitted_bytes is not None:
            self.admission.release(reply.admitted_bytes)

    def busy(self, append: AppendRecord) -> None:
        """A client append the task refused (too many in flight): its client sends it again later."""
        admission = self.admission
        busy = Busy(append.request, self._task_id, admission.count_max, admission.size_bytes_max)
        self.replies.append((append.client, messages.encode(busy)))

    # ---- group commit ------------------------------------------------------------------------
    def sync(self) -> None:
        """Sync the WAL if appends were written since the last sync (their round's writes ride along).

        The sync runs on the thread running the round, which releases the interpreter lock while
        it waits for the disk: appenders run meanwhile. (A separate sync thread would need the
        lock to start and to finish each sync, and while the task computes it gets it late.)
        """
        if self.unsynced:
            self._store.sync()
            self.unsynced = False

    def answer_durable(self) -> None:
        """Sync now and answer the Ack.APPEND appenders, before the round processes anything."""
        self.sync()
        for client, data in self.durable_replies:
            self._transport.reply(client, data)
        if self.durable_replies:
            self.durable_replies.clear()
            self._transport.flush()  # not held back until the round's processing ends

    def end(self) -> None:
        """Commit the round: one batch, one sync for it and the round's appends, then every message."""
        batch = self.batch
        add_txn_to_batch(self.txn, batch)
        if self.progress:
            for (topology, depot_id), cursor in self.progress.items():
                batch.put("meta", progress_key(topology, depot_id), U64.pack(cursor))
            self.progress.clear()
        self._unique.save_into(batch)
        if len(batch):
            self._store.write(batch, sync=False)
            self.batch = Batch()
            self.txn = Txn(self._reader)
        self.answer_durable()  # this round's appends are durable before anyone hears of them
        transport = self._transport
        if self.unanswered:
            for (client, request), (partition, offset) in self.unanswered.items():
                transport.reply(client, messages.encode(Appended(request, partition, offset)))
            self.unanswered.clear()
        for task_id, data in self.outgoing:
            transport.send(task_id, data)
        for client, data in self.replies:
            transport.reply(client, data)
        self.outgoing.clear()
        self.outgoing_bytes = 0
        self.replies.clear()

    def new_txn(self, base: Any = None) -> Txn:
        """An invocation's overlay: over the round's writes, so it reads what earlier events wrote."""
        return Txn(self.txn if base is None else base)
