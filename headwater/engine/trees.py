"""Processing trees rooted on a task: which are running, and when each completes.

A record's tree is its root invocation and every hop and topology append it caused,
transitively. Every invocation reports to the root task with a `TreeAck` carrying the XOR of its
own random id and the ids of the invocations it spawned; when the XOR returns to zero the tree is
complete (order-independent, so acks may arrive in any order across tasks). Then the record's
appender hears the topology's result, and the tree's pending entry (kept so a crash can resend
the root's hops) is deleted in the same round.
"""

from __future__ import annotations

from collections.abc import Callable

from headwater.engine import messages
from headwater.engine.appends import Appends, RecordState
from headwater.engine.messages import AppendRecord, Hop, TreeAck, TreeRef
from headwater.engine.meta import DEPOT_KEY, decode_pending
from headwater.engine.rounds import Reply, Round

__all__ = ["TreeState", "Trees"]


class TreeState:
    """A tree rooted on this task that is still running: the XOR of its outstanding invocation ids."""

    __slots__ = ("errors", "offset", "partition", "pending_key", "record", "reply", "returned", "root_result",
                 "topology", "xor")

    def __init__(self, topology: str, xor: int, record: RecordState | None, *, pending_key: bytes | None = None,
                 reply: Reply | None = None, partition: int = 0, offset: int = 0) -> None:
        self.topology = topology
        self.xor = xor
        self.record = record
        self.pending_key = pending_key
        self.root_result: bytes | None = None
        self.returned: bytes | None = None
        self.errors: list[tuple[str, str]] = []
        self.reply = reply
        self.partition = partition
        self.offset = offset


class Trees:
    def __init__(self, task_id: int, round_: Round, appends: Appends) -> None:
        self._task_id = task_id
        self._round = round_
        self._appends = appends
        self._running: dict[int, TreeState] = {}
        self._seq = 0

    def new(self, state: TreeState) -> TreeRef:
        self._seq += 1
        self._running[self._seq] = state
        return TreeRef(self._task_id, self._seq)

    def send_ack(self, ack: TreeAck) -> None:
        if ack.tree.root_task == self._task_id:
            self.on_ack(ack)
        else:
            self._round.send(ack.tree.root_task, messages.encode(ack))

    def on_ack(self, ack: TreeAck) -> None:
        state = self._running.get(ack.tree.seq)
        if state is None:
            return  # already complete, or from before a restart (recovery resent its hops under a new tree)
        self.settle(ack.tree.seq, state, ack.xor, ack.returned, ack.error_type, ack.error)

    def settle(self, seq: int, state: TreeState, xor: int, returned: bytes | None, error_type: str | None,
               error: str | None) -> None:
        if returned is not None:
            state.returned = returned
        if error is not None:
            state.errors.append((error_type or "Exception", error))
        state.xor ^= xor
        if state.xor == 0:
            self._complete(seq, state)

    def _complete(self, seq: int, state: TreeState) -> None:
        del self._running[seq]
        if state.pending_key is not None:
            self._round.batch.delete("meta", state.pending_key)
        result = state.returned if state.returned is not None else state.root_result
        errors = [(state.topology, kind, text) for kind, text in state.errors]
        if state.record is not None:
            self._appends.tree_done(state.record, state.topology, result, errors)
        if state.reply is not None:
            results = {state.topology: result} if result is not None and not errors else {}
            self._round.complete(state.reply, state.partition, state.offset, results, errors)

    def redrive(self, stored: Callable[[bytes], bytes | None]) -> None:
        """Send every unfinished tree's stored hops and appends again, under a new tree each.

        Another task restarted or moved, so a hop to it, or its ack, may be lost. The old tree's
        acks are ignored from now on (its seq is gone); its waiters carry over to the new one.
        `stored` reads a pending entry (committed: every tree here began in an earlier round)."""
        for seq, state in list(self._running.items()):
            if state.pending_key is None:
                continue
            outbox = stored(state.pending_key)
            if outbox is None:
                continue
            del self._running[seq]
            self.resend(state.topology, state.pending_key, state.offset, outbox, reply=state.reply)

    def resend(self, topology: str, pending_key: bytes, offset: int, stored: bytes, *,
               reply: Reply | None = None) -> None:
        """Finish a tree a crash cut short by sending its root's hops and appends again.

        The root's own writes committed with the pending entry, so they are not redone: only the
        other tasks' parts run again (at-least-once), under a new tree on this task. (`offset` is
        -1 for a microbatch's appends, which belong to no record.)
        """
        pending = decode_pending(stored)
        record = self._appends.records.get(DEPOT_KEY.unpack(pending_key[-10:])) if offset >= 0 else None
        state = TreeState(topology, 0, record, pending_key=pending_key, reply=reply, partition=self._task_id,
                          offset=offset)
        state.root_result, state.returned = pending.root_result, pending.returned
        tree = self.new(state)
        for task_id, data in pending.outbox:
            message = messages.decode(data)
            assert isinstance(message, (Hop, AppendRecord))
            message.tree = tree
            state.xor ^= message.invocation
            self._round.send(task_id, messages.encode(message))
