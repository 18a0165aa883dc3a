"""The client API over a deployed module: depots, PState views, queries, dead letters.

Everything here talks to tasks only through the deployment's transport, so the same classes
serve an in-process cluster now and a cluster of processes later.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from headwater.client.replies import (
    BUSY_BACKOFF_MIN_S,
    UNCONFIRMED_BYTES_MAX,
    UNCONFIRMED_MAX,
    FireGroup,
    Waiter,
    next_backoff,
)
from headwater.client.seam import DeployedModule
from headwater.client.subscriptions import depot_watch
from headwater.engine import messages
from headwater.engine.definitions import Ack
from headwater.engine.messages import AppendBatch, AppendRecord, Completed, RetryDeadLetter
from headwater.engine.query import routed_view
from headwater.engine.runtime import DepotRuntime
from headwater.errors import (
    AckTimeout,
    HandlerError,
    IdempotencyConflict,
    NotFound,
    PermissionDenied,
    SchemaError,
    Unavailable,
)

__all__ = ["AppendResult", "DeadLetter", "DepotClient", "DepotRecord", "PartitionInfo", "pstate_view", "tail_records"]


class AppendResult:
    """Where an event landed and what each stream topology returned for it.

    `append` returns one for `Ack.FULL` and `Ack.APPEND` (None for `Ack.NONE`). `result[name]`
    is topology `name`'s return value, and raises `NotFound` if there is none.

    Attributes:
        partition: The depot partition the event was appended to.
        offset: Its offset in that partition.
        results: `{topology: return value}` of the stream topologies that processed it; empty
            for `Ack.APPEND`, which does not wait for processing.
    """

    __slots__ = ("partition", "offset", "results")

    def __init__(self, partition: int, offset: int, results: dict[str, Any]) -> None:
        self.partition = partition
        self.offset = offset
        self.results = results

    def __getitem__(self, topology: str) -> Any:
        try:
            return self.results[topology]
        except KeyError:
            raise NotFound("topology result", topology, self.results) from None

    def get(self, topology: str, default: Any = None) -> Any:
        """Topology `topology`'s return value, or `default` if it has none here.

            result = cluster.depot("bank", "deposits").append(Deposit(1, 100))
            result.get("deposit")                   # 100
            result.get("no_such_topology", 0)       # 0
        """
        return self.results.get(topology, default)

    def __repr__(self) -> str:
        return f"AppendResult(partition={self.partition}, offset={self.offset}, results={self.results!r})"


@dataclass(frozen=True, slots=True)
class DepotRecord:
    """One record of a depot, as `read` and `tail` return it.

    Attributes:
        partition: The partition it is in.
        offset: Its position in the partition: 0 for the first record, then one more each.
        timestamp: When its task wrote it, as an aware UTC `datetime`.
        event: The event, decoded into the depot's event type.
    """

    partition: int
    offset: int
    timestamp: datetime
    event: Any


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    """The extent of one depot partition, as `partition_info` returns it.

    Attributes:
        partition: The partition described.
        start_offset: The first offset still stored: 0, unless the depot's retention trimmed older records.
        end_offset: The offset the next append will get; with nothing deleted, the record count.
    """

    partition: int
    start_offset: int
    end_offset: int  # the offset the next append will get


HEALTH_CHECK_S = 0.5  # how often a waiting appender checks that its module's tasks still run


def raise_failure(message: Completed, what: str) -> None:
    if message.failure is not None:
        kinds = {"IdempotencyConflict": IdempotencyConflict, "Unavailable": Unavailable, "NotFound": Unavailable}
        raise kinds.get(message.failure_kind or "", Unavailable)(f"{what}: {message.failure}")
    if message.errors:
        topology, error_type, text = message.errors[0]
        more = f" ({len(message.errors) - 1} more errors)" if len(message.errors) > 1 else ""
        raise HandlerError(
            f"topology {topology!r} raised {error_type} processing {what} (partition {message.partition}, "
            f"offset {message.offset}){more}; the event is durable and the failure is in "
            f"cluster.dead_letters(..., {topology!r})",
            remote_traceback=text, error_type=error_type, topology=topology,
            partition=message.partition, offset=message.offset,
        )


class DepotClient:
    """A client of one depot: append events, read its partitions, follow new records.

    `cluster.depot(module, name)` returns one (`module` and `name` are its attributes). It looks
    the depot up on every call, so it stays valid across `cluster.update(module)`; once the
    module stops, its calls raise `Unavailable`. `hw.connect(...).depot(...)` has the same
    methods over HTTP.

        deposits = cluster.depot("bank", "deposits")
        result = deposits.append(Deposit(1, 100))               # waits for the stream topologies
        result["deposit"]                                       # 100
        deposits.append(Deposit(1, 5), ack="append")            # waits only until it is on disk
        deposits.read(result.partition, result.offset)[0].event # Deposit(user_id=1, amount=100)
    """

    def __init__(self, deployment: DeployedModule, depot: DepotRuntime) -> None:
        self._deployment = deployment
        self.name = depot.name
        self.module = deployment.runtime.name

    @property
    def _depot(self) -> DepotRuntime:
        # Looked up per call, so a client stays valid across cluster.update(module).
        return self._deployment.runtime.depot(self.name)

    def __repr__(self) -> str:
        return f"<DepotClient {self.module}.{self.name} partitions={self._depot.partitions}>"

    @property
    def partitions(self) -> int:
        """How many partitions the depot has (numbered from 0): the module's task count, or 1 if unpartitioned."""
        return self._depot.partitions

    # ---- appends --------------------------------------------------------------------------
    def _prepare(self, events: list[Any], idempotency_key: str | None = None) -> list[tuple[bytes, int]]:
        """Validate and encode every event, and pick its partition, before any is sent: a bad event
        anywhere in a batch raises here and nothing of the batch is appended."""
        depot = self._depot
        if depot.decl.source is not None:
            raise PermissionDenied(
                f"depot {self.module}.{self.name} is an external depot: only its source "
                f"({depot.decl.source.describe()}) appends to it; write to the source instead"
            )
        if not depot.decl.client_appends:
            raise PermissionDenied(
                f"depot {self.module}.{self.name} takes appends only from its module's topologies "
                "(client_appends=False); append to another depot or from a topology with ctx.append"
            )
        if idempotency_key is not None and not isinstance(idempotency_key, str):
            raise ValueError(f"idempotency_key must be a str, not {type(idempotency_key).__name__}")
        encoded = []
        for index, event in enumerate(events):
            try:
                encoded.append(depot.codec.encode(event))
            except SchemaError as e:
                if len(events) == 1:
                    raise
                raise SchemaError(f"event {index} of the batch: {e}; nothing of the batch was appended",
                                  path=f"$[{index}]{e.path.removeprefix('$')}") from None
        return [(data, depot.partition_for(validated, idempotency_key)) for data, validated in encoded]

    def _groups(self, prepared: list[tuple[bytes, int]]) -> dict[int, list[int]]:
        """The indices of `prepared`, in order, by the task each goes to: one message per task."""
        depot = self._depot
        groups: dict[int, list[int]] = {}
        for index, (_, partition) in enumerate(prepared):
            groups.setdefault(depot.task_of_partition(partition), []).append(index)
        return groups

    def _send(self, task: int, items: list[tuple[bytes, int]], waiters: list[Waiter], ack: Ack,
              idempotency_key: str | None, *, caller_waits: bool = False, timeout_s: float = 0.0) -> None:
        """Send appends to `task` in one message, which the task admits whole or answers Busy."""
        deployment = self._deployment
        router, depot_id, client = deployment.router, self._depot.depot_id, deployment.client_id
        records = [AppendRecord(depot_id, partition, data, ack.value, client, router.reregister(waiter),
                                idempotency_key)
                   for (data, partition), waiter in zip(items, waiters, strict=True)]
        message = messages.encode(records[0] if len(records) == 1 else AppendBatch(records))
        try:
            deployment.transport.submit_append(task, message, caller_waits=caller_waits, timeout_s=timeout_s)
        except BaseException:
            for waiter in waiters:
                router.forget(waiter.request)
            raise

    def _dispatch(self, task: int, indices: list[int], prepared: list[tuple[bytes, int]], waiters: list[Waiter],
                  ack: Ack, idempotency_key: str | None, loop: asyncio.AbstractEventLoop | None = None, *,
                  caller_waits: bool = False, timeout_s: float = 0.0) -> None:
        """(Re)send the appends at `indices` to `task`, with a fresh waiter each (in `waiters`)."""
        for index in indices:
            waiters[index] = Waiter(prepared[index][1], loop=loop, durable=ack is Ack.APPEND)
        self._send(task, [prepared[i] for i in indices], [waiters[i] for i in indices], ack, idempotency_key,
                   caller_waits=caller_waits, timeout_s=timeout_s)

    def _fire(self, prepared: list[tuple[bytes, int]], timeout: float, idempotency_key: str | None) -> None:
        """Ack.NONE: send and return; each append is confirmed by its Appended reply, or sent again
        by the router if its task refused it (Busy), until `timeout`."""
        deployment = self._deployment
        router = deployment.router
        deadline = time.monotonic() + timeout
        for task, indices in self._groups(prepared).items():
            items = [prepared[i] for i in indices]

            def send(group: FireGroup, task: int = task, items: list[tuple[bytes, int]] = items) -> None:
                # Sent as Ack.APPEND, which the task confirms once durable, and not waited for here.
                self._send(task, items, group.waiters, Ack.APPEND, idempotency_key)

            group = FireGroup(send, [Waiter(partition, durable=True) for _, partition in items],
                              [len(data) for data, _ in items], deadline)
            if not router.reserve(group, timeout):
                raise AckTimeout(
                    f"{UNCONFIRMED_MAX} Ack.NONE appends (or {UNCONFIRMED_BYTES_MAX:,} event bytes) to module "
                    f"{self.module!r} are not yet confirmed durable (their tasks are busy) and none made room within "
                    f"{timeout}s; nothing more was appended. Retry later, raise the timeout, or use Ack.APPEND to "
                    "wait for each append"
                )
            send(group)

    def _busy_timeout(self, waiter: Waiter, timeout: float) -> AckTimeout:
        busy = waiter.busy
        assert busy is not None
        return AckTimeout(
            f"task {busy.task} of module {self.module!r} holds {busy.appends_max} appends or "
            f"{busy.bytes_max:,} event bytes in flight and admitted none within {timeout}s; nothing was "
            "appended. Retry later or raise the timeout", partition=waiter.partition,
        )

    def _append_prepared(self, prepared: list[tuple[bytes, int]], ack: Ack, timeout: float,
                         idempotency_key: str | None = None, *, waits_here: bool = False) -> list[AppendResult | None]:
        """Send every prepared event (one message per task), wait for each in input order, and send
        again, after a back-off, what a busy task refused; results in input order."""
        self._deployment.check_open()
        if ack is Ack.NONE:
            self._fire(prepared, timeout, idempotency_key)
            return [None] * len(prepared)
        deadline = time.monotonic() + timeout
        groups = self._groups(prepared)
        waiters: list[Waiter] = [None] * len(prepared)  # type: ignore[list-item]  # filled by _dispatch
        for task, indices in groups.items():
            self._dispatch(task, indices, prepared, waiters, ack, idempotency_key, caller_waits=waits_here,
                           timeout_s=timeout)
        backoff = dict.fromkeys(groups, BUSY_BACKOFF_MIN_S)
        results: list[AppendResult | None] = []
        for index in range(len(prepared)):
            while True:
                waiter = waiters[index]
                if not self._wait(waiter.wait_durable if ack is Ack.APPEND else waiter.wait_done, deadline):
                    raise self._timeout(waiter, ack, timeout)
                if waiter.busy is None:
                    break
                # Its task refused its whole message: send all of that message again, in order.
                task = self._depot.task_of_partition(waiter.partition)
                if deadline - time.monotonic() <= backoff[task]:  # no time to send it again and hear back
                    raise self._busy_timeout(waiter, timeout)
                time.sleep(backoff[task])
                backoff[task] = next_backoff(backoff[task])
                self._deployment.check_open()
                self._dispatch(task, groups[task], prepared, waiters, ack, idempotency_key,
                               caller_waits=waits_here, timeout_s=timeout)
            results.append(self._outcome(waiter, ack))
        return results

    def _outcome(self, waiter: Waiter, ack: Ack) -> AppendResult:
        if ack is Ack.APPEND:
            if waiter.completed is not None:
                raise_failure(waiter.completed, f"an event of {self.module}.{self.name}")
            return AppendResult(waiter.partition, waiter.offset or 0, {})
        return self._completed(waiter)

    def _wait(self, wait: Callable[[float], bool], deadline: float) -> bool:
        """`wait` until `deadline`, checking every HEALTH_CHECK_S that the module's tasks still run:
        a task stopped by an internal error raises Unavailable now, not at the deadline."""
        while True:
            remaining = deadline - time.monotonic()
            if wait(max(0.0, min(remaining, HEALTH_CHECK_S))):
                return True
            if remaining <= HEALTH_CHECK_S:
                return False
            self._deployment.check_open()

    def _completed(self, waiter: Waiter) -> AppendResult:
        message = waiter.completed
        assert message is not None
        raise_failure(message, f"an event of {self.module}.{self.name}")
        results = {topology: messages.loads(value) for topology, value in message.results.items()}
        return AppendResult(message.partition, message.offset, results)

    def _timeout(self, waiter: Waiter, ack: Ack, timeout: float) -> AckTimeout:
        self._deployment.router.forget(waiter.request)  # nobody waits for a late reply
        self._deployment.check_open()
        if waiter.offset is not None:
            return AckTimeout(
                f"no {ack.value} ack from {self.module}.{self.name} within {timeout}s; the event is durable at "
                f"partition {waiter.partition}, offset {waiter.offset} and will still be processed",
                partition=waiter.partition, offset=waiter.offset,
            )
        return AckTimeout(
            f"no ack from {self.module}.{self.name} within {timeout}s and the event is not yet confirmed durable "
            f"(partition {waiter.partition}); append again with the same idempotency_key to be sure it lands once",
            partition=waiter.partition,
        )

    def append(self, event: Any, *, ack: Ack | str = Ack.FULL, timeout: float = 30.0,
               idempotency_key: str | None = None) -> AppendResult | None:
        """Append `event`; with Ack.FULL wait until every stream topology processed it.

        A task holding too many appends in flight answers Busy and nothing is appended; the
        append is sent again after a short back-off until `timeout`, then raises `AckTimeout`.
        """
        ack = Ack.parse(ack)
        # A full ack from a thread that would only wait may run the task's round itself. Not from
        # the main thread: a Ctrl-C there must interrupt the wait, never a round half-way.
        waits_here = ack is Ack.FULL and threading.current_thread() is not threading.main_thread()
        return self._append_prepared(self._prepare([event], idempotency_key), ack, timeout, idempotency_key,
                                     waits_here=waits_here)[0]

    def append_many(self, events: Iterable[Any], *, ack: Ack | str = Ack.FULL,
                    timeout: float = 30.0) -> list[AppendResult | None]:
        """Append several events, submitted together so they share fsyncs; results in input order.

        Every event is validated before any is appended: a bad one raises `SchemaError` naming
        its index, and nothing of the batch is appended. The events bound for one task travel in
        one message, so those of one partition are appended in input order.
        """
        return self._append_prepared(self._prepare(list(events)), Ack.parse(ack), timeout)

    async def append_many_async(self, events: Iterable[Any], *, ack: Ack | str = Ack.FULL,
                                timeout: float = 30.0) -> list[AppendResult | None]:
        """`append_many` for asyncio: the same arguments, results and errors.

        Every event is validated before any is appended (a bad one raises `SchemaError` naming
        its index, and nothing is appended); then all are submitted and awaited together. If
        some fail, the first failure in input order is raised; the other events stay appended.

            results = await deposits.append_many_async([Deposit(1, 10), Deposit(2, 20)])
        """
        ack = Ack.parse(ack)
        prepared = self._prepare(list(events))
        if ack is not Ack.FULL:  # durability acks are a group-commit away; waiting in a thread is fine
            return await asyncio.to_thread(self._append_prepared, prepared, ack, timeout)
        return await self._append_full_async(prepared, timeout, None)  # type: ignore[return-value]

    async def append_async(self, event: Any, *, ack: Ack | str = Ack.FULL, timeout: float = 30.0,
                           idempotency_key: str | None = None) -> AppendResult | None:
        """`append` for asyncio: the same arguments, result and errors.

        With `Ack.FULL` the wait for the topologies, and the back-off when the task is busy, are
        on the event loop, which is not blocked; other acks run `append` in a worker thread.

            result = await cluster.depot("bank", "deposits").append_async(Deposit(1, 100))
        """
        ack = Ack.parse(ack)
        if ack is not Ack.FULL:  # durability acks are a group-commit away; waiting in a thread is fine
            return await asyncio.to_thread(self.append, event, ack=ack, timeout=timeout,
                                           idempotency_key=idempotency_key)
        return (await self._append_full_async(self._prepare([event], idempotency_key), timeout, idempotency_key))[0]

    async def _append_full_async(self, prepared: list[tuple[bytes, int]], timeout: float,
                                 idempotency_key: str | None) -> list[AppendResult]:
        """`_append_prepared` for Ack.FULL on the event loop; the first failure in input order is raised."""
        self._deployment.check_open()
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout
        groups = self._groups(prepared)
        waiters: list[Waiter] = [None] * len(prepared)  # type: ignore[list-item]  # filled by _dispatch
        for task, indices in groups.items():
            self._dispatch(task, indices, prepared, waiters, Ack.FULL, idempotency_key, loop)
        backoff = dict.fromkeys(groups, BUSY_BACKOFF_MIN_S)
        results: list[AppendResult] = []
        failure: BaseException | None = None
        for index in range(len(prepared)):
            while True:
                waiter = waiters[index]
                if not await waiter.wait_done_async(deadline - time.monotonic()):
                    raise self._timeout(waiter, Ack.FULL, timeout)
                if waiter.busy is None:
                    break
                task = self._depot.task_of_partition(waiter.partition)
                if deadline - time.monotonic() <= backoff[task]:  # no time to send it again and hear back
                    raise self._busy_timeout(waiter, timeout)
                await asyncio.sleep(backoff[task])
                backoff[task] = next_backoff(backoff[task])
                self._deployment.check_open()
                self._dispatch(task, groups[task], prepared, waiters, Ack.FULL, idempotency_key, loop)
            try:
                results.append(self._completed(waiter))
            except Exception as e:  # the others stay appended: wait for them, then raise the first
                failure = failure or e
        if failure is not None:
            raise failure
        return results

    # ---- reading the log ------------------------------------------------------------------
    def _check_partition(self, partition: int) -> int:
        if not isinstance(partition, int) or not 0 <= partition < self._depot.partitions:
            raise ValueError(
                f"depot {self.module}.{self.name} has partitions 0..{self._depot.partitions - 1}, not {partition!r}"
            )
        return partition

    def partition_info(self, partition: int) -> PartitionInfo:
        """The offsets of `partition` now; `ValueError` if it is not 0 to `partitions` - 1.

            deposits.partition_info(0).end_offset   # the offset the next append there gets
        """
        self._check_partition(partition)
        start, end = self._deployment.transport.read(self._depot.task_of_partition(partition),
                                                     ("depot_bounds", self._depot.depot_id))
        return PartitionInfo(partition, start, end)

    def watch_end(self, partition: int, callback: Any = None, *, on_commit: Any = None) -> Any:
        """Subscribe to the end offset of `partition`: an `hw.Subscription` whose `.value` is the
        offset the next append there gets, and whose diffs (`Put((), end)`, or a `Resync`) come
        after every commit that appends there. Read the new records with `read` (`tail` does
        both). `callback` and `on_commit` are as for a PState's `watch`.

            with deposits.watch_end(0) as end:
                for _ in end:
                    print(deposits.read(0, seen, end.value))
        """
        self._check_partition(partition)
        label = f"depot {self.module}.{self.name} partition {partition}"
        watch = getattr(self._deployment, "watch", None)
        if watch is None:
            raise Unavailable(f"{label} cannot be watched on this kind of cluster")
        return watch(self._depot.task_of_partition(partition), depot_watch(self.name), (), callback, label,
                     on_commit=on_commit)

    def read(self, partition: int, start: int = 0, stop: int | None = None, *,
             limit: int = 10_000) -> list[DepotRecord]:
        """Records of `partition` with start <= offset < stop, oldest first, at most `limit` of them.

        `stop=None` reads up to `limit` records from `start`. Offsets past the end are simply not
        there: a read from `partition_info(p).end_offset` returns `[]`. A partition that is not
        0 to `partitions` - 1 raises `ValueError`.

            deposits.read(0)                        # the first 10,000 records of partition 0
            deposits.read(0, 100, 200)              # offsets 100 to 199
        """
        self._check_partition(partition)
        start = max(0, start)  # before the window is worked out: read(p, -3, limit=2) reads offsets 0 and 1
        if stop is None or stop - start > limit:
            stop = start + limit
        raw = self._deployment.transport.read(self._depot.task_of_partition(partition),
                                              ("depot_read", self._depot.depot_id, start, max(start, stop)))
        decode = self._depot.codec.decode
        return [DepotRecord(partition, offset, datetime.fromtimestamp(ts / 1e6, tz=UTC), decode(event))
                for offset, ts, event in raw]

    def tail(self, *, from_offset: int | dict[int, int] | None = None, partitions: Iterable[int] | None = None,
             poll_s: float = 0.02, idle_timeout_s: float | None = None) -> Iterator[DepotRecord]:
        """Iterate records as they are appended, from `from_offset` (default: the current end).

        `from_offset` is one offset for every partition, or `{partition: offset}` (a partition
        missing from it starts at 0); the default end is taken when `tail` is called, not at the
        first `next()`. `partitions` limits it to some partitions (default: all; one out of
        range raises `ValueError`). Each partition's records come in offset order. It is woken by
        each commit to a followed partition, and reads them again every `poll_s` seconds anyway
        (through `hw.connect`, the server pushes them over its tail WebSocket). The iterator ends when
        the module stops or the cluster closes, or after `idle_timeout_s` seconds without a new
        record (default: never).

            for record in deposits.tail(from_offset=0, idle_timeout_s=1.0):
                print(record.partition, record.offset, record.event)
        """
        return tail_records(self, from_offset, partitions, poll_s, idle_timeout_s, lambda: self._deployment.closed)


def tail_records(depot: Any, from_offset: int | dict[int, int] | None, partitions: Iterable[int] | None,
                 poll_s: float, idle_timeout_s: float | None, closed: Callable[[], bool]) -> Iterator[DepotRecord]:
    """`tail` for any depot client with `partitions`, `partition_info(p)` and `read(p, start, stop)`."""
    chosen = list(partitions) if partitions is not None else list(range(depot.partitions))
    if isinstance(from_offset, dict):
        cursors = {p: from_offset.get(p, 0) for p in chosen}
    elif from_offset is not None:
        cursors = {p: from_offset for p in chosen}
    else:
        cursors = {p: depot.partition_info(p).end_offset for p in chosen}  # now, not at the first next()
    return _follow(depot, chosen, cursors, poll_s, idle_timeout_s, closed)


def _follow(depot: Any, chosen: list[int], cursors: dict[int, int], poll_s: float,
            idle_timeout_s: float | None, closed: Callable[[], bool]) -> Iterator[DepotRecord]:
    committed = threading.Event()  # set by a commit to a followed partition, where the cluster can watch them
    watches = _watch_ends(depot, chosen, committed)
    idle_since = time.monotonic()
    try:
        while not closed():
            committed.clear()  # before reading: a commit from now on ends the wait below
            found = False
            for partition in chosen:
                for record in depot.read(partition, cursors[partition], cursors[partition] + 1000):
                    cursors[partition] = record.offset + 1
                    found = True
                    yield record
            if found:
                idle_since = time.monotonic()
            elif idle_timeout_s is not None and time.monotonic() - idle_since >= idle_timeout_s:
                return
            else:
                wait_s = poll_s if idle_timeout_s is None else min(poll_s, idle_timeout_s)
                committed.wait(wait_s)
    finally:
        for watch in watches:
            watch.close()


def _watch_ends(depot: Any, chosen: list[int], committed: threading.Event) -> list[Any]:
    """Watches of the followed partitions' end offsets that wake `_follow` at each commit; none where
    the cluster cannot watch them (a module restarting), which then reads every `poll_s`."""
    watch_end = getattr(depot, "watch_end", None)
    watches: list[Any] = []
    if watch_end is None:
        return watches
    try:
        for partition in chosen:
            watches.append(watch_end(partition, lambda _diff, _value: committed.set()))
    except Unavailable:  # not here (a kind of cluster without watches, or a module restarting): poll
        for watch in watches:
            watch.close()
        return []
    return watches


def pstate_view(deployment: DeployedModule, name: Any, task: int | None = None) -> Any:
    return routed_view(deployment, name, task)


class DeadLetter:
    """A failed invocation of a stream topology, kept with its traceback until retried.

        for dead in cluster.dead_letters("bank", "transfer"):
            print(dead.offset, dead.error_type, dead.event)
            print(dead.traceback)        # where the handler raised
            dead.retry()                 # after fixing the cause: runs it again, once
    """

    def __init__(self, deployment: DeployedModule, entry: Any) -> None:
        self._deployment = deployment
        self.entry = entry
        self.id: int = entry.id
        self.topology: str = entry.topology
        self.kind: str = entry.kind
        self.task: int = entry.task
        self.depot: str = entry.depot
        self.partition: int = entry.partition
        self.offset: int = entry.offset
        self.step: str | None = entry.step
        self.error_type: str = entry.error_type
        self.traceback: str = entry.traceback
        self.attempts: int = entry.attempts

    def __repr__(self) -> str:
        where = f"step {self.step!r}" if self.step else "record"
        return (f"<DeadLetter {self.topology} {where} partition={self.partition} offset={self.offset} "
                f"{self.error_type} attempts={self.attempts}>")

    @property
    def event(self) -> Any:
        """The depot record whose processing failed (read from the depot; it is never deleted)."""
        depot = self._deployment.runtime.depot(self.entry.depot)
        raw = self._deployment.transport.read(
            depot.task_of_partition(self.partition), ("depot_read", depot.depot_id, self.offset, self.offset + 1))
        return depot.codec.decode(raw[0][2]) if raw else None

    def retry(self, *, timeout: float = 30.0) -> Any:
        """Run the failed invocation again; returns its result, or raises HandlerError if it fails again."""
        deployment = self._deployment
        deployment.check_open()  # a closed cluster answers now, not after `timeout`
        waiter = Waiter(self.partition)
        request = deployment.router.register(waiter)
        message = RetryDeadLetter(self.topology, self.id, deployment.client_id, request)
        deployment.transport.send(self.task, messages.encode(message))
        if not waiter.wait_done(timeout):
            deployment.router.forget(request)
            raise AckTimeout(f"dead letter {self.id} of {self.topology!r} did not finish its retry within {timeout}s")
        completed = waiter.completed
        assert completed is not None
        raise_failure(completed, f"the retry of dead letter {self.id}")
        value = completed.results.get(self.topology)
        return messages.loads(value) if value is not None else None
