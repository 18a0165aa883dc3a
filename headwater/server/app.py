"""The ASGI application: the HTTP/JSON API under /api, Prometheus metrics, and the web UI at /ui."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from headwater.client.cluster import Cluster
from headwater.server import depots, modules, pstates, queries, tail, watch
from headwater.server.auth import Auth
from headwater.server.http import (
    MAX_BODY_BYTES_DEFAULT,
    ApiError,
    Endpoint,
    answer_for_error,
    count_request,
    error_response,
    json_answer,
)
from headwater.server.metrics import Metrics
from headwater.server.state import ServerState

__all__ = ["HOT_ENDPOINTS", "RESERVED_PREFIXES", "UI_DIRECTORY", "HeadwaterApp", "HotRoute", "InlineRequest",
           "create_app"]

UI_DIRECTORY = Path(__file__).parent / "ui"
RESERVED_PREFIXES = frozenset({"/api", "/ui", "/metrics"})  # the server's own: an app's pages go elsewhere


async def _http_error(request: Request, error: Exception) -> Response:
    # Unknown routes and wrong methods answer in the same JSON shape as every other error.
    assert isinstance(error, HTTPException)
    if error.status_code == 405:
        response = error_response(ApiError(405, "method_not_allowed", f"{request.method} is not allowed on "
                                           f"{request.url.path}; it allows {(error.headers or {}).get('Allow', '')}"))
        response.headers.update(error.headers or {})  # Allow: the methods the path takes
        return response
    if error.status_code == 404:
        return error_response(ApiError(404, "not_found", f"no endpoint at {request.url.path}; "
                                       "the API is described at /api/openapi.json"))
    return error_response(ApiError(error.status_code, "bad_request", str(error.detail)))


async def _to_ui(request: Request) -> Response:
    return RedirectResponse("/ui/")


class HotRoute:
    """A route of the API table matched by comparing path segments, without regular expressions.

    `answer`, when the endpoint has one, computes the endpoint's JSON body without awaiting
    (or returns `pstates.InThread` when it must not run on the event loop).
    """

    def __init__(self, template: str, endpoint: Endpoint, method: str,
                 answer: Callable[[Any], Any] | None = None) -> None:
        self.segments = template.split("/")
        templated = [s for s in self.segments if s.startswith("{")]
        assert all(s[1:-1].isidentifier() for s in templated), f"{template}: str parameters only"
        self.endpoint, self.method, self.answer = endpoint, method, answer

    def match(self, method: str, parts: list[str]) -> dict[str, str] | None:
        """The path parameters if `parts` (the request path split at "/") is this route, else None."""
        if method != self.method or len(parts) != len(self.segments):
            return None
        params = {}
        for segment, part in zip(self.segments, parts, strict=True):
            if segment.startswith("{"):
                if not part:
                    return None
                params[segment[1:-1]] = part
            elif segment != part:
                return None
        return params


# One append and one PState read: most of the traffic, and cheap enough that Starlette's middleware
# layers and a dozen route patterns tried in turn would cost as much as serving them.
HOT_ENDPOINTS = (depots.append, pstates.read)
# Endpoints that can answer without awaiting: a point read is answered as soon as its request is
# parsed, with no ASGI scope, task or Starlette request (see `protocol.py`).
ANSWERS: dict[Endpoint, Callable[[Any], Any]] = {pstates.read: pstates.answer_read}


class _Url:
    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path


def _query_params(query: str) -> dict[str, str]:
    """What `dict(parse_qsl(query, keep_blank_values=True))` gives, unquoting only what needs it."""
    params = {}
    for field in query.split("&"):
        if not field:
            continue
        name, _, value = field.partition("=")
        if "%" in name or "+" in name:
            name = unquote_plus(name)
        if "%" in value or "+" in value:
            value = unquote_plus(value)
        params[name] = value
    return params


class InlineRequest:
    """What an endpoint reads of a request (path and query parameters, headers, the app), built
    straight from the HTTP parser's output instead of an ASGI scope."""

    __slots__ = ("app", "headers", "method", "path_params", "query_params", "url")

    def __init__(self, app: HeadwaterApp, method: str, path: str, path_params: dict[str, str],
                 query_string: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.app, self.method, self.url, self.path_params = app, method, _Url(path), path_params
        # As Starlette reads them: the last value of a repeated parameter, the first of a header.
        self.query_params = _query_params(query_string.decode("latin-1"))
        self.headers: dict[str, str] = {}
        for name, value in headers:
            self.headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))


class HeadwaterApp(Starlette):
    """Starlette, with the hot routes dispatched before its middleware stack and route table.

    They answer exactly as through the table: every endpoint turns its exceptions into JSON
    errors itself, and a path or method they do not match (HEAD, a trailing slash) falls through.
    """

    def __init__(self, routes: list[Any], hot_routes: list[HotRoute]) -> None:
        super().__init__(routes=routes, exception_handlers={HTTPException: _http_error})
        self.hot_routes = hot_routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            method, parts = scope["method"], scope["path"].split("/")
            for route in self.hot_routes:
                params = route.match(method, parts)
                if params is not None:
                    scope["app"], scope["path_params"] = self, params
                    response = await route.endpoint(Request(scope, receive, send))
                    await response(scope, receive, send)
                    return
        await super().__call__(scope, receive, send)

    def answer_now(self, method: str, path: str, query_string: bytes,
                   headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes] | None:
        """The status and JSON body answering a request with no body, if a hot route can compute
        them without awaiting; None sends the request down the ASGI path instead. Answers exactly
        as that path would."""
        parts = path.split("/")
        for route in self.hot_routes:
            if route.answer is None:
                continue
            params = route.match(method, parts)
            if params is None:
                continue
            request = InlineRequest(self, method, path, params, query_string, headers)
            try:
                answer = route.answer(request)
                if isinstance(answer, pstates.InThread):
                    return None
                status, content = json_answer(answer)
            except Exception as e:
                status, content = answer_for_error(request, e)
            count_request(request, route.endpoint.__name__, status)
            return status, content
        return None


WATCH_PATH = "/api/modules/{module}/pstates/{pstate}/watch"  # a WebSocket (server/watch.py)
TAIL_PATH = "/api/modules/{module}/depots/{depot}/tail"  # a WebSocket (server/tail.py)


def create_app(cluster: Cluster, *, auth: Auth | None = None, max_body_bytes: int = MAX_BODY_BYTES_DEFAULT,
               pages: Mapping[str, Path] | None = None) -> HeadwaterApp:
    """The server for the modules deployed on `cluster` (which the caller keeps and closes);
    `pages` serves static directories at URL prefixes beside the API and the UI (an app file's
    `pages`, see `load_pages`)."""
    table = [row for rows in (modules.ROUTES, depots.ROUTES, pstates.ROUTES, queries.ROUTES) for row in rows]
    routes: list[Any] = [WebSocketRoute(WATCH_PATH, watch.watch), WebSocketRoute(TAIL_PATH, tail.tail)]
    routes += [Route(path, fn, methods=methods) for path, fn, methods in table]
    routes += [Route("/", _to_ui, methods=["GET"]),
               Mount("/ui", StaticFiles(directory=UI_DIRECTORY, html=True), name="ui")]
    routes += [Mount(prefix, StaticFiles(directory=folder, html=True)) for prefix, folder in (pages or {}).items()]
    hot = [HotRoute(path, fn, method, ANSWERS.get(fn)) for path, fn, methods in table if fn in HOT_ENDPOINTS
           for method in methods]
    app = HeadwaterApp(routes, hot)
    metrics = Metrics(cluster)
    app.state.headwater = ServerState(cluster, auth or Auth([]), metrics, max_body_bytes)
    app.state.metrics = metrics
    return app
