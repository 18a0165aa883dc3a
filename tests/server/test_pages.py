"""Static pages an app file serves beside the API (`pages` in the app file): the leaderboard's page
served by `headwater serve examples/app.py`, and refusals of `pages` that cannot be served."""

from __future__ import annotations

import httpx
import pytest

import headwater as hw
from examples.leaderboard import leaderboard
from headwater.server.run import ServeError, load_pages
from tests.server.support import served

APP = "examples/app.py"


def test_the_example_app_serves_the_leaderboard_page():
    pages = load_pages(APP)
    assert list(pages) == ["/examples/leaderboard"] and (pages["/examples/leaderboard"] / "index.html").is_file()
    with hw.InProcessCluster() as cluster:
        cluster.deploy(leaderboard, tasks=2)
        with served(cluster, pages=pages) as url:
            page = httpx.get(f"{url}/examples/leaderboard/")
            assert page.status_code == 200 and "<h1>Leaderboard</h1>" in page.text
            script = httpx.get(f"{url}/examples/leaderboard/leaderboard.js")
            assert script.status_code == 200 and 'from "/ui/client/index.js"' in script.text
            assert httpx.get(f"{url}/ui/client/index.js").status_code == 200  # what the page imports
            assert httpx.get(f"{url}/examples/leaderboard/nope.js").status_code == 404


@pytest.mark.parametrize(("declared", "words"), [
    ('pages = {"/api/mine": "."}', "is not a URL prefix"),
    ('pages = {"mine": "."}', "start it with /"),
    ('pages = {"/mine/": "."}', "is not a URL prefix"),
    ('pages = {"/mine": "missing"}', "is not a directory"),
    ('pages = ["/mine"]', "must be a dict"),
])
def test_pages_that_cannot_be_served_are_refused(tmp_path, declared, words):
    app = tmp_path / "app.py"
    app.write_text(f"import headwater as hw\nm = hw.Module('m')\n{declared}\n")
    with pytest.raises(ServeError, match=words):
        load_pages(str(app))


@pytest.mark.parametrize("workers", ["0", "2"])
def test_serve_serves_the_pages_of_the_app_file_from_every_front(tmp_path, workers):
    """`headwater serve examples/app.py` (what `make run` does), alone and with worker fronts: the
    leaderboard page, and the board it watches changing with an append."""
    import json
    import sys

    from websockets.sync.client import connect

    from tests.server.support import start_serving
    from tests.server.test_serve import ROOT, free_port, stop

    port = free_port()
    command = [sys.executable, "-m", "headwater.cli", "serve", APP, "--data", str(tmp_path / "data"),
               "--port", str(port), "--tasks", "2", "--workers", workers]
    process = start_serving(command, port, cwd=ROOT, what="the server")
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(4):  # new connections: with workers, the kernel spreads them over the fronts
            with httpx.Client() as client:
                assert "<h1>Leaderboard</h1>" in client.get(f"{url}/examples/leaderboard/").text
        with connect(f"ws://127.0.0.1:{port}/api/modules/leaderboard/pstates/board/watch") as ws:
            assert json.loads(ws.recv(timeout=10)) == {"type": "value", "value": None}
            append = httpx.post(f"{url}/api/modules/leaderboard/depots/scores/append",
                                json={"player": "ann", "points": 3})
            assert append.status_code == 200, append.text
            message = json.loads(ws.recv(timeout=10))
            assert message["type"] == "diffs" and message["diffs"][0]["value"] == [{"player": "ann", "points": 3}]
    finally:
        stop(process)
