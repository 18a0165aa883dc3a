"""Messages that cross tasks, and between tasks and clients, through the transport.

Envelopes are msgspec Structs encoded as msgpack. User values inside them (hop arguments,
ack-return values, topology results) are pickled: they are arbitrary Python objects that must
arrive with their exact types, and every task of a cluster runs the same trusted module code.
"""

from __future__ import annotations

import pickle
from typing import Any

import msgspec

__all__ = [
    "AppendBatch",
    "AppendRecord",
    "BatchFailure",
    "ExternalControl",
    "ExternalRecords",
    "MbAck",
    "MbControl",
    "MbDone",
    "MbNudge",
    "MbPhase",
    "MbProcess",
    "MirrorForget",
    "MirrorProgress",
    "Appended",
    "Busy",
    "Completed",
    "Hop",
    "Message",
    "Ping",
    "Pong",
    "Redrive",
    "RetryDeadLetter",
    "Stop",
    "TreeAck",
    "TreeRef",
    "decode",
    "dumps",
    "encode",
    "loads",
]


class TreeRef(msgspec.Struct, array_like=True, frozen=True):
    """Identifies the processing tree of one record by one topology, tracked on its root task."""

    root_task: int
    seq: int


class AppendRecord(msgspec.Struct, tag=True, array_like=True):
    """Append an encoded event to partition `partition` of depot `depot_id` (owned by the receiving task).

    `client` and `request` address the reply; `tree` is set when a topology appends (`ctx.append`),
    so that the append becomes part of that topology's tree and is replayed if lost. `source_us`:
    an external record's time at its source (microseconds since the epoch; 0: none, the append's).
    """

    depot_id: int
    partition: int
    event: bytes
    ack: str
    client: int = -1
    request: int = 0
    idempotency_key: str | None = None
    tree: TreeRef | None = None
    invocation: int = 0
    source_us: int = 0


class AppendBatch(msgspec.Struct, tag=True, array_like=True):
    """Several client appends to one task, admitted or refused (`Busy`) together, appended in order."""

    records: list[AppendRecord]


class Hop(msgspec.Struct, tag=True, array_like=True):
    tree: TreeRef
    invocation: int
    topology: str
    step: str
    args: bytes  # pickled (args, kwargs)
    depot: str
    partition: int
    offset: int
    timestamp_us: int
    depth: int = 1  # hops from the root invocation to this one


class TreeAck(msgspec.Struct, tag=True, array_like=True):
    """One invocation of a tree finished: XOR of its own id and the ids of the invocations it spawned."""

    tree: TreeRef
    xor: int
    returned: bytes | None = None  # pickled ack_return value, when the invocation called ack_return
    error_type: str | None = None
    error: str | None = None  # formatted traceback


class RetryDeadLetter(msgspec.Struct, tag=True, array_like=True):
    topology: str
    dead_letter_id: int
    client: int
    request: int


class Stop(msgspec.Struct, tag=True, array_like=True):
    pass


class Redrive(msgspec.Struct, tag=True, array_like=True):
    """Another task of the module restarted, or moved: what was in flight to or from it may be lost.

    The task sends every unfinished tree's stored hops and appends again under a new tree (so a
    late ack of the old one is ignored), and a microbatch coordinator runs its current batch
    again from its last durable point. `reason` says why, for the log."""

    reason: str


class Ping(msgspec.Struct, tag=True, array_like=True):
    """Are you there? The task answers `Pong` from its next round: liveness is a request, not a flag."""

    client: int
    request: int


class Pong(msgspec.Struct, tag=True, array_like=True):
    """Reply to `Ping`: task `task` runs rounds, and holds this many client appends (and event bytes) in flight."""

    request: int
    task: int
    appends_in_flight: int
    bytes_in_flight: int


# ---- microbatch protocol: the coordinator (task 0) drives every task through each batch ----

class BatchFailure(msgspec.Struct, array_like=True, frozen=True):
    """A record whose processing (or one of whose hops) raised during a batch attempt."""

    task: int
    depot_id: int
    partition: int
    offset: int
    error_type: str
    traceback: str


class MbNudge(msgspec.Struct, tag=True, array_like=True):
    """To the coordinator: new records arrived for this topology."""

    topology: str


class MbProcess(msgspec.Struct, tag=True, array_like=True):
    """Run attempt `attempt` of batch `batch`; `skip` lists records set aside as dead letters."""

    topology: str
    batch: int
    attempt: int
    invocation: int
    skip: list[BatchFailure] = []


class MbAck(msgspec.Struct, tag=True, array_like=True):
    """To the coordinator: invocations of the batch finished (XOR of ids, as for stream trees)."""

    topology: str
    batch: int
    xor: int
    failures: list[BatchFailure] = []
    records: int = 0
    more: bool = False  # the task has records beyond this batch's per-partition bound
    attempt: int = 0  # of the batch: an ack of an earlier attempt (from before a redrive) is ignored


class MbPhase(msgspec.Struct, tag=True, array_like=True):
    """Coordinator to tasks: `abort`, `prepare` or `apply` batch `batch`; `recover` up to it."""

    topology: str
    batch: int
    phase: str


class MbDone(msgspec.Struct, tag=True, array_like=True):
    """Task to coordinator: the phase finished on `task`."""

    topology: str
    batch: int
    phase: str
    task: int
    records: int = 0


class MbControl(msgspec.Struct, tag=True, array_like=True):
    topology: str
    action: str  # "pause" | "resume" | "commit" (from the transport: queries stopped holding a commit off)


class Appended(msgspec.Struct, tag=True, array_like=True):
    """Reply: the record is durable at (partition, offset)."""

    request: int
    partition: int
    offset: int


class Busy(msgspec.Struct, tag=True, array_like=True):
    """Reply: task `task` holds too many appends in flight and did not append this one; send it again later.

    `appends_max` and `bytes_max` are the task's bounds, for the appender's error if it gives up.
    """

    request: int
    task: int
    appends_max: int
    bytes_max: int


class Completed(msgspec.Struct, tag=True, array_like=True):
    """Reply: processing finished.

    `results` maps topology to its pickled value; errors are (topology, type, traceback).
    """

    request: int
    partition: int
    offset: int
    results: dict[str, bytes] = {}
    errors: list[tuple[str, str, str]] = []
    failure: str | None = None  # an error that prevented the append itself (e.g. idempotency conflict)
    failure_kind: str | None = None


class ExternalRecords(msgspec.Struct, tag=True, array_like=True):
    """From the host's poller of an external depot's partition: what its source had after `after`.

    Positions are msgpack-encoded (None: nothing ingested yet). The task appends the events and
    stores `position` in one write batch, if `after` is still its stored position (else the
    message is stale and dropped). No events and a `position`: the start the source chose, pinned.
    `error`: the read failed (after the poller's back-off); `lag` is -1 when not known. `times`:
    each event's time at the source in microseconds since the epoch (0: it gave none), or None.
    """

    depot_id: int
    partition: int
    after: bytes | None
    position: bytes | None
    events: list[bytes]
    lag: int = -1
    error: str | None = None
    times: list[int] | None = None


class ExternalControl(msgspec.Struct, tag=True, array_like=True):
    depot_id: int
    action: str  # "pause" | "resume": stop or start ingesting the external depot's partitions on this task


class MirrorProgress(msgspec.Struct, tag=True, array_like=True):
    """A mirror (`consumer`: "module/depot") copied this task's partition of `depot_id` up to `next_offset`."""

    depot_id: int
    consumer: str
    next_offset: int


class MirrorForget(msgspec.Struct, tag=True, array_like=True):
    """Mirror `consumer` is gone: its copy no longer holds this task's retention back."""

    consumer: str


Message = (
    AppendRecord | AppendBatch | Hop | TreeAck | RetryDeadLetter | Stop | Ping | Pong | Appended | Busy | Completed
    | Redrive | MbNudge | MbProcess | MbAck | MbPhase | MbDone | MbControl | ExternalRecords | ExternalControl
    | MirrorProgress | MirrorForget
)

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Message)


def encode(message: Message) -> bytes:
    return _encoder.encode(message)


def decode(data: bytes) -> Message:
    return _decoder.decode(data)


def dumps(value: Any) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def loads(data: bytes) -> Any:
    return pickle.loads(data)
