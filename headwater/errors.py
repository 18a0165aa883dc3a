"""Every error headwater raises on purpose.

One root, so callers can catch everything headwater means to raise with one clause::

    HeadwaterError
    ├── DefinitionError        a module definition is wrong (bad name, bad schema, duplicate, mixing
    │                          stream and microbatch writers); raised at definition or deploy time
    ├── SchemaError            a value does not fit its declared type (event, PState value, argument)
    ├── PathError              a path does not fit the schema, or select_one found != 1 result
    ├── NotFound               an unknown module, depot, PState, topology, query or step name
    ├── WrongPartitionError    a handler touched a key owned by another task
    ├── ReadOnlyError          a write attempted where only reads are allowed (queries, client views)
    ├── PermissionDenied       an operation this caller may not perform (e.g. client append to a
    │                          depot declared with client_appends=False)
    ├── IdempotencyConflict    an idempotency key was reused with a different event
    ├── HandlerError           user code raised while processing; carries the remote traceback
    ├── AckTimeout             an ack did not arrive in time; says whether the event is known durable
    ├── QueryTimeout           a query did not finish in time (it runs on to completion in the background)
    ├── QueryDepthExceeded     queries invoking queries nested deeper than the bound
    ├── HopDepthExceeded       a chain of hops (a step hopping on, and on) longer than the bound
    ├── Unavailable            the cluster or task cannot serve the call now (closed, shutting down)
    ├── StorageError           the storage engine failed (disk full, corruption); wraps the driver error
    ├── BackupError            a backup to restore is missing, incomplete or corrupt, a restore's data
    │                          directory is not empty, or another backup writes into the destination
    └── ResourceError          a task's resource (`module.resource`) could not be built, or is used where
                               no task holds it

Messages say what happened, with the names and values involved, and what to do next.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "AckTimeout",
    "BackupError",
    "DefinitionError",
    "HandlerError",
    "HeadwaterError",
    "HopDepthExceeded",
    "IdempotencyConflict",
    "NotFound",
    "PathError",
    "QueryDepthExceeded",
    "QueryTimeout",
    "PermissionDenied",
    "ReadOnlyError",
    "ResourceError",
    "SchemaError",
    "StorageError",
    "Unavailable",
    "WrongPartitionError",
]


class HeadwaterError(Exception):
    """Root of every error headwater raises on purpose: catch it to handle them all.

        try:
            cluster.depot("bank", "deposits").append(event)
        except hw.HeadwaterError as e:
            log.warning("not appended: %s", e)   # the message says what happened and what to do
    """


class DefinitionError(HeadwaterError):
    """A module definition is invalid, found at definition or at `deploy`, before anything is written.

        m.pstate("funds", hw.Map(int, int))
        m.pstate("funds", hw.Map(int, int))    # DefinitionError: the name 'funds' is taken

    When `deploy` or `update` finds changes to stored data that were not declared, `changes`
    lists every one as a dict: `{"kind", "name", "change", "needs", "fix"}` (`needs` is
    "migration", "delete" or "impossible"); otherwise it is empty.
    """

    def __init__(self, message: str, *, changes: Iterable[dict[str, str]] = ()) -> None:
        super().__init__(message)
        self.changes = list(changes)


class SchemaError(HeadwaterError, ValueError):
    """A value does not match its declared type. `path` locates the offending value; nothing is written.

        depot.append({"user_id": "one", "amount": 5})   # SchemaError at $.user_id
    """

    def __init__(self, message: str, *, path: str = "$") -> None:
        super().__init__(message)
        self.path = path


class PathError(HeadwaterError):
    """A path does not fit the schema it navigates, or matched the wrong number of values.

        balance = funds[1]                    # funds: hw.Map(int, int)
        balance.select("cents")               # PathError: an int has no field 'cents'
        incoming[5].select_one(hw.ALL)        # PathError unless exactly one element
    """


class NotFound(HeadwaterError, LookupError):
    """An unknown name. The message suggests the closest existing name when there is one.

        cluster.depot("bank", "deposit")      # NotFound: no depot named 'deposit'; did you mean 'deposits'?
    """

    def __init__(self, kind: str, name: str, known: Iterable[str], *, where: str = "") -> None:
        known = sorted(known)
        self.kind, self.name, self.known = kind, name, known
        place = f" in {where}" if where else ""
        message = f"no {kind} named {name!r}{place}"
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        if close:
            message += f"; did you mean {close[0]!r}?"
        elif known:
            message += f"; known: {', '.join(repr(k) for k in known[:10])}"
        else:
            message += f"; there are no {kind}s{place} yet"
        super().__init__(message)

    def __str__(self) -> str:  # LookupError would otherwise quote the message like a key
        return str(self.args[0])


class WrongPartitionError(HeadwaterError):
    """A handler touched a top-level key that another task owns; the message names the task and the fix.

        ctx.pstate(funds)[t.to_id].increment(t.amount)   # in the sender's handler: use ctx.hop(t.to_id, credit, t)
    """


class ReadOnlyError(HeadwaterError):
    """A write was attempted in a read-only context: a client view, a query, or a step a query calls.

        cluster.pstate("bank", "funds")[1].set(5)   # ReadOnlyError: append an event instead
    """


class PermissionDenied(HeadwaterError):
    """The caller may not perform this operation (a depot closed to clients, a token without the scope).

        cluster.depot("jobs", "internal").append(job)   # a depot declared with client_appends=False
    """


class IdempotencyConflict(HeadwaterError):
    """An idempotency key was reused for a different event; nothing was appended.

        depot.append(Deposit(1, 5), idempotency_key="k1")
        depot.append(Deposit(1, 6), idempotency_key="k1")   # IdempotencyConflict
    """


class HandlerError(HeadwaterError):
    """User code raised while processing an event, a hop or a query.

    `remote_traceback` is the formatted traceback from the task that ran the code;
    `error_type` is the name of the exception class raised there.
    """

    def __init__(
        self,
        message: str,
        *,
        remote_traceback: str = "",
        error_type: str = "",
        topology: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> None:
        text = message
        if remote_traceback:
            text += "\n\nremote traceback:\n" + remote_traceback.rstrip()
        super().__init__(text)
        self.remote_traceback = remote_traceback
        self.error_type = error_type
        self.topology = topology
        self.partition = partition
        self.offset = offset


class AckTimeout(HeadwaterError, TimeoutError):
    """The wait for an ack expired; the message says whether the event is known to be durable.

    With `offset` set, the event is durable at (`partition`, `offset`) and will still be
    processed. With `offset` None it is not yet confirmed durable: append again with the same
    `idempotency_key`, so that it lands once.
    """

    def __init__(self, message: str, *, partition: int | None = None, offset: int | None = None) -> None:
        super().__init__(message)
        self.partition = partition
        self.offset = offset


class QueryTimeout(HeadwaterError, TimeoutError):
    """A query did not finish within its timeout; it runs on in the background, holding nothing.

        cluster.query("bank", "total_funds")(timeout=0.5)
    """


class QueryDepthExceeded(HeadwaterError, RecursionError):
    """Queries invoked queries more deeply nested than allowed (32): a query recursing without end."""


class HopDepthExceeded(HeadwaterError, RecursionError):
    """A chain of hops, each step hopping to the next, grew longer than allowed (1,000): hops keep
    causing hops. The hop past the bound fails, and its tree's appender gets a `HandlerError`."""


class Unavailable(HeadwaterError):
    """The cluster or task cannot serve the call now (closed, stopped, workers restarting): retry later,
    with the same `idempotency_key` for an append.

        try:
            depot.append(event, idempotency_key=key)
        except hw.Unavailable:
            time.sleep(0.1)
            depot.append(event, idempotency_key=key)   # lands once either way
    """


class StorageError(HeadwaterError):
    """The storage engine failed (disk full, corruption, a data directory another process holds open);
    the message names the store and the cause."""


class BackupError(HeadwaterError):
    """A backup cannot be restored (missing, incomplete, corrupt: the message names what), the
    directory to restore into already holds data, or a backup or prune cannot write its destination
    (another one writes there now, or it is not writable)."""


class ResourceError(HeadwaterError):
    """A task's resource (`module.resource(name, factory)`) is not there to use: its factory raised,
    it is closed, or the code asking for it runs on no task (a query without `route_by`).

    `resource` names it and `task` the task (None when no task is involved). At `deploy` and
    `update` a factory that raises fails the call and nothing starts; after a worker restart the
    task waits for its resources, retrying, and `status()` shows the error.

        m.resource("smtp", lambda task_id: smtplib.SMTP("mail.internal"))
        cluster.deploy(m, tasks=4)    # ResourceError: resource 'smtp' of task 0 ... ConnectionRefusedError
    """

    def __init__(self, message: str, *, resource: str | None = None, task: int | None = None) -> None:
        super().__init__(message)
        self.resource = resource
        self.task = task
