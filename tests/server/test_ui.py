"""The web UI in a real browser (Debian's chromium driven by Playwright): click through the examples.

The browser tests skip with the reason when Playwright or /usr/bin/chromium is missing (`make test`
installs chromium with apt-get first). `HEADWATER_UPDATE_SCREENSHOT=1` refreshes docs/ui.png, taken
of what `make run` serves.
"""

from __future__ import annotations

import os
import shutil
import struct
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import headwater as hw
from examples.bank import Deposit, Transfer
from examples.orders import Address, LineItem, NewOrder
from examples.registration import UserSignUp
from headwater.cluster.apps import APP_TASKS_DEFAULT as SERVE_TASKS_DEFAULT
from headwater.schema import task_for_key
from headwater.server.run import deploy_all, load_modules, load_pages
from tests.server.support import FIXED, Job, deploy, jobs_module, served

ROOT = Path(__file__).parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
MAKE_RUN_APP = ROOT / "examples" / "app.py"  # what `make run` serves, with serve's default task count
SCREENSHOT = ROOT / "docs" / "ui.png"
SCREENSHOT_KEYWORD = "Source"  # a PNG text chunk recording what the screenshot shows
WAIT_MS = 10_000
LIVE_LATENCY_MS_MAX = 100  # from sending an append to the leaderboard page showing it (the median)
LIVE_LATENCY_ROUNDS = 9

playwright_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")


def fill(cluster: hw.InProcessCluster) -> None:
    cluster.depot("bank", "deposits").append_many([Deposit(user, 100 + user) for user in range(12)])
    cluster.depot("bank", "transfers").append_many([Transfer(f"t{i}", i, i + 1, 25) for i in range(6)])
    cluster.depot("registration", "registrations").append_many(
        [UserSignUp(f"user{i}@example.com", f"hash{i}", 1_700_000_000_000) for i in range(8)])
    for _ in range(3):
        cluster.depot("orders", "new_orders").append(NewOrder(
            uuid.uuid4(), uuid.uuid4(), [LineItem(uuid.uuid4(), 2, 1999), LineItem(uuid.uuid4(), 1, 4500)],
            Address("1 Main St", "Springfield", "IL", "62701")))


@pytest.fixture(scope="module")
def site() -> Iterator[tuple[hw.InProcessCluster, str]]:
    with hw.InProcessCluster() as cluster:
        deploy(cluster)
        fill(cluster)
        with served(cluster) as url:
            yield cluster, url


@pytest.fixture(scope="module")
def make_run_site() -> Iterator[tuple[hw.InProcessCluster, str]]:
    """The modules `make run` serves, deployed as `headwater serve` deploys them, with a little data."""
    with hw.InProcessCluster() as cluster:
        deploy_all(cluster, load_modules(MAKE_RUN_APP), SERVE_TASKS_DEFAULT)
        fill(cluster)
        with served(cluster, pages=load_pages(MAKE_RUN_APP)) as url:
            yield cluster, url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not shutil.which(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: install it with `apt-get install -y chromium` (make test does)")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any, site: Any) -> Iterator[Any]:
    yield from open_page(browser, site[1], modules=4)


@pytest.fixture
def make_run_page(browser: Any, make_run_site: Any) -> Iterator[Any]:
    yield from open_page(browser, make_run_site[1], modules=len(load_modules(MAKE_RUN_APP)))


def open_page(browser: Any, url: str, *, modules: int) -> Iterator[Any]:
    page = browser.new_page(viewport={"width": 1360, "height": 860})
    page.set_default_timeout(WAIT_MS)
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.goto(url + "/ui/")
    page.get_by_text(f"live · {modules} modules").wait_for()
    yield page
    page.close()
    # A failed request the test caused on purpose logs a console error; anything else is a bug.
    assert [p for p in problems if "status of 4" not in p and "status of 5" not in p] == []


def test_overview_shows_every_module_live(page):
    cards = page.locator(".module-card")
    assert sorted(cards.locator("h2").all_inner_texts()) == ["bank", "jobs", "orders", "registration"]
    bank = page.locator('.module-card[data-module="bank"]')
    playwright_api.expect(bank.locator('[data-k="records"]')).to_have_text("18")
    assert bank.locator("svg.spark").count() == 1


def test_module_page_lists_topologies_depots_pstates_and_queries(page):
    page.locator(".nav-title", has_text="bank").click()
    playwright_api.expect(page.locator("h1")).to_have_text("bank")
    deposit = page.locator('tr[data-topology="deposit"]')
    playwright_api.expect(deposit.locator('[data-k="processed"]')).to_have_text("12")
    playwright_api.expect(deposit.locator('[data-k="lag"]')).to_have_text("0")
    assert page.locator('tr[data-depot="deposits"] .bar-row').count() == 2
    playwright_api.expect(page.locator("#hosts tr")).to_have_count(2)  # where each task runs
    playwright_api.expect(page.locator('#hosts tr[data-task="1"]')).to_contain_text("this process")
    playwright_api.expect(page.locator('#hosts tr[data-task="1"]')).to_contain_text("up")
    page.locator("#view").get_by_role("link", name="total_funds").click()
    playwright_api.expect(page.locator("h1")).to_have_text("total_funds")


def test_depot_page_appends_and_tails(page):
    page.goto(page.url.split("#")[0] + "#/m/bank/depot/deposits")
    playwright_api.expect(page.locator("#tail tr")).to_have_count(12)
    page.locator("#event").fill('{"user_id": 4242, "amount": 7}')
    page.get_by_role("button", name="Append").click()
    result = page.locator("#append-result")
    playwright_api.expect(result).to_contain_text("appended")
    playwright_api.expect(result).to_contain_text('"deposit"')
    playwright_api.expect(page.locator("#tail tr").first).to_contain_text('"user_id":4242')
    page.locator("#event").fill('{"user_id": "x", "amount": 7}')
    page.get_by_role("button", name="Append").click()
    playwright_api.expect(result.locator(".alert")).to_contain_text("schema_error")
    playwright_api.expect(result.locator(".alert")).to_contain_text("$.user_id")


def sockets_of(page: Any) -> list[dict[str, Any]]:
    """Every WebSocket the page opens from now on, as {"url", "closed"}."""
    opened: list[dict[str, Any]] = []

    def on_socket(ws: Any) -> None:
        entry = {"url": ws.url, "closed": False}
        opened.append(entry)
        ws.on("close", lambda _: entry.update(closed=True))

    page.on("websocket", on_socket)
    return opened


def test_depot_tail_is_pushed_by_the_server_not_polled(page, site):
    sockets = sockets_of(page)
    reads: list[str] = []
    page.on("request", lambda request: reads.append(request.url) if "/records" in request.url else None)
    page.goto(page.url.split("#")[0] + "#/m/bank/depot/deposits")
    playwright_api.expect(page.locator("#live")).to_have_attribute("data-state", "live")
    rows = page.locator("#tail tr").count()
    site[0].depot("bank", "deposits").append(Deposit(5150, 3))  # not through the page: only a push can show it
    playwright_api.expect(page.locator("#tail tr.fresh").first).to_contain_text('"user_id":5150')
    assert page.locator("#tail tr").count() == min(rows + 1, 50)
    assert reads == [] and [s["url"].split("?")[0].rsplit("/", 1)[1] for s in sockets] == ["tail"]
    page.goto(page.url.split("#")[0] + "#/m/bank")  # navigating away closes the socket
    page.wait_for_function("() => document.querySelector('h1')?.textContent === 'bank'")
    page.wait_for_timeout(200)
    assert sockets[0]["closed"]


def test_pstate_browser_shows_the_value_live(page, site):
    sockets = sockets_of(page)
    funds = site[0].pstate("bank", "funds")
    page.goto(page.url.split("#")[0] + "#/m/bank/pstate/funds?path=[3]")
    playwright_api.expect(page.locator("#live")).to_have_attribute("data-state", "live")
    playwright_api.expect(page.locator("pre.json")).to_have_text(str(funds[3].get()))
    for amount in (5, 11):
        site[0].depot("bank", "deposits").append(Deposit(3, amount))
        playwright_api.expect(page.locator("pre.json")).to_have_text(str(funds[3].get()))
    page.goto(page.url.split("#")[0] + "#/m/bank/pstate/funds?task=0")  # a map: its page is read again on a commit
    page.locator('#content[data-path="[]"][data-ready]').wait_for()
    playwright_api.expect(page.locator("#live")).to_have_attribute("data-state", "live")
    key = next(k for k in range(7_000, 8_000) if task_for_key(k, 2) == 0)
    site[0].depot("bank", "deposits").append(Deposit(key, 9))
    playwright_api.expect(page.locator("#content")).to_contain_text(str(key))
    page.goto(page.url.split("#")[0] + "#/m/bank")
    page.wait_for_function("() => document.querySelector('h1')?.textContent === 'bank'")
    page.wait_for_timeout(200)
    assert len(sockets) == 2 and all(s["closed"] for s in sockets) and all("/watch?" in s["url"] for s in sockets)


def test_pstate_browser_resyncs_after_an_update_and_stays_live(page, site):
    key = 4_321
    jobs = site[0].depot("jobs", "jobs")
    jobs.append(Job(key))
    page.goto(page.url.split("#")[0] + f"#/m/jobs/pstate/done?path=[{key}]")
    playwright_api.expect(page.locator("#live")).to_have_attribute("data-state", "live")
    playwright_api.expect(page.locator("pre.json")).to_have_text("1")
    site[0].update(jobs_module())  # the schemas may have changed: every watch starts again from its value
    page.locator('#content[data-resyncs="1"]').wait_for()
    jobs.append(Job(key))
    playwright_api.expect(page.locator("pre.json")).to_have_text("2")
    playwright_api.expect(page.locator("#live")).to_have_attribute("data-state", "live")


def test_pstate_browser_walks_keys_and_nested_values(page, site):
    page.goto(page.url.split("#")[0] + "#/m/registration/pstate/users?task=0")
    rows = page.locator("#content tbody tr")
    page.locator('#content[data-task="0"][data-ready]').wait_for()
    listed = rows.count()
    page.locator("#task").select_option("1")
    page.locator('#content[data-task="1"][data-ready]').wait_for()
    assert rows.count() + listed == 8
    playwright_api.expect(page.locator("#content")).to_contain_text("@example.com")
    rows.first.locator("a.key").click()
    playwright_api.expect(page.locator("#content")).to_contain_text("pwd_hash")
    page.locator("#content a.key", has_text="pwd_hash").click()
    playwright_api.expect(page.locator("pre.json")).to_contain_text('"hash')

    order_id = site[0].pstate("orders", "orders", task=0).keys() or site[0].pstate("orders", "orders", task=1).keys()
    page.goto(page.url.split("#")[0] + "#/m/orders/pstate/orders")
    page.locator("#goto-key").fill(str(order_id[0]))
    page.get_by_role("button", name="Open").click()
    playwright_api.expect(page.locator("#content")).to_contain_text("shipping")
    page.locator("#content a.key", has_text="items").click()
    page.locator('#content[data-path$=\'"items"]\'][data-ready]').wait_for()
    playwright_api.expect(page.locator("#content")).to_contain_text("2 entries")
    page.locator("#content a.key", has_text="0").first.click()
    playwright_api.expect(page.locator("pre.json")).to_contain_text("1999")


def test_pstate_browser_opens_on_the_task_holding_the_data_and_says_where_it_is(page, site):
    key = next(k for k in range(1_000, 2_000) if task_for_key(k, 2) == 1)
    site[0].depot("jobs", "jobs").append(Job(key, tag="only-on-task-1"))
    assert site[0].pstate("jobs", "tags", task=0).size() == 0 and site[0].pstate("jobs", "tags", task=1).keys() == [key]
    content = page.locator("#content")

    page.goto(page.url.split("#")[0] + "#/m/jobs/pstate/tags")
    page.locator('#content[data-task="1"][data-ready]').wait_for()  # not the empty task 0
    playwright_api.expect(content.locator("a.key")).to_have_text([str(key)])
    playwright_api.expect(page.locator("#task option")).to_have_text(["0 · empty", "1 · 1 entry"])
    playwright_api.expect(page.locator("#view")).to_contain_text("showing task 1 (1 entry on all tasks)")

    page.goto(page.url.split("#")[0] + "#/m/jobs/pstate/tags?task=0")
    page.locator('#content[data-task="0"][data-ready]').wait_for()
    playwright_api.expect(content).to_have_text("This map is empty on task 0; task 1 holds 1 entry.")
    content.locator("a.task-link").click()
    page.locator('#content[data-task="1"][data-ready]').wait_for()
    playwright_api.expect(content.locator("a.key")).to_have_text([str(key)])

    page.goto(page.url.split("#")[0] + "#/m/jobs/pstate/seen")  # nothing anywhere
    page.locator('#content[data-task="0"][data-ready]').wait_for()
    playwright_api.expect(content).to_have_text("This map is empty on all 2 tasks.")


def test_query_runner(page):
    page.goto(page.url.split("#")[0] + "#/m/registration/query/signups_on")
    page.locator('input[name="day"]').fill("2023-11-14")
    page.get_by_role("button", name="Run query").click()
    playwright_api.expect(page.locator("#query-result pre")).to_have_text("8")
    page.locator('input[name="day"]').fill("[1, 2]")
    page.get_by_role("button", name="Run query").click()
    playwright_api.expect(page.locator("#query-result .alert")).to_contain_text("schema_error")


def test_dead_letters_can_be_retried_from_the_topology_page(page, site):
    FIXED["jobs"] = False
    with pytest.raises(hw.HandlerError):
        site[0].depot("jobs", "jobs").append(Job(777, fail=True))
    page.goto(page.url.split("#")[0] + "#/m/jobs/topology/work")
    retry = page.get_by_role("button", name="Retry")
    playwright_api.expect(retry).to_have_count(1)
    playwright_api.expect(page.locator("#dead")).to_contain_text("ValueError")
    FIXED["jobs"] = True
    try:
        retry.click()
        playwright_api.expect(page.locator("#retry-result")).to_contain_text("retried")
        playwright_api.expect(page.locator("#dead")).to_contain_text("No dead letters")
    finally:
        FIXED["jobs"] = False


# In the page: append a score over HTTP, LIVE_LATENCY_ROUNDS times, each the new leader, and time
# from sending the request (and from its answer) to the first change of the board the watch makes.
MEASURE_LIVE_LATENCY = """async (rounds) => {
  const board = document.querySelector("#board");
  const times = [];
  for (let i = 0; i < rounds; i++) {
    const changed = new Promise((resolve) => {
      const observer = new MutationObserver(() => { observer.disconnect(); resolve(performance.now()); });
      observer.observe(board, { subtree: true, childList: true, characterData: true });
    });
    const sent = performance.now();
    const response = await fetch("/api/modules/leaderboard/depots/scores/append", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ player: `speedy-${i}`, points: 1000000 + i }),
    });
    const answered = performance.now();
    if (!response.ok) throw new Error(`append: HTTP ${response.status}`);
    const shown = await Promise.race([changed, new Promise((resolve) => setTimeout(() => resolve(null), 5000))]);
    if (shown === null) throw new Error(`round ${i}: the board did not change within 5 s`);
    times.push({ from_sent_ms: shown - sent, from_answer_ms: shown - answered });
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return times;
}"""


def test_the_leaderboard_page_shows_an_append_within_100_ms(make_run_page):
    page = make_run_page
    base = page.url.split("/ui/")[0]
    page.goto(base + "/examples/leaderboard/")
    playwright_api.expect(page.locator("#live")).to_have_attribute("data-state", "live")
    page.locator("#player").fill("ann")
    page.locator("#points").fill("7")
    page.get_by_role("button", name="Add score").click()  # the page's own form appends too
    playwright_api.expect(page.locator('#board li[data-player="ann"] .points')).to_have_text("7")
    times = page.evaluate(MEASURE_LIVE_LATENCY, LIVE_LATENCY_ROUNDS)
    from_sent = sorted(t["from_sent_ms"] for t in times)
    from_answer = sorted(t["from_answer_ms"] for t in times)
    median = from_sent[len(from_sent) // 2]
    print(f"\nleaderboard page, append sent -> board changed, ms: {[round(t, 1) for t in from_sent]} "
          f"(median {median:.1f}); append answered -> board changed, ms: {[round(t, 1) for t in from_answer]}")
    assert median < LIVE_LATENCY_MS_MAX, f"median {median:.1f} ms from an append to the page showing it"
    leader = f"speedy-{LIVE_LATENCY_ROUNDS - 1}"
    playwright_api.expect(page.locator("#board li").first).to_have_attribute("data-player", leader)


def test_module_page_shows_what_a_module_mirrors_and_what_mirrors_it(make_run_page):
    page = make_run_page
    page.locator(".nav-title", has_text="notifications").click()
    uses = page.locator("#dependencies")
    playwright_api.expect(uses.locator('[data-uses="accounts"]')).to_contain_text("opened")
    playwright_api.expect(uses.locator('[data-uses="accounts"]')).to_contain_text("accounts")
    playwright_api.expect(uses.locator('[data-uses="checkout"]')).to_contain_text("spent")
    uses.get_by_role("link", name="accounts", exact=True).first.click()
    playwright_api.expect(page.locator("h1")).to_have_text("accounts")
    playwright_api.expect(page.locator("#dependencies [data-used-by]")).to_have_text(["checkout", "notifications"])


def test_screenshot_for_the_docs_shows_what_make_run_serves(make_run_page, make_run_site, tmp_path):
    page = make_run_page
    names = sorted(m.name for m in load_modules(MAKE_RUN_APP))
    assert sorted(page.locator(".nav-title").evaluate_all("els => els.map(e => e.firstChild.textContent)")) == names
    deposits = make_run_site[0].depot("bank", "deposits")
    page.goto(page.url.split("#")[0] + "#/m/bank")
    for i in range(4):  # a little traffic, so the live charts have something to draw
        deposits.append_many([Deposit(100 + i * 10 + j, 5) for j in range(5)])
        page.wait_for_timeout(500)
    playwright_api.expect(page.locator('tr[data-topology="deposit"] [data-k="processed"]')).to_have_text("32")
    shot = tmp_path / "ui.png"
    shot.write_bytes(with_text(page.screenshot(), SCREENSHOT_KEYWORD, screenshot_source()))
    assert shot.stat().st_size > 10_000
    # docs/ui.png is refreshed on request only, so a test run leaves the work tree clean.
    if os.environ.get("HEADWATER_UPDATE_SCREENSHOT") or not SCREENSHOT.exists():
        shutil.copyfile(shot, SCREENSHOT)


def test_the_readme_screenshot_is_of_what_make_run_serves():
    assert "](docs/ui.png)" in (ROOT / "README.md").read_text()
    assert text_chunks(SCREENSHOT.read_bytes()).get(SCREENSHOT_KEYWORD) == screenshot_source(), (
        "docs/ui.png is not of what `make run` serves: refresh it with "
        "HEADWATER_UPDATE_SCREENSHOT=1 pytest tests/server/test_ui.py -k screenshot")


def screenshot_source() -> str:
    names = ", ".join(sorted(m.name for m in load_modules(MAKE_RUN_APP)))
    return f"headwater web UI serving examples/app.py (make run): modules {names}, {SERVE_TASKS_DEFAULT} tasks each"


def with_text(png: bytes, keyword: str, text: str) -> bytes:
    """`png` with a tEXt chunk after its header chunk (IHDR: 8 bytes of signature, then 25)."""
    data = keyword.encode("latin-1") + b"\0" + text.encode("latin-1")
    chunk = struct.pack(">I", len(data)) + b"tEXt" + data + struct.pack(">I", zlib.crc32(b"tEXt" + data))
    return png[:33] + chunk + png[33:]


def text_chunks(png: bytes) -> dict[str, str]:
    found, at = {}, 8
    while at + 8 <= len(png):
        length, kind = struct.unpack(">I4s", png[at:at + 8])
        if kind == b"tEXt":
            keyword, _, text = png[at + 8:at + 8 + length].partition(b"\0")
            found[keyword.decode("latin-1")] = text.decode("latin-1")
        at += 12 + length
    return found
