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
