"""The client API over HTTP: `hw.connect(url)` gives the same interface as `InProcessCluster`.

`RemoteCluster.depot/pstate/query/dead_letters/modules` behave like their in-process twins and
raise the same typed errors: the server sends `{"error": code, "message": ...}` and `ERRORS`
below maps each stable code back to its exception class. PState views are the same `View` class
as in process, over an executor that sends the path to the server; the schema they check steps
against is the module's own when it is passed to `connect(modules=...)` (values then decode into
their declared types, dataclasses included), and otherwise is rebuilt from the server's module
listing (values then decode into JSON-shaped Python: dicts for records and dataclasses).

This file also holds the wire format both ends share (`ERRORS`); the server imports it.
"""

from __future__ import annotations

import asyncio
import json
import os
import typing
import uuid
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from types import GenericAlias
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import msgspec

from headwater.client.api import AppendResult, DepotRecord, PartitionInfo
from headwater.client.cluster import BackupInfo, ModuleInfo
from headwater.client.connections import ConnectError, ConnectionLost, ConnectionPool, Response
from headwater.client.remote_tail import tail_remote
from headwater.client.remote_watch import watch_remote
from headwater.engine.definitions import Ack, Module
from headwater.errors import (
    AckTimeout,
    BackupError,
    DefinitionError,
    HandlerError,
    HeadwaterError,
    IdempotencyConflict,
    NotFound,
    PathError,
    PermissionDenied,
    QueryDepthExceeded,
    QueryTimeout,
    ReadOnlyError,
    SchemaError,
    StorageError,
    Unavailable,
    WrongPartitionError,
)
from headwater.pstate import View
from headwater.schema import List, Map, Record, Schema, Set, as_schema
from headwater.schema.keys import task_for_key

__all__ = ["ERRORS", "READ_PAGE_MAX", "RemoteCluster", "RemoteDeadLetter", "RemoteDepot", "connect", "error_class",
           "navigator_json", "wire_error"]

# ---- the wire format shared with headwater.server --------------------------------------------

# (exception class, HTTP status, stable code). A code never changes meaning; the server picks the
# first row whose class the exception is an instance of, so subclasses come before their bases.
ERRORS: list[tuple[type[HeadwaterError], int, str]] = [
    (SchemaError, 422, "schema_error"),
    (PathError, 422, "path_error"),
    (WrongPartitionError, 422, "wrong_partition"),
    (ReadOnlyError, 422, "read_only"),
    (DefinitionError, 422, "definition_error"),
    (NotFound, 404, "not_found"),
    (PermissionDenied, 403, "permission_denied"),
    (IdempotencyConflict, 409, "idempotency_conflict"),
    (HandlerError, 500, "handler_error"),
    (AckTimeout, 504, "ack_timeout"),  # with an offset: durable, still processing (see wire_error)
    (AckTimeout, 504, "not_confirmed"),  # without one: nothing says it was appended
    (QueryTimeout, 504, "query_timeout"),
    (QueryDepthExceeded, 500, "query_depth_exceeded"),
    (Unavailable, 503, "unavailable"),
    (StorageError, 500, "storage_error"),
    (BackupError, 422, "backup_error"),
]
# Codes only the HTTP layer produces, and the class a Python client raises for each.
HTTP_ERRORS: dict[str, type[HeadwaterError]] = {
    "malformed_json": SchemaError,
    "body_too_large": SchemaError,
    "bad_request": SchemaError,
    "unauthorized": PermissionDenied,
    "method_not_allowed": NotFound,
    "read_too_large": PathError,  # a whole collection larger than READ_PAGE_MAX: read it in pages
    "unsupported_media_type": SchemaError,  # an app update not sent as text/x-python
    "internal_error": HeadwaterError,
}
_BY_CODE: dict[str, type[HeadwaterError]] = {code: cls for cls, _, code in ERRORS} | HTTP_ERRORS

# The most elements one read returns; longer ranges come back in pages with a `next` cursor.
READ_PAGE_MAX = 10_000
_TIMEOUT_MARGIN_S = 5.0  # the HTTP wait outlasts the server-side ack timeout, so the server's 504 arrives


def wire_error(error: HeadwaterError) -> tuple[int, str]:
    """The status and stable code a server sends for `error`: the first row of ERRORS it is an
    instance of, except that an AckTimeout is `ack_timeout` only when the event is known durable
    (it has an offset) and `not_confirmed` otherwise, so a caller can tell "wait" from "append again"."""
    if isinstance(error, AckTimeout):
        return 504, "ack_timeout" if error.offset is not None else "not_confirmed"
    return next(((status, code) for cls, status, code in ERRORS if isinstance(error, cls)), (500, "internal_error"))


def error_class(code: str) -> type[HeadwaterError]:
    """The exception class a stable error code stands for (HeadwaterError if unknown)."""
    return _BY_CODE.get(code, HeadwaterError)


def _error_from(body: dict[str, Any], status: int) -> HeadwaterError:
    code = str(body.get("error", ""))
    message = str(body.get("message", f"HTTP {status}"))
    cls = error_class(code)
    if cls is HandlerError:
        return HandlerError(message, remote_traceback=body.get("remote_traceback", ""),
                            error_type=body.get("error_type", ""), topology=body.get("topology"),
                            partition=body.get("partition"), offset=body.get("offset"))
    if cls is AckTimeout:
        return AckTimeout(message, partition=body.get("partition"), offset=body.get("offset"))
    if cls is SchemaError:
        return SchemaError(message, path=body.get("path", "$"))
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    if isinstance(error, NotFound):  # keep the attributes callers of the in-process NotFound can use
        error.kind, error.name, error.known = body.get("kind", ""), body.get("name", ""), body.get("known", [])
    if isinstance(error, DefinitionError):
        error.changes = list(body.get("changes", []))
    return error


def _raise_for(response: Response, url: str) -> None:
    if response.status < 400:
        return
    try:
        body = msgspec.json.decode(response.body)
    except msgspec.DecodeError:
        body = None
    if not isinstance(body, dict) or "error" not in body:
        text = response.body[:500].decode("utf-8", "replace")
        raise HeadwaterError(f"HTTP {response.status} from {url}: {text}")
    raise _error_from(body, response.status)


def _typed(value: Any, kind: Any) -> Any:
    """JSON-shaped `value` as `kind` (UUIDs, datetimes, dataclasses, int map keys rebuilt)."""
    if kind is Any:
        return value
    try:
        return msgspec.convert(value, kind, strict=False)
    except msgspec.ValidationError:
        return value  # a value the server holds under an older type: hand it over as sent


# ---- rebuilding schemas from the server's module listing --------------------------------------

_SCALARS: dict[str, Any] = {
    "int": int, "float": float, "str": str, "bytes": bytes, "bool": bool, "null": type(None),
    "uuid": uuid.UUID, "datetime": datetime, "date": date, "time": dtime, "timedelta": timedelta,
    "decimal": Decimal, "any": Any,
}


def python_type(description: dict[str, Any]) -> Any:
    """The Python type a type description stands for; types the client lacks become Any."""
    kind = description.get("type", "any")
    if kind in _SCALARS:
        return _SCALARS[kind]
    if kind == "tuple":
        items = tuple(python_type(item) for item in description.get("items", []))
        if not items:
            return Any
        return GenericAlias(tuple, (items[0], ...) if description.get("variadic") else items)
    if kind == "list":
        return GenericAlias(list, python_type(description.get("items", {})))
    if kind == "dict":
        keys, values = python_type(description.get("keys", {})), python_type(description.get("values", {}))
        return GenericAlias(dict, (keys, values))
    return Any  # objects, enums and unions decode JSON-shaped without the user's classes


def schema_from_description(description: dict[str, Any]) -> Schema:
    """Rebuild a PState schema from its description in the module listing."""
    kind = description["kind"]
    subindexed = bool(description.get("subindexed", False))
    if kind == "map":
        return Map(_key_type(description["key"]), schema_from_description(description["value"]), subindexed=subindexed)
    if kind == "list":
        return List(schema_from_description(description["value"]), subindexed=subindexed)
    if kind == "set":
        return Set(_key_type(description["element"]), subindexed=subindexed)
    if kind == "record":
        return Record(**{name: schema_from_description(field) for name, field in description["fields"].items()})
    return as_schema(python_type(description["type"]))


def _key_type(description: dict[str, Any]) -> Any:
    kind = python_type(description)
    # Keys must be a key type; an enum or another type the client lacks is checked by the server.
    return kind if kind in _SCALARS.values() or typing.get_origin(kind) is tuple else Any


# ---- the client --------------------------------------------------------------------------------


def connect(url: str, token: str | None = None, *, modules: Iterable[Module] = (),
            timeout_s: float = 30.0) -> RemoteCluster:
    """A client of the headwater server at `url`, with the client interface of `InProcessCluster`.

    `modules`, `depot`, `pstate`, `query` and `dead_letters` work as in process and raise the
    same exceptions; deploying and updating happen on the server. Pass the `modules` you
    deployed to check paths against their exact schemas and get values back in their declared
    types (dataclasses, UUIDs, ...) instead of JSON-shaped dicts. `token` is sent as a bearer
    token. `timeout_s` bounds the wait for an answer to a call that has no `timeout` of its
    own; a call with one waits 5 s longer than it, so that the server's timeout error arrives.

    Nothing is sent yet: a URL that is not http(s) raises `ValueError` here, and a server that
    cannot be reached raises `Unavailable` at the first call.

        with hw.connect("http://127.0.0.1:8000", token, modules=[bank]) as remote:
            remote.depot("bank", "deposits").append(Deposit(1, 100))["deposit"]   # 100
            remote.pstate("bank", "funds")[1].get()                                # 100
    """
    return RemoteCluster(url, token, modules=modules, timeout_s=timeout_s)


class RemoteCluster:
    """A headwater server seen through its HTTP API, with the client interface of a cluster; see `connect`.

        with hw.connect("http://127.0.0.1:8000", modules=[bank]) as cluster:
            cluster.depot("bank", "deposits").append(Deposit(1, 100))["deposit"]
            cluster.pstate("bank", "funds")[1].get()
            cluster.query("bank", "total_funds")()
    """

    def __init__(self, url: str, token: str | None = None, *, modules: Iterable[Module] = (),
                 timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.headers = self._headers  # what every request carries (the token), for the watch sockets too
        self._timeout_s = timeout_s
        self._connections = ConnectionPool(self.url)
        # Where each task's process answers alone (`/api/routes`, a worker of `--workers N`): a
        # point read goes straight there. Fetched on first use, dropped when a direct port fails.
        self._routes: dict[str, list[int | None]] | None = None
        self._direct: dict[int, ConnectionPool] = {}
        self._modules = {m.name: m for m in modules}
        self._catalog: dict[str, dict[str, Any]] | None = None
        self.closed = False

    def __enter__(self) -> RemoteCluster:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<RemoteCluster {self.url!r}>"

    def close(self) -> None:
        """Close the kept-alive connections. Later calls raise `Unavailable` and tails end;
        closing again does nothing."""
        self.closed = True
        self._connections.close()
        for pool in self._direct.values():
            pool.close()

    # ---- HTTP -----------------------------------------------------------------------------
    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None, content: bytes = b"",
                headers: dict[str, str] | None = None, timeout_s: float | None = None,
                idempotent: bool | None = None, port: int | None = None) -> Any:
        """Send one API request and return its decoded JSON body; errors raise their typed exception.

        A request that is `idempotent` (by default: a GET, or one with an Idempotency-Key header)
        may be sent again when a kept-alive connection turns out to be closed; any other is sent
        again only if it had not left yet. `port`: send it to that port of the server's host (a
        worker's own, from `/api/routes`); if that fails to connect, it goes to `url` instead.
        """
        if self.closed:
            raise Unavailable(f"this client of {self.url} is closed; connect again")
        target = path + ("?" + urlencode(params) if params else "")
        wait_s = self._timeout_s if timeout_s is None else timeout_s + _TIMEOUT_MARGIN_S
        all_headers = {**self._headers, **headers} if headers else self._headers
        if idempotent is None:
            idempotent = method == "GET" or "Idempotency-Key" in all_headers
        try:
            try:
                pool = self._connections if port is None else self._direct_pool(port)
                response = pool.request(method, target, content or None, all_headers, timeout_s=wait_s,
                                        idempotent=idempotent)
            except ConnectError:
                if port is None:
                    raise
                self._routes = None  # that worker restarted (new ports) or is gone: ask the shared port
                response = self._connections.request(method, target, content or None, all_headers,
                                                     timeout_s=wait_s, idempotent=idempotent)
        except TimeoutError as e:
            raise AckTimeout(f"no answer from {self.url}{path} within {wait_s}s; "
                             "an append may still have landed: retry it with the same idempotency_key") from e
        except (ConnectError, ConnectionLost) as e:
            if isinstance(e, ConnectionLost) and e.sent and not idempotent:
                raise Unavailable(f"the connection to headwater at {self.url} broke before {method} {path} was "
                                  f"answered ({e}); it may have been applied: retry an append with an "
                                  "idempotency_key to be sure it lands once") from e
            raise Unavailable(f"cannot reach headwater at {self.url}: {e}; is `headwater serve` running there?") from e
        _raise_for(response, self.url + target)
        return msgspec.json.decode(response.body) if response.body else None

    def _direct_pool(self, port: int) -> ConnectionPool:
        pool = self._direct.get(port)
        if pool is None:
            parts = urlsplit(self.url)
            host = parts.hostname or ""
            netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            pool = self._direct[port] = ConnectionPool(f"{parts.scheme}://{netloc}{parts.path}")
        return pool

    def direct_port(self, module: str, task: int) -> int | None:
        """The port where the process hosting `task` of `module` answers alone, if the server has one."""
        if self._routes is None:
            try:
                self._routes = self.request("GET", "/api/routes")["modules"]
            except NotFound:  # a server without routes: everything goes to `url`
                self._routes = {}
        ports = (self._routes or {}).get(module) or []
        return ports[task] if task < len(ports) else None

    # ---- names ------------------------------------------------------------------------------
    def describe(self, module: str | None = None, *, refresh: bool = False) -> Any:
        """The server's description of every module (or of one): depots, PStates, schemas, ..."""
        if self._catalog is None or refresh or (module is not None and module not in self._catalog):
            self._catalog = {m["name"]: m for m in self.request("GET", "/api/modules")["modules"]}
        if module is None:
            return list(self._catalog.values())
        if module not in self._catalog:
            raise NotFound("module", module, self._catalog, where="this cluster")
        return self._catalog[module]

    def _part(self, module: str, kind: str, table: str, name: str) -> dict[str, Any]:
        description = self.describe(module)
        entries = {entry["name"]: entry for entry in description[table]}
        if name not in entries:
            description = self.describe(module, refresh=True)  # deployed since we looked?
            entries = {entry["name"]: entry for entry in description[table]}
        if name not in entries:
            raise NotFound(kind, name, entries, where=f"module {module!r}")
        return entries[name]

    def modules(self) -> list[ModuleInfo]:
        """The modules deployed on the server, sorted by name, each with its version and task count
        (asked anew on every call)."""
        return [ModuleInfo(m["name"], version=m.get("version", 1), tasks=m["tasks"],
                           replication=m.get("replication", 1))
                for m in sorted(self.describe(refresh=True), key=lambda m: m["name"])]

    def apply_app(self, source: bytes | str, *, filename: str = "app.py", delete: Sequence[str] = (),
                  dry_run: bool = False, tasks: int | None = None, timeout_s: float = 120.0) -> list[dict[str, Any]]:
        """Send a new version of an app file to the server (`POST /api/update`, admin scope): it is
        loaded apart from the running code, every module in it is checked against what is deployed,
        then updated (or deployed with `tasks`). An undeclared incompatible change raises
        `DefinitionError` with its `changes`, and nothing changes. What `headwater update` does."""
        params: list[tuple[str, Any]] = [("filename", filename), ("dry_run", "true" if dry_run else "false")]
        params += [("delete", name) for name in delete]
        if tasks is not None:
            params.append(("tasks", tasks))
        content = source.encode() if isinstance(source, str) else source
        answer = self.request("POST", "/api/update?" + urlencode(params), content=content,
                              headers={"Content-Type": "text/x-python"}, timeout_s=timeout_s)
        self._catalog = None  # the modules changed: describe them again
        self._routes = None
        return list(answer["modules"])

    def backup(self, destination: str | os.PathLike[str], *, keep: int | None = None,
               timeout_s: float = 3600.0) -> BackupInfo:
        """Have the server back up every module to `destination`, a path on the server's machine
        (`POST /api/backup`, admin scope), as `cluster.backup` does in process (`keep=N`: then
        delete all but the N newest backups there). What `headwater backup` does."""
        request: dict[str, Any] = {"destination": os.fspath(destination)}
        if keep is not None:
            request["keep"] = keep
        body = json.dumps(request).encode()
        answer = self.request("POST", "/api/backup", content=body, headers={"Content-Type": "application/json"},
                              timeout_s=timeout_s)
        return BackupInfo.from_json(answer)

    def migrations(self, module: str) -> list[dict[str, Any]]:
        """The module's PState migrations and their progress, as `cluster.migrations` in process."""
        return list(self.request("GET", f"/api/modules/{quote(module, safe='')}/migrations")["migrations"])

    def stats(self) -> Any:
        """Live numbers per module: depot sizes, topology progress, lag, dead letters, ack latency."""
        return self.request("GET", "/api/stats")

    # ---- the client interface ---------------------------------------------------------------
    def depot(self, module: str, depot: str) -> RemoteDepot:
        """A client of depot `depot` of `module`, with the methods of the in-process depot client.

        `append`, `append_many` (one request), their `_async` forms, `read`, `partition_info`
        and `tail` go over HTTP; events travel as JSON, and come back from `read` and `tail` in
        the depot's declared type when its module was passed to `connect`, JSON-shaped
        otherwise. A read returns at most 10,000 records: a larger `limit` raises `SchemaError`.
        An unknown module or depot raises `NotFound`, after one fresh look at the server's
        listing.

            remote.depot("bank", "deposits").read(1)[0].event   # Deposit(user_id=1, amount=100)
        """
        return RemoteDepot(self, module, self._part(module, "depot", "depots", depot))

    def pstate(self, module: str, pstate: str, *, task: int | None = None) -> View:
        """A read-only `View` of PState `pstate` of `module`, each read a request to the server.

        It routes and refuses like `InProcessCluster.pstate`: `task=i` reads task `i`'s part
        (`ValueError` if there is no such task), writes raise `ReadOnlyError`. A whole
        collection or range longer than 10,000 elements is fetched in pages and assembled.
        Navigators that carry a Python function cannot be sent: they raise `PathError`.

            remote.pstate("bank", "funds")[1].get()         # 100
        """
        description = self._part(module, "PState", "pstates", pstate)
        tasks = self.describe(module)["tasks"]
        if task is not None and (not isinstance(task, int) or not 0 <= task < tasks):
            raise ValueError(f"task={task!r} does not exist; module {module} has tasks 0..{tasks - 1}")
        declared = self._modules.get(module)
        if declared is not None and pstate in declared.pstates:
            schema = as_schema(declared.pstates[pstate].schema)
        else:
            schema = schema_from_description(description["schema"])
        routed = description.get("partitioned", True) and description.get("keyed", False)
        executor = RemotePStateExecutor(self, module, pstate, task, schema, tasks if routed else None)
        return View(executor, schema, name=f"{module}.{pstate}")

    def query(self, module: str, name: str) -> Any:
        """The query `name` of `module` as a function: call it with the query's arguments.

        The arguments travel as JSON and are checked against the query's type hints on the
        server (`SchemaError`). `timeout` (seconds, keyword, default 30, at most 300) bounds the
        run on the server, which raises `QueryTimeout` past it; `timeout=None` leaves the
        server's default of 30 s, and the client waits only `connect`'s `timeout_s` for the
        answer (`AckTimeout` past it).

            remote.query("bank", "total_funds")()           # 425
        """
        self._part(module, "query", "queries", name)
        path = f"/api/modules/{_q(module)}/queries/{_q(name)}"

        def invoke(*args: Any, timeout: float | None = 30.0, **kwargs: Any) -> Any:
            body = msgspec.json.encode({"args": list(args), "kwargs": kwargs})
            params = {} if timeout is None else {"timeout": timeout}
            return self.request("POST", path, content=body, headers=_JSON, params=params, timeout_s=timeout,
                                idempotent=True)["value"]  # queries are read-only

        invoke.__name__ = name
        return invoke

    def dead_letters(self, module: str, topology: str) -> list[RemoteDeadLetter]:
        """The failed invocations of `topology`, as the server's `dead_letters` lists them.

        Each has the attributes of a `DeadLetter` except `event` (read it from the depot at
        its `partition` and `offset`), and `retry()` runs it again on the server. An unknown
        module or topology raises `NotFound`.
        """
        self._part(module, "topology", "topologies", topology)
        body = self.request("GET", f"/api/modules/{_q(module)}/topologies/{_q(topology)}/dead-letters")
        return [RemoteDeadLetter(self, module, entry) for entry in body["dead_letters"]]

    def event_type(self, module: str, depot: str) -> Any:
        """The event type of depot `depot` of `module` in the `modules` given to `connect`, else `Any`.

        Records read from that depot decode into this type. The server is not asked, so an
        unknown name gives `Any` rather than `NotFound`.
        """
        declared = self._modules.get(module)
        if declared is not None and depot in declared.depots:
            return declared.depots[depot].event_type
        return Any


_JSON = {"Content-Type": "application/json"}


def _q(name: str) -> str:
    return quote(name, safe="")


class RemoteDepot:
    """A depot of a remote module: appends, reads and tails over HTTP."""

    def __init__(self, cluster: RemoteCluster, module: str, description: dict[str, Any]) -> None:
        self._cluster = cluster
        self.module = module
        self.name: str = description["name"]
        self.partitions: int = description["partitions"]
        self._path = f"/api/modules/{_q(module)}/depots/{_q(self.name)}"
        self._event_type = cluster.event_type(module, self.name)
        self._encoder = msgspec.json.Encoder()

    def __repr__(self) -> str:
        return f"<RemoteDepot {self.module}.{self.name} partitions={self.partitions}>"

    def _encode(self, event: Any) -> bytes:
        try:
            return self._encoder.encode(event)
        except (TypeError, msgspec.EncodeError, OverflowError) as e:
            raise SchemaError(f"event for depot {self.module}.{self.name} cannot be encoded as JSON: {e}") from None

    def append(self, event: Any, *, ack: Ack | str = Ack.FULL, timeout: float = 30.0,
               idempotency_key: str | None = None) -> AppendResult | None:
        """Append `event`; with Ack.FULL wait until every stream topology processed it."""
        ack = Ack.parse(ack)
        headers = dict(_JSON)
        if idempotency_key is not None:
            if not isinstance(idempotency_key, str):
                raise ValueError(f"idempotency_key must be a str, not {type(idempotency_key).__name__}")
            headers["Idempotency-Key"] = idempotency_key
        body = self._cluster.request("POST", f"{self._path}/append", params={"ack": ack.value, "timeout": timeout},
                                     content=self._encode(event), headers=headers, timeout_s=timeout)
        return _append_result(body, ack)

    def append_many(self, events: Iterable[Any], *, ack: Ack | str = Ack.FULL,
                    timeout: float = 30.0) -> list[AppendResult | None]:
        """Append several events in one request; they share fsyncs. Results in input order."""
        ack = Ack.parse(ack)
        content = b"[" + b",".join(self._encode(e) for e in events) + b"]"
        body = self._cluster.request("POST", f"{self._path}/append-many", params={"ack": ack.value, "timeout": timeout},
                                     content=content, headers=_JSON, timeout_s=timeout)
        return [_append_result(item, ack) for item in body["results"]]

    async def append_many_async(self, events: Iterable[Any], *, ack: Ack | str = Ack.FULL,
                                timeout: float = 30.0) -> list[AppendResult | None]:
        return await asyncio.to_thread(self.append_many, list(events), ack=ack, timeout=timeout)

    async def append_async(self, event: Any, *, ack: Ack | str = Ack.FULL, timeout: float = 30.0,
                           idempotency_key: str | None = None) -> AppendResult | None:
        # The pooled sync client in a worker thread: no event-loop-bound connections to leak or close.
        return await asyncio.to_thread(self.append, event, ack=ack, timeout=timeout, idempotency_key=idempotency_key)

    def _check_partition(self, partition: int) -> int:
        if not isinstance(partition, int) or not 0 <= partition < self.partitions:
            raise ValueError(f"depot {self.module}.{self.name} has partitions 0..{self.partitions - 1}, "
                             f"not {partition!r}")
        return partition

    def partition_info(self, partition: int) -> PartitionInfo:
        self._check_partition(partition)
        body = self._cluster.request("GET", f"{self._path}/partitions/{partition}")
        return PartitionInfo(body["partition"], body["start_offset"], body["end_offset"])

    def read(self, partition: int, start: int = 0, stop: int | None = None, *,
             limit: int = 10_000) -> list[DepotRecord]:
        """Records with start <= offset < stop (at most `limit`), oldest first."""
        self._check_partition(partition)
        params: dict[str, Any] = {"start": max(0, start), "limit": limit}
        if stop is not None:
            params["stop"] = stop
        body = self._cluster.request("GET", f"{self._path}/partitions/{partition}/records", params=params)
        return [self._record(r) for r in body["records"]]

    def _record(self, row: dict[str, Any]) -> DepotRecord:
        return DepotRecord(row["partition"], row["offset"], _typed(row["timestamp"], datetime),
                           _typed(row["event"], self._event_type))

    def tail(self, *, from_offset: int | dict[int, int] | None = None, partitions: Iterable[int] | None = None,
             poll_s: float = 0.05, idle_timeout_s: float | None = None) -> Iterator[DepotRecord]:
        """Iterate records as they are appended, from `from_offset` (default: the current end).

        The server pushes them over its tail WebSocket as they are committed (`poll_s` is unused
        here); a dropped connection is made again from the next offsets, without a gap or a repeat.
        Records retention removed before they were read are skipped. Ends when the client closes,
        or after `idle_timeout_s` seconds without a new record.
        """
        chosen = list(partitions) if partitions is not None else list(range(self.partitions))
        for partition in chosen:
            self._check_partition(partition)
        if isinstance(from_offset, dict):
            cursors = {p: from_offset.get(p, 0) for p in chosen}
        elif from_offset is not None:
            cursors = dict.fromkeys(chosen, from_offset)
        else:
            cursors = {p: self.partition_info(p).end_offset for p in chosen}  # now, not at the first next()
        cluster = self._cluster
        return tail_remote(cluster.url + f"{self._path}/tail", cluster.headers, cursors, idle_timeout_s,
                           lambda: cluster.closed, self._record, f"{self.module}.{self.name}",
                           lambda body: _error_from(body, 0))


def _append_result(body: Any, ack: Ack) -> AppendResult | None:
    if ack is Ack.NONE or body is None or body.get("partition") is None:
        return None
    return AppendResult(body["partition"], body["offset"], body.get("results", {}))


class RemotePStateExecutor:
    """Runs a View's reads on the server; clients never write."""

    def __init__(self, cluster: RemoteCluster, module: str, pstate: str, task: int | None, schema: Schema,
                 routed_over: int | None = None) -> None:
        self._cluster = cluster
        self._module = module
        self._pstate = pstate
        self._task = task
        self._root = schema
        self._routed_over = routed_over  # tasks a keyed, partitioned PState is spread over: reads route by key
        self._path = f"/api/modules/{_q(module)}/pstates/{_q(pstate)}"

    def write(self, steps: tuple, op: str, args: tuple = (), kwargs: dict | None = None) -> None:
        raise ReadOnlyError(
            f"clients cannot {op} PState {self._module}.{self._pstate}: PStates change only "
            "through topologies; append an event to a depot instead"
        )

    def watch(self, steps: tuple, callback: Any, on_commit: Any = None) -> Any:
        """A subscription to the value at `steps`, over the server's watch WebSocket."""
        query: dict[str, Any] = {"path": msgspec.json.encode(list(steps)).decode()}
        if self._task is not None:
            query["task"] = self._task
        watched = self._schema_at(steps)

        def schema_at(path: tuple) -> Schema:
            schema = watched
            for step in path:
                schema = schema.child(step, "$")[1]
            return schema

        label = f"{self._module}.{self._pstate}" + "".join(f"[{step!r}]" for step in steps)
        return watch_remote(self._cluster.url + f"{self._path}/watch", self._cluster.headers, query, schema_at,
                            _typed, label, callback, on_commit, lambda body: _error_from(body, 0))

    def _get(self, steps: tuple, op: str, params: dict[str, Any]) -> Any:
        query = {"path": msgspec.json.encode(list(steps)).decode(), **params}
        if self._task is not None:
            query["task"] = self._task
        return self._cluster.request("GET", f"{self._path}/{op}", params=query, port=self._port(steps, op))

    def _port(self, steps: tuple, op: str) -> int | None:
        """The owning process's own port for a point read by key, where there is one."""
        if self._routed_over is None or self._task is not None or not steps or op in ("select", "select_one"):
            return None
        try:
            task = task_for_key(steps[0], self._routed_over)
        except Exception:  # a key this client cannot hash as the server does: the shared port routes it
            return None
        return self._cluster.direct_port(self._module, task)

    def read(self, steps: tuple, op: str, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        schema = self._schema_at(steps)
        if op == "get":
            if isinstance(schema, (Map, Set, List)) and (schema.split or (not steps and isinstance(schema, Map))):
                return self._get_collection(steps, schema, args)
            body = self._get(steps, op, {})
            return _typed(body["value"], schema.value_type) if body.get("found", True) else (args[0] if args else None)
        if op in ("keys", "values", "items"):
            return self._range(steps, op, schema, args, kwargs)
        if op == "slice":
            return self._slice(steps, schema, *args)
        if op == "contains":
            return self._get(steps, op, {"element": _json(args[0])})["value"]
        if op in ("select", "select_one"):  # navigators travel as {"nav": ...} objects after the steps
            return self._get((*steps, *(navigator_json(n) for n in args)), op, {})["value"]
        return self._get(steps, op, {})["value"]

    def _get_collection(self, steps: tuple, schema: Schema, args: tuple) -> Any:
        """A whole collection that may be larger than one answer holds (the server refuses such a
        `get` with read_too_large): read whole when small, else assembled from pages."""
        if self._get(steps, "size", {})["value"] <= READ_PAGE_MAX:
            body = self._get(steps, "get", {})
            return _typed(body["value"], schema.value_type) if body.get("found", True) else (args[0] if args else None)
        if isinstance(schema, Map):
            return dict(self._range(steps, "items", schema, (), {}))
        if isinstance(schema, Set):
            return set(self._range(steps, "keys", schema, (), {}))
        return self._slice(steps, schema)

    def _schema_at(self, steps: tuple) -> Schema:
        # The View checked the steps already; walking again gives the schema at their end.
        schema = self._root
        for step in steps:
            schema = schema.child(step, "$")[1]
        return schema

    def _range(self, steps: tuple, op: str, schema: Schema, args: tuple, kwargs: dict[str, Any]) -> list:
        start, stop = [*args, None, None][:2]
        limit, reverse = kwargs.get("limit"), bool(kwargs.get("reverse", False))
        element_type = _range_type(schema, op)
        found: list = []
        while limit is None or len(found) < limit:
            page = READ_PAGE_MAX if limit is None else min(READ_PAGE_MAX, limit - len(found))
            params: dict[str, Any] = {"limit": page, "reverse": "true" if reverse else "false"}
            if start is not None:
                params["start"] = _json(start)
            if stop is not None:
                params["stop"] = _json(stop)
            body = self._get(steps, op, params)
            found.extend(_typed(v, element_type) for v in body["value"])
            cursor = body.get("next")
            if not cursor:
                break
            start, stop = cursor.get("start", start), cursor.get("stop", stop)
        return found

    def _slice(self, steps: tuple, schema: Schema, start: int | None = None, stop: int | None = None) -> list:
        element_type = GenericAlias(list, schema.value_schema.value_type) if isinstance(schema, List) else Any
        found: list = []
        while True:
            params = {k: v for k, v in (("start", start), ("stop", stop)) if v is not None}
            body = self._get(steps, "slice", params)
            found.extend(_typed(body["value"], element_type))
            cursor = body.get("next")
            if not cursor:
                return found
            start = cursor["start"]


def _range_type(schema: Schema, op: str) -> Any:
    if isinstance(schema, Set):
        return schema.element_type
    if isinstance(schema, Map):
        if op == "keys":
            return schema.key_type
        if op == "values":
            return schema.value_schema.value_type
        return tuple[schema.key_type, schema.value_schema.value_type]  # type: ignore[name-defined]
    return Any


def navigator_json(navigator: Any) -> Any:
    """A navigator in the path's JSON encoding (docs/http-api.md); a plain value stays as it is."""
    import headwater.pstate as pstate

    for name in ("ALL", "MAP_KEYS", "MAP_VALS", "FIRST", "LAST", "SIZE"):
        if navigator is getattr(pstate, name, object()):
            return {"nav": name.lower()}
    base = getattr(pstate, "Navigator", None)
    if base is None or not isinstance(navigator, base):
        return navigator
    if hasattr(navigator, "must_exist"):
        return {"nav": "must", "key": navigator.key} if navigator.must_exist else navigator.key
    if hasattr(navigator, "index"):
        return {"nav": "nth", "index": navigator.index}
    if hasattr(navigator, "stop") and hasattr(navigator, "reverse"):
        return {"nav": "range", "start": navigator.start, "stop": navigator.stop, "limit": navigator.limit,
                "reverse": navigator.reverse}
    raise PathError(f"{navigator!r} takes a Python function, which cannot be sent to a server; select the "
                    "values without it and filter or transform them in the client")


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


class RemoteDeadLetter:
    """A failed invocation of a remote stream topology; `retry()` runs it again on the server."""

    def __init__(self, cluster: RemoteCluster, module: str, entry: dict[str, Any]) -> None:
        self._cluster = cluster
        self.module = module
        self.id: int = entry["id"]
        self.topology: str = entry["topology"]
        self.kind: str = entry["kind"]
        self.task: int = entry["task"]
        self.depot: str = entry["depot"]
        self.partition: int = entry["partition"]
        self.offset: int = entry["offset"]
        self.step: str | None = entry.get("step")
        self.error_type: str = entry["error_type"]
        self.traceback: str = entry["traceback"]
        self.attempts: int = entry["attempts"]

    def __repr__(self) -> str:
        where = f"step {self.step!r}" if self.step else "record"
        return (f"<DeadLetter {self.topology} {where} partition={self.partition} offset={self.offset} "
                f"{self.error_type} attempts={self.attempts}>")

    @property
    def event(self) -> Any:
        """The depot record whose processing failed (read from the server; records are never deleted)."""
        records = self._cluster.depot(self.module, self.depot).read(self.partition, self.offset, self.offset + 1)
        return records[0].event if records else None

    def retry(self, *, timeout: float = 30.0) -> Any:
        """Run the failed invocation again; returns its result, or raises HandlerError if it fails again."""
        path = f"/api/modules/{_q(self.module)}/topologies/{_q(self.topology)}/dead-letters/{self.id}/retry"
        return self._cluster.request("POST", path, params={"timeout": timeout}, timeout_s=timeout)["value"]
