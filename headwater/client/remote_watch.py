"""`view.watch()` through `hw.connect`: a subscription fed by the server's watch WebSocket.

The socket's first message is the value; then each commit's diffs arrive as JSON
(`headwater.server.watch` documents the encoding), are turned back into `hw.diffs` with the
values typed by the PState's schema, applied to a copy of the value, and delivered to an
`hw.Subscription` exactly as in process. If the connection drops, the watch connects again
(waiting up to `WATCH_RECONNECT_WAIT_MAX_S` between tries) and delivers a `Resync` with the value
it finds.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import msgspec

from headwater.client.subscriptions import Subscription
from headwater.errors import HeadwaterError, Unavailable
from headwater.pstate import diffs as d
from headwater.schema import Schema

__all__ = ["WATCH_CONNECT_S", "WATCH_RECONNECT_WAIT_MAX_S", "watch_remote"]

WATCH_CONNECT_S = 10.0  # the longest opening the socket (and its first message) may take
WATCH_RECONNECT_WAIT_MAX_S = 5.0  # the longest wait between tries to connect again after a drop
_log = logging.getLogger("headwater.watch")


def watch_remote(url: str, headers: dict[str, str], query: dict[str, Any], schema_at: Callable[[tuple], Schema],
                 typed: Callable[[Any, Any], Any], label: str, callback: Any, on_commit: Any,
                 raise_for: Callable[[dict[str, Any]], HeadwaterError]) -> Subscription:
    """Open the watch socket at `url` (http(s)://host/.../watch) and return its subscription."""
    socket_url = "ws" + url[len("http"):] + "?" + urlencode(query)
    remote = _RemoteWatch(socket_url, headers, schema_at, typed, label, raise_for)
    value = remote.connect()
    subscription = Subscription(label, value, callback, lambda _: remote.close(), on_commit)
    remote.start(subscription)
    return subscription


class _RemoteWatch:
    def __init__(self, url: str, headers: dict[str, str], schema_at: Callable[[tuple], Schema],
                 typed: Callable[[Any, Any], Any], label: str,
                 raise_for: Callable[[dict[str, Any]], HeadwaterError]) -> None:
        self._url, self._headers, self._schema_at, self._typed = url, headers, schema_at, typed
        self._label, self._raise_for = label, raise_for
        self._socket: Any = None
        self._closed = threading.Event()
        self._subscription: Subscription | None = None

    def connect(self) -> Any:
        """Open the socket; the value its first message carries (or the error it sends, raised)."""
        from websockets.sync.client import connect

        try:
            # Entered as a context manager (the library's way; `close` ends it), never left unclosed.
            self._socket = connect(self._url, additional_headers=self._headers,
                                   open_timeout=WATCH_CONNECT_S).__enter__()
            first = msgspec.json.decode(self._socket.recv(timeout=WATCH_CONNECT_S))
        except (OSError, TimeoutError) as e:
            raise Unavailable(f"cannot watch {self._label}: {e}") from None
        except Exception as e:  # the websockets library's own errors (a refused handshake, a closed socket)
            raise Unavailable(f"cannot watch {self._label}: {type(e).__name__}: {e}") from None
        if first.get("type") == "error":
            self._socket.close()
            raise self._raise_for(first)
        return self._value(first.get("value"), ())

    def start(self, subscription: Subscription) -> None:
        self._subscription = subscription
        threading.Thread(target=self._run, name="headwater-watch-remote", daemon=True).start()

    def close(self) -> None:
        self._closed.set()
        socket = self._socket
        if socket is not None:
            try:
                socket.close()
            except Exception:
                pass

    def _run(self) -> None:
        subscription = self._subscription
        assert subscription is not None
        wait_s = 0.1
        while not self._closed.is_set():
            try:
                message = msgspec.json.decode(self._socket.recv())
            except Exception:
                if self._closed.is_set():
                    return
                value = self._reconnect(wait_s)
                if value is _GONE:
                    return
                subscription.deliver([d.Resync(value)], value)
                continue
            kind = message.get("type")
            if kind == "diffs":
                changes = [self._diff(raw) for raw in message["diffs"]]
                value = copy.deepcopy(subscription.value)
                for change in changes:
                    value = d.apply(value, change)
                subscription.deliver(changes, value)
            elif kind == "resync":
                value = self._value(message.get("value"), ())
                subscription.deliver([d.Resync(value)], value)
            elif kind == "error":
                _log.warning("watching %s ended: %s", self._label, message.get("message"))
                subscription.end(str(message.get("message")))
                return

    def _reconnect(self, wait_s: float) -> Any:
        while not self._closed.is_set():
            try:
                return self.connect()
            except HeadwaterError as e:
                _log.info("watching %s: connecting again (%s)", self._label, e)
                self._closed.wait(wait_s)
                wait_s = min(WATCH_RECONNECT_WAIT_MAX_S, wait_s * 2)
        return _GONE

    def _value(self, raw: Any, path: tuple) -> Any:
        if raw is None:
            return None
        return self._typed(raw, self._schema_at(path).value_type)

    def _diff(self, raw: dict[str, Any]) -> d.Diff:
        op = raw["op"]
        path = tuple(tuple(step) if isinstance(step, list) else step for step in raw.get("path", []))
        if op == "put":
            return d.Put(path, self._value(raw["value"], path))
        if op == "remove":
            return d.Remove(path)
        if op in ("add", "discard"):
            element_type = getattr(self._schema_at(path), "element_type", Any)
            element = self._typed(raw["element"], element_type)
            return d.Add(path, element) if op == "add" else d.Discard(path, element)
        if op == "append":
            schema = self._schema_at(path)
            values = [self._typed(v, schema.value_schema.value_type) for v in raw["values"]]  # type: ignore[attr-defined]
            return d.Append(path, values)
        if op == "truncate":
            return d.Truncate(path, raw["length"])
        return d.Resync(self._value(raw.get("value"), ()))


_GONE = object()
