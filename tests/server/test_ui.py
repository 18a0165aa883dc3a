"""The web UI in a real browser (Debian's chromium driven by Playwright): click through the examples.

Skips with the reason when Playwright or /usr/bin/chromium is missing (`make test` installs
chromium with apt-get first). `HEADWATER_UPDATE_SCREENSHOT=1` refreshes docs/ui.png.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import headwater as hw
from examples.bank import Deposit, Transfer
from examples.orders import Address, LineItem, NewOrder
from examples.registration import UserSignUp
from tests.server.support import FIXED, Job, deploy, served

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT = Path(__file__).parents[2] / "docs" / "ui.png"
WAIT_MS = 10_000

playwright_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")
if not shutil.which(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is missing: install it with `apt-get install -y chromium` (make test does)",
                allow_module_level=True)


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
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any, site: Any) -> Iterator[Any]:
    page = browser.new_page(viewport={"width": 1360, "height": 860})
    page.set_default_timeout(WAIT_MS)
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.goto(site[1] + "/ui/")
    page.get_by_text("live · 4 modules").wait_for()
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


def test_pstate_browser_walks_keys_and_nested_values(page, site):
    page.goto(page.url.split("#")[0] + "#/m/registration/pstate/users")
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


def test_screenshot_for_the_docs(page, site, tmp_path):
    deposits = site[0].depot("bank", "deposits")
    page.goto(page.url.split("#")[0] + "#/m/bank")
    for i in range(4):  # a little traffic, so the live charts have something to draw
        deposits.append_many([Deposit(100 + i * 10 + j, 5) for j in range(5)])
        page.wait_for_timeout(500)
    playwright_api.expect(page.locator('tr[data-topology="deposit"] [data-k="processed"]')).to_have_text("33")
    shot = tmp_path / "ui.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    # docs/ui.png is refreshed on request only, so a test run leaves the work tree clean.
    if os.environ.get("HEADWATER_UPDATE_SCREENSHOT") or not SCREENSHOT.exists():
        shutil.copyfile(shot, SCREENSHOT)
