"""The ASGI application: the HTTP/JSON API under /api, Prometheus metrics, and the web UI at /ui."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from headwater.cluster.inprocess import InProcessCluster
from headwater.server import depots, modules, pstates, queries
from headwater.server.auth import Auth
from headwater.server.http import MAX_BODY_BYTES_DEFAULT, ApiError, error_response
from headwater.server.metrics import Metrics
from headwater.server.state import ServerState

__all__ = ["UI_DIRECTORY", "create_app"]

UI_DIRECTORY = Path(__file__).parent / "ui"


async def _http_error(request: Request, error: Exception) -> Response:
    # Unknown routes and wrong methods answer in the same JSON shape as every other error.
    assert isinstance(error, HTTPException)
    if error.status_code == 405:
        return error_response(ApiError(405, "method_not_allowed", f"{request.method} is not allowed on {request.url.path}"))
    if error.status_code == 404:
        return error_response(ApiError(404, "not_found", f"no endpoint at {request.url.path}; "
                                       "the API is described at /api/openapi.json"))
    return error_response(ApiError(error.status_code, "bad_request", str(error.detail)))


async def _to_ui(request: Request) -> Response:
    return RedirectResponse("/ui/")


def create_app(cluster: InProcessCluster, *, auth: Auth | None = None,
               max_body_bytes: int = MAX_BODY_BYTES_DEFAULT) -> Starlette:
    """The server for the modules deployed on `cluster` (which the caller keeps and closes)."""
    routes: list[Any] = [Route(path, fn, methods=methods)
                         for table in (modules.ROUTES, depots.ROUTES, pstates.ROUTES, queries.ROUTES)
                         for path, fn, methods in table]
    routes += [Route("/", _to_ui, methods=["GET"]), Mount("/ui", StaticFiles(directory=UI_DIRECTORY, html=True), name="ui")]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    metrics = Metrics(cluster)
    app.state.headwater = ServerState(cluster, auth or Auth([]), metrics, max_body_bytes)
    app.state.metrics = metrics
    return app
