"""Endpoints about the server itself: module listing, live stats, OpenAPI, health and /metrics."""

from __future__ import annotations

import asyncio
import http.client
import os
import time
from pathlib import PurePosixPath
from typing import Any

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from headwater.cluster.apps import APP_SOURCE_BYTES_MAX, APP_TASKS_DEFAULT
from headwater.cluster.inprocess import TASKS_MAX
from headwater.errors import PermissionDenied
from headwater.server.catalog import describe_module, runtime_of
from headwater.server.http import ApiError, decode_json, endpoint, json_response, query_bool, query_int, read_body
from headwater.server.metrics import cluster_stats, merge_process_metrics
from headwater.server.openapi import openapi_document
from headwater.server.state import authorize, state_of

__all__ = ["PEER_METRICS_TIMEOUT_S", "ROUTES"]

PEER_METRICS_TIMEOUT_S = 5.0  # the longest a scrape waits for another worker's counts

_DESCRIPTIONS_MAX = 256
_descriptions: dict[int, tuple[Any, dict[str, Any]]] = {}  # id(runtime) -> (runtime, description)


def _description(runtime: Any) -> dict[str, Any]:
    # Describing a module builds JSON Schemas; a deployed module never changes, so once is enough.
    # The runtime is kept alongside its id so the id cannot be reused by another object meanwhile.
    cached = _descriptions.get(id(runtime))
    if cached is None or cached[0] is not runtime:
        if len(_descriptions) >= _DESCRIPTIONS_MAX:
            _descriptions.clear()
        cached = _descriptions[id(runtime)] = (runtime, describe_module(runtime))
    return cached[1]


def _visible(request: Request) -> list[str]:
    """The deployed modules the caller's token has any scope on (an append-only client must still
    learn a depot's partitions and event schema)."""
    state = state_of(request)
    token = state.auth.token_for(request.headers.get("authorization"))  # 401 without a valid token
    return [m for m in state.cluster.modules() if _may_see(state, token, m)]


def _may_see(state: Any, token: Any, module: str) -> bool:
    return any(state.auth.may(token, action, module) for action in ("read", "append"))


def _with_dependents(description: dict[str, Any], cluster: Any) -> dict[str, Any]:
    """A module's description with the deployed modules that mirror something of it (`mirrored_by`)."""
    name = description["name"]
    users = sorted({str(m) for m in cluster.modules() if m != name
                    and name in runtime_of(cluster, m).module.dependencies()})
    return {**description, "mirrored_by": users}


@endpoint
async def modules(request: Request) -> Response:
    state = state_of(request)
    return json_response({"modules": [_with_dependents(_description(runtime_of(state.cluster, m)), state.cluster)
                                      for m in _visible(request)]})


@endpoint
async def module(request: Request) -> Response:
    # The same rule as the listing, which shows this description to the same tokens.
    name, state = request.path_params["module"], state_of(request)
    token = state.auth.token_for(request.headers.get("authorization"))
    if not _may_see(state, token, name):
        assert token is not None  # with auth off (no token) every module may be seen
        raise PermissionDenied(f"token {token.name!r} has no scope on module {name!r}: describing it needs "
                               f"read:{name} or append:{name} (or read, append, admin)")
    return json_response(_with_dependents(_description(runtime_of(state.cluster, name)), state.cluster))


@endpoint
async def stats(request: Request) -> Response:
    state = state_of(request)
    names = _visible(request)
    found = await asyncio.to_thread(cluster_stats, state.cluster, names)
    for entry in found:
        for depot in entry["depots"]:
            depot["appended"] = state.metrics.appended(entry["name"], depot["name"])
            depot["ack_latency_ms"] = state.metrics.latency_ms(entry["name"], depot["name"])
    return json_response({"time_s": time.time(), "modules": found})


@endpoint
async def routes(request: Request) -> Response:
    """Per visible module, per task: the port where the process hosting it answers alone (a worker
    of `--workers N`), or null; `hw.connect` sends a read there, saving a hop between workers."""
    state = state_of(request)
    names = _visible(request)
    status = await asyncio.to_thread(state.cluster.status)
    return json_response({"modules": {name: [row.get("direct_port") for row in status.get(name, [])]
                                      for name in names}})


@endpoint
async def openapi(request: Request) -> Response:
    state = state_of(request)
    runtimes = [runtime_of(state.cluster, m) for m in _visible(request)]
    return json_response(openapi_document(runtimes, secured=state.auth.enabled))


@endpoint
async def health(request: Request) -> Response:
    # Load balancers ask without a token: they learn that the server is up, and only a caller
    # with a valid token learns the names of the modules it has a scope on.
    # `pid` says which process answered (with --workers N, every worker serves the port).
    state = state_of(request)
    if not state.auth.enabled:
        return json_response({"ok": True, "modules": state.cluster.modules(), "pid": os.getpid()})
    try:
        names = _visible(request)
    except ApiError:
        return json_response({"ok": True})
    return json_response({"ok": True, "modules": names, "pid": os.getpid()})


@endpoint
async def metrics(request: Request) -> Response:
    # The metrics name and count every module's depots and topologies: only a token that may read
    # every module (read or admin, not read:m) sees them.
    authorize(request, "read", None)
    state = state_of(request)
    own = await asyncio.to_thread(generate_latest, state.metrics.process_registry)
    if request.query_params.get("scope") == "process":  # a peer gathering the processes' counts
        return Response(own, media_type=CONTENT_TYPE_LATEST)
    status = await asyncio.to_thread(state.cluster.status)  # asked once: for the gauges and for the peers
    cluster = await asyncio.to_thread(state.metrics.cluster_text, status)
    peers = _peer_fronts(status)
    if peers:  # every worker serves the port: what each counted, added up, so a scrape sees them all
        texts = await asyncio.gather(*(asyncio.to_thread(_process_metrics, request, port) for port in peers))
        merged = merge_process_metrics([own.decode(), *texts])
        own = await asyncio.to_thread(generate_latest, merged)
    return Response(own + cluster, media_type=CONTENT_TYPE_LATEST)


def _peer_fronts(status: dict[str, list[dict[str, Any]]]) -> list[int]:
    """The own ports of the other processes serving this API (the workers of `--workers N`)."""
    return sorted({row["direct_port"] for rows in status.values() for row in rows
                   if row.get("direct_port") and row["pid"] != os.getpid()})


def _process_metrics(request: Request, port: int) -> str:
    """What the front on `port` of this host counted itself, asked with the caller's token."""
    host = request.url.hostname or "127.0.0.1"
    connection = http.client.HTTPConnection(host, port, timeout=PEER_METRICS_TIMEOUT_S)
    try:
        headers = {"Authorization": request.headers["authorization"]} if "authorization" in request.headers else {}
        connection.request("GET", "/metrics?scope=process", headers=headers)
        response = connection.getresponse()
        body = response.read().decode()
        if response.status != 200:
            raise ApiError(502, "peer_unavailable", f"the worker serving port {port} answered {response.status} "
                                                    "to /metrics; retry the scrape")
        return body
    except OSError as e:
        raise ApiError(502, "peer_unavailable", f"cannot reach the worker serving port {port} ({e}); it may be "
                                                "restarting: retry the scrape") from None
    finally:
        connection.close()


@endpoint
async def migrations(request: Request) -> Response:
    """The module's PState migrations still rewriting stored data (or finished since its update)."""
    module = request.path_params["module"]
    authorize(request, "read", module)
    return json_response({"migrations": await asyncio.to_thread(state_of(request).cluster.migrations, module)})


APP_CONTENT_TYPE = "text/x-python"


@endpoint
async def update(request: Request) -> Response:
    """Apply a new version of the app file: its source is the body (`Content-Type: text/x-python`).

    Loaded apart from the running code, every module it defines is checked against what is
    deployed, then updated (or deployed, with `?tasks=`); `?dry_run=true` only checks. Query
    parameters: `filename` (its name decides the Python module the code runs under), `delete`
    (repeated, `module/name`). Needs an admin token on every module: the code runs in the server."""
    authorize(request, "admin")
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if content_type != APP_CONTENT_TYPE:
        # Not a type a browser may send across origins without asking first, so a web page cannot
        # post code to a server on this machine.
        raise ApiError(415, "unsupported_media_type", f"send the app file's source with Content-Type: "
                       f"{APP_CONTENT_TYPE}, not {content_type or 'none'!r}")
    state = state_of(request)
    apply = getattr(state.cluster, "apply_app", None)
    if apply is None:
        raise ApiError(501, "not_supported", "this server's cluster cannot apply app updates")
    source = await read_body(request, APP_SOURCE_BYTES_MAX)
    filename = PurePosixPath(request.query_params.get("filename") or "app.py").name
    if not filename.endswith(".py"):
        raise ApiError(400, "bad_request", f"filename={filename!r} must name a .py file")
    dry_run = query_bool(request, "dry_run")
    tasks = query_int(request, "tasks", APP_TASKS_DEFAULT, minimum=1, maximum=TASKS_MAX)
    report = await asyncio.to_thread(apply, source, filename=filename, delete=request.query_params.getlist("delete"),
                                     dry_run=dry_run, tasks=tasks)
    return json_response({"modules": report, "dry_run": dry_run})


BACKUP_BODY_BYTES_MAX = 64 * 1024


class BackupRequest(msgspec.Struct, forbid_unknown_fields=True):
    destination: str
    keep: int | None = None


@endpoint
async def backup(request: Request) -> Response:
    """Back up every module to `{"destination": PATH}`, a directory on the server's machine (each
    worker must be able to write it): a consistent, incremental backup, as `cluster.backup` does;
    with `"keep": N`, then delete all but the N newest backups there. Answers what it wrote
    (`hw.BackupInfo` as JSON). Needs an admin token on every module: it copies every module's data."""
    authorize(request, "admin")
    body = decode_json(await read_body(request, BACKUP_BODY_BYTES_MAX), BackupRequest)
    if not os.path.isabs(body.destination):
        raise ApiError(400, "bad_request", f"destination={body.destination!r} must be an absolute directory path on "
                       "the server's machine (where the server runs is not the caller's business)")
    if body.keep is not None and body.keep < 1:
        raise ApiError(400, "bad_request", f"keep={body.keep} must be 1 or more: the number of newest backups to keep")
    info = await asyncio.to_thread(state_of(request).cluster.backup, body.destination, keep=body.keep)
    return json_response(info.to_json())


ROUTES: list[tuple[str, Any, list[str]]] = [
    ("/api/update", update, ["POST"]),
    ("/api/backup", backup, ["POST"]),
    ("/api/modules", modules, ["GET"]),
    ("/api/modules/{module}", module, ["GET"]),
    ("/api/modules/{module}/migrations", migrations, ["GET"]),
    ("/api/stats", stats, ["GET"]),
    ("/api/routes", routes, ["GET"]),
    ("/api/openapi.json", openapi, ["GET"]),
    ("/api/health", health, ["GET"]),
    ("/metrics", metrics, ["GET"]),
]
