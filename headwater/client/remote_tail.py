"""`depot.tail()` through `hw.connect`: records pushed by the server's tail WebSocket.

The socket (`headwater.server.tail` documents it) sends each followed partition's records as they
are committed, so a remote tail waits for nothing but the next commit. The iterator keeps each
partition's next offset; if the connection drops, it connects again from those offsets (waiting
up to `TAIL_RECONNECT_WAIT_MAX_S` between tries, for at most `TAIL_RECONNECT_S_MAX` in all), so a
drop costs no record and repeats none.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import msgspec

from headwater.client.api import DepotRecord
from headwater.errors import HeadwaterError, Unavailable

__all__ = ["TAIL_CLOSED_CHECK_S", "TAIL_CONNECT_S", "TAIL_RECONNECT_S_MAX", "TAIL_RECONNECT_WAIT_MAX_S",
           "tail_remote"]

TAIL_CONNECT_S = 10.0  # the longest opening the socket (and its first message) may take
TAIL_RECONNECT_WAIT_MAX_S = 5.0  # the longest wait between tries to connect again after a drop
TAIL_RECONNECT_S_MAX = 60.0  # a tail that cannot connect again for this long raises Unavailable
TAIL_CLOSED_CHECK_S = 0.5  # how soon a waiting tail sees its client closed
_log = logging.getLogger("headwater.tail")


def tail_remote(url: str, headers: dict[str, str], cursors: dict[int, int], idle_timeout_s: float | None,
                closed: Callable[[], bool], record: Callable[[dict[str, Any]], DepotRecord], label: str,
                raise_for: Callable[[dict[str, Any]], HeadwaterError]) -> Iterator[DepotRecord]:
    """The records of the partitions in `cursors` from their offsets there, over the tail socket at
    `url` (http(s)://host/.../tail). Ends when `closed()`, or after `idle_timeout_s` without a record."""
    socket_url = "ws" + url[len("http"):]
    socket = _open(socket_url, headers, cursors, label, raise_for)
    idle_since = time.monotonic()
    try:
        while not closed():
            wait_s = TAIL_CLOSED_CHECK_S
            if idle_timeout_s is not None:
                left = idle_timeout_s - (time.monotonic() - idle_since)
                if left <= 0:
                    return
                wait_s = min(wait_s, left)
            try:
                message = msgspec.json.decode(socket.recv(timeout=wait_s))
            except TimeoutError:
                continue
            except Exception:  # dropped (a server restart, a network cut): from where it stood
                if closed():
                    return
                _close(socket)
                socket = _reopen(socket_url, headers, cursors, label, raise_for, closed)
                if socket is None:
                    return
                continue
            kind = message.get("type")
            if kind == "records":
                idle_since = time.monotonic()
                partition = message["partition"]
                for row in message["records"]:
                    cursors[partition] = row["offset"] + 1
                    yield record(row)
            elif kind == "error":
                if message.get("error") != "unavailable":
                    raise raise_for(message)
                _close(socket)  # the module restarting: connect again
                socket = _reopen(socket_url, headers, cursors, label, raise_for, closed)
                if socket is None:
                    return
    finally:
        if socket is not None:
            _close(socket)


def _open(url: str, headers: dict[str, str], cursors: dict[int, int], label: str,
          raise_for: Callable[[dict[str, Any]], HeadwaterError]) -> Any:
    """A socket following `cursors`, past its "ready" message (whose offsets skip what retention removed)."""
    from websockets.sync.client import connect

    start = msgspec.json.encode({str(p): offset for p, offset in cursors.items()}).decode()
    try:
        # Entered as a context manager (the library's way; `_close` ends it), never left unclosed.
        socket = connect(url + "?" + urlencode({"from": start}), additional_headers=headers,
                         open_timeout=TAIL_CONNECT_S).__enter__()
    except (OSError, TimeoutError) as e:
        raise Unavailable(f"cannot tail {label}: {e}") from None
    except Exception as e:  # the websockets library's own errors (a refused handshake)
        raise Unavailable(f"cannot tail {label}: {type(e).__name__}: {e}") from None
    try:
        first = msgspec.json.decode(socket.recv(timeout=TAIL_CONNECT_S))
    except Exception as e:
        _close(socket)
        raise Unavailable(f"cannot tail {label}: {type(e).__name__}: {e}") from None
    if first.get("type") == "error":
        _close(socket)
        raise raise_for(first)
    for partition, offset in first.get("offsets", {}).items():
        cursors[int(partition)] = max(cursors.get(int(partition), 0), offset)
    return socket


def _reopen(url: str, headers: dict[str, str], cursors: dict[int, int], label: str,
            raise_for: Callable[[dict[str, Any]], HeadwaterError], closed: Callable[[], bool]) -> Any:
    """Connect again from `cursors`, backing off; None if the client closed meanwhile."""
    wait_s, deadline = 0.1, time.monotonic() + TAIL_RECONNECT_S_MAX
    while not closed():
        try:
            return _open(url, headers, cursors, label, raise_for)
        except Unavailable as e:
            if time.monotonic() + wait_s > deadline:
                raise Unavailable(f"tailing {label}: could not connect again for {TAIL_RECONNECT_S_MAX:.0f}s "
                                  f"({e}); tail again from the offsets of the last records you had") from None
            _log.info("tailing %s: connecting again (%s)", label, e)
            time.sleep(wait_s)
            wait_s = min(TAIL_RECONNECT_WAIT_MAX_S, wait_s * 2)
    return None


def _close(socket: Any) -> None:
    try:
        socket.close()
    except Exception:
        pass
