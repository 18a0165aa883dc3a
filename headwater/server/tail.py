"""`/api/modules/{m}/depots/{d}/tail?from=...`: a depot's new records pushed over a WebSocket.

`from` says where each partition starts: `end` (the default: only records appended from now on),
`start` (the oldest record each partition still stores), an offset for every partition (`from=0`),
or a JSON object of the partitions to follow and their offsets (`from={"0": 12, "1": 40}`). The
server sends JSON text messages:

- `{"type": "ready", "offsets": {"0": N, ...}}` first: the offset each followed partition starts at;
- `{"type": "records", "partition": p, "records": [R, ...], "next_offset": N}` as records are
  committed, at most `TAIL_RECORDS_PER_MESSAGE_MAX` in one message, each `R` as the records
  endpoint answers it (`partition`, `offset`, `timestamp`, `event`), in offset order per partition;
- `{"type": "heartbeat"}` after `TAIL_HEARTBEAT_S` without another message;
- `{"type": "error", "error": code, "message": ...}`, then the server closes the socket: for a bad
  request at once, and `not_found` later if an update deletes the depot.

No record is held for a slow client: the socket wakes when a partition's end offset moves (a
watch of the partition, fed by the hub that sees every committed write), and reads the records
after its cursor from committed state, a bounded message at a time, as fast as the client takes
them. Tokens are as for the watch socket and need `read` on the module. Reconnect with
`from={partition: next_offset}` to resume without a gap or a repeat.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from starlette.websockets import WebSocket

from headwater.client.api import DepotClient
from headwater.server.depots import record_row
from headwater.server.http import ApiError
from headwater.server.sockets import authorize_socket, pump, send, serving
from headwater.server.state import state_of
from headwater.server.watch import decode_json

__all__ = ["TAIL_HEARTBEAT_S", "TAIL_RECORDS_PER_MESSAGE_MAX", "TAIL_SOCKETS_MAX", "tail"]

TAIL_HEARTBEAT_S = 15.0  # a message at least this often, so proxies and clients know the socket lives
TAIL_RECORDS_PER_MESSAGE_MAX = 500  # records one message carries (and one read of committed state fetches)
TAIL_SOCKETS_MAX = 1_000  # tail sockets one server holds open at once; more are refused until some close


class _Ends:
    """The latest end offset of each followed partition, set from the delivering thread: one
    number per partition however many commits come, so a slow client costs no memory."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.offsets: dict[int, int] = {}
        self.ended: str | None = None  # a partition's watch ended (an update deleted the depot)
        self.ready = asyncio.Event()

    def on_commit(self, partition: int, diffs: list[Any], value: Any) -> None:  # on the delivering thread
        self._loop.call_soon_threadsafe(self.moved, partition, value)

    def moved(self, partition: int, end: int) -> None:
        self.offsets[partition] = end
        self.ready.set()

    def on_end(self, reason: str) -> None:  # on the delivering thread
        self._loop.call_soon_threadsafe(self._end, reason)

    def _end(self, reason: str) -> None:
        self.ended = reason
        self.ready.set()


async def tail(websocket: WebSocket) -> None:
    state = state_of(websocket)
    subscriptions: list[Any] = []
    counted = False
    try:
        async with serving(websocket):
            module, name = websocket.path_params["module"], websocket.path_params["depot"]
            authorize_socket(websocket, "read", module)
            if state.tail_sockets >= TAIL_SOCKETS_MAX:
                raise ApiError(503, "unavailable", f"this server already holds {TAIL_SOCKETS_MAX:,} depot tail "
                               "sockets open; close some (one socket follows every partition of a depot) and try again")
            state.tail_sockets += 1
            counted = True
            depot = state.cluster.depot(module, name)
            ends = _Ends(asyncio.get_running_loop())
            wanted = _wanted(websocket, depot)
            for partition in wanted:
                subscription = await asyncio.to_thread(
                    depot.watch_end, partition, on_commit=functools.partial(ends.on_commit, partition))
                subscriptions.append(subscription)
                subscription.when_ended(ends.on_end)
                ends.moved(partition, max(subscription.value, ends.offsets.get(partition, 0)))  # a commit may be first
            cursors = await asyncio.to_thread(_starts, depot, wanted, ends.offsets)
            await send(websocket, {"type": "ready", "offsets": {str(p): offset for p, offset in cursors.items()}})

            async def take() -> list[dict[str, Any]]:
                return await _records(depot, cursors, ends)

            await pump(websocket, ends.ready, take, TAIL_HEARTBEAT_S)
    finally:
        if counted:
            state.tail_sockets -= 1
        for subscription in subscriptions:
            await asyncio.to_thread(subscription.close)


def _wanted(websocket: WebSocket, depot: DepotClient) -> dict[int, Any]:
    """Each partition to follow, and where `from` starts it: "end", "start" or an offset (checked
    against the partition's offsets once they are known)."""
    raw = websocket.query_params.get("from") or "end"
    value = raw if raw in ("end", "start") else decode_json(raw, "from")
    if not isinstance(value, dict):
        return dict.fromkeys(range(depot.partitions), value)
    if not value:
        raise ApiError(400, "bad_request", "from={} names no partition: name some, or pass from=end")
    wanted = {}
    for key, offset in value.items():
        try:
            partition = int(key)
        except ValueError:
            partition = -1
        if not 0 <= partition < depot.partitions:
            raise ApiError(400, "bad_request", f"from names partition {key!r}, but depot {depot.module}.{depot.name} "
                           f"has partitions 0..{depot.partitions - 1}")
        wanted[partition] = offset
    return wanted


def _starts(depot: DepotClient, wanted: dict[int, Any], ends: dict[int, int]) -> dict[int, int]:
    """Where each partition starts, checked against its offsets now (on a thread: a read of each)."""
    starts = {}
    for partition, offset in wanted.items():
        end = ends[partition]
        if offset == "end":
            starts[partition] = end
            continue
        oldest = depot.partition_info(partition).start_offset
        if offset == "start":
            offset = oldest
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise ApiError(400, "bad_request", f"from gives partition {partition} the offset {offset!r}: an offset is "
                           "an integer of 0 or more (or pass from=end or from=start)")
        if offset > end:
            raise ApiError(400, "bad_request", f"from gives partition {partition} the offset {offset}, past its end "
                           f"{end}: start at {end} or before (from=end follows only new records)")
        starts[partition] = max(offset, oldest)  # records retention removed are skipped
    return starts


async def _records(depot: DepotClient, cursors: dict[int, int], ends: _Ends) -> list[dict[str, Any]]:
    """The next message of each partition behind its end; `ends.ready` stays set while one is still behind."""
    ends.ready.clear()
    if ends.ended is not None:  # sent as an error, and the socket closes
        raise ApiError(404, "not_found", f"the tail ended: {ends.ended}")
    messages = []
    for partition, cursor in cursors.items():
        end = ends.offsets[partition]
        if cursor >= end:
            continue
        found = await asyncio.to_thread(depot.read, partition, cursor, end, limit=TAIL_RECORDS_PER_MESSAGE_MAX)
        if not found:  # retention removed them meanwhile: skip to what is stored (or wait for the next commit)
            oldest = (await asyncio.to_thread(depot.partition_info, partition)).start_offset
            if oldest > cursor:
                cursors[partition] = oldest
                if oldest < end:
                    ends.ready.set()
            continue
        cursors[partition] = found[-1].offset + 1
        messages.append({"type": "records", "partition": partition, "records": [record_row(r) for r in found],
                         "next_offset": cursors[partition]})
        if cursors[partition] < end:
            ends.ready.set()
    return messages
