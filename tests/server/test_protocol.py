"""How the app is served: the hot routes answer as the route table would, answers leave in one
write, and uvicorn runs on httptools and uvloop."""

from __future__ import annotations

import asyncio

import pytest
from starlette.routing import Match

import headwater as hw
from headwater.server import create_app
from headwater.server.app import HOT_ENDPOINTS
from headwater.server.protocol import CoalescingTransport
from headwater.server.run import _config


@pytest.fixture(scope="module")
def app():
    with hw.InProcessCluster() as cluster:
        yield create_app(cluster)


def table_match(app, method: str, path: str):
    """The endpoint and path parameters Starlette's route table gives a request, or None."""
    scope = {"type": "http", "method": method, "path": path, "root_path": ""}
    for route in app.router.routes:
        match, child = route.matches(scope)
        if match is Match.FULL:
            return getattr(route, "endpoint", None), child.get("path_params")
    return None


def hot_match(app, method: str, path: str):
    for route in app.hot_routes:
        params = route.match(method, path.split("/"))
        if params is not None:
            return route.endpoint, params
    return None


@pytest.mark.parametrize("method, path", [
    ("POST", "/api/modules/bank/depots/deposits/append"),
    ("GET", "/api/modules/bank/depots/deposits/append"),
    ("POST", "/api/modules/bank/depots/deposits/append-many"),
    ("POST", "/api/modules/bank/depots/deposits/append/"),
    ("GET", "/api/modules/bank/pstates/funds/get"),
    ("GET", "/api/modules/bänk/pstates/fünds/keys"),
    ("GET", "/api/modules/bank/pstates/funds/get/"),
    ("GET", "/api/modules//pstates/funds/get"),
    ("GET", "/api/modules/bank/pstates/funds/"),
    ("HEAD", "/api/modules/bank/pstates/funds/get"),
    ("POST", "/api/modules/bank/pstates/funds/get"),
    ("GET", "/api/modules/bank/depots/deposits/partitions/1"),
    ("GET", "/api/modules/bank/queries/q/pstates/x"),
])
def test_hot_routes_answer_exactly_as_the_route_table(app, method, path):
    hot = hot_match(app, method, path)
    table = table_match(app, method, path)
    if hot is not None:
        assert hot == table
    else:  # whatever the table does with it (404, 405, another endpoint), it is not a hot endpoint
        assert table is None or table[0] not in HOT_ENDPOINTS or method == "HEAD"


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def test_writes_in_one_event_loop_turn_leave_as_one_write():
    async def run() -> RecordingTransport:
        real = RecordingTransport()
        transport = CoalescingTransport(real, asyncio.get_running_loop())
        transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
        transport.write(b"{}")
        assert real.writes == []
        await asyncio.sleep(0)
        assert real.writes == [b"HTTP/1.1 200 OK\r\n\r\n{}"]
        transport.write(b"last")
        transport.close()  # what was written before close still leaves, before the close
        assert real.writes[-1] == b"last" and real.closed
        transport.write(b"after close")
        await asyncio.sleep(0)
        assert real.writes[-1] == b"last"
        assert transport.is_closing()  # everything else is the real transport's
        return real

    asyncio.run(run())


def test_uvicorn_runs_on_httptools_and_uvloop():
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    config = _config(object(), log_level="error")
    assert issubclass(config.http, HttpToolsProtocol)
    assert config.loop == "uvloop"
