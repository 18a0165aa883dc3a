"""Admission: the bound on client appends a task holds in flight, kept by the task itself.

A client append is in flight from the moment its task takes it until its processing finished
(every stream topology's tree completed; at once for a depot no stream topology reads). The task
counts them, and their event bytes, and answers an append that would go over either bound with
`Busy` instead of appending it: nothing of it is written, and the client backs off and sends it
again within its timeout. One message is admitted or refused whole, so the events of one
`append_many` to one task keep their order. Nothing outside the task counts for it, so clients
in any process, and any number of them, see the same bound.

Appends made by topologies (`ctx.append`) are not refused: they are part of a tree already
admitted, and the module's congestion bound (no new records while receivers' inboxes are full)
keeps them in check.
"""

from __future__ import annotations

__all__ = ["APPEND_BYTES_IN_FLIGHT_MAX", "APPENDS_IN_FLIGHT_MAX", "Admission"]

# Client appends one task holds in flight: taken and not yet fully processed. Past it, appends
# are answered Busy: a flood slows its appenders instead of growing queues without bound.
APPENDS_IN_FLIGHT_MAX = 2048
# Event bytes of the client appends one task holds in flight: a flood of big events cannot fill
# memory. A message bigger than this is admitted when nothing else is in flight.
APPEND_BYTES_IN_FLIGHT_MAX = 64 * 1024 * 1024


class Admission:
    """The counts of one task's client appends in flight, against their bounds (read when made)."""

    __slots__ = ("count", "count_max", "size_bytes", "size_bytes_max")

    def __init__(self) -> None:
        self.count = 0
        self.size_bytes = 0
        self.count_max = APPENDS_IN_FLIGHT_MAX
        self.size_bytes_max = APPEND_BYTES_IN_FLIGHT_MAX

    def admit(self, count: int, size_bytes: int) -> bool:
        """Take `count` appends of `size_bytes` event bytes in all, if they fit; a message too big
        for the byte bound fits when nothing else is in flight."""
        if self.count and (self.count + count > self.count_max or self.size_bytes + size_bytes > self.size_bytes_max):
            return False
        self.count += count
        self.size_bytes += size_bytes
        return True

    def release(self, size_bytes: int) -> None:
        """One admitted append finished."""
        self.count -= 1
        self.size_bytes -= size_bytes
