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
    └── StorageError           the storage engine failed (disk full, corruption); wraps the driver error

Messages say what happened, with the names and values involved, and what to do next.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "AckTimeout",
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
    "SchemaError",
    "StorageError",
    "Unavailable",
    "WrongPartitionError",
]


class HeadwaterError(Exception):
    """Root of every error headwater raises on purpose."""


class DefinitionError(HeadwaterError):
    """A module definition is invalid."""


class SchemaError(HeadwaterError, ValueError):
    """A value does not match its declared type. `path` locates the offending value."""

    def __init__(self, message: str, *, path: str = "$") -> None:
        super().__init__(message)
        self.path = path


class PathError(HeadwaterError):
    """A path does not fit the schema it navigates, or matched the wrong number of values."""


class NotFound(HeadwaterError, LookupError):
    """An unknown name. The message suggests the closest existing name when there is one."""

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
    """A handler touched a top-level key that another task owns."""


class ReadOnlyError(HeadwaterError):
    """A write was attempted in a read-only context."""


class PermissionDenied(HeadwaterError):
    """The caller may not perform this operation."""


class IdempotencyConflict(HeadwaterError):
    """An idempotency key was reused for a different event."""


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
    """A query did not finish within its timeout."""


class QueryDepthExceeded(HeadwaterError, RecursionError):
    """Queries invoked queries more deeply nested than allowed."""


class HopDepthExceeded(HeadwaterError, RecursionError):
    """A chain of hops, each step hopping to the next, grew longer than allowed: hops keep causing hops."""


class Unavailable(HeadwaterError):
    """The cluster or task cannot serve the call now."""


class StorageError(HeadwaterError):
    """The storage engine failed."""
