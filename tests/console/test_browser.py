"""The console in a real browser (Playwright driving Debian's chromium) against a worker with real
Kafka and Redis: log in (a wrong token refused), filter the queue, open a case, acknowledge it with
a note, assign it, approve a pending action and find its command on `order-actions`, resolve; the
queue refreshing itself with its filters; a viewer without buttons whose POST is refused; a form
without its CSRF token refused; keyboard and phone basics; times in the browser's time zone; and
no phone number or address line of the simulated orders in the HTML of any page visited.

Screenshots of the queue and of a case page are taken every run (into the test's directory);
with `ORDERWATCH_SCREENSHOTS=docs/images` (`make screenshots`) they replace the README's."""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, Page, async_playwright

from orderwatch.handlers.policy import BLOCKLIST_ACTIONS
from orderwatch.streams.settings import Settings
from tests.console.conftest import People
from tests.handlers.conftest import _require_redis, delete_prefix, redis_client
from tests.integration.conftest import _require_stack, kafka_settings
from tests.integration.kafka import publish_simulation, read_json
from tests.integration.test_api import _personal
from tests.support.progress import CasesLook, wait_for_worker
from tests.support.worker import free_port, spawn_worker, stop_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

__fixtures__ = (_require_redis, redis_client, _require_stack, kafka_settings)

CHROMIUM = os.environ.get("ORDERWATCH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OWNERS = '[owners]\ndefault_team = "ops"\n[owners.by_category]\npayment = "payments"\n'


@pytest.fixture(scope="module")
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs it with `make browser`")
        pytest.skip(f"{CHROMIUM} is missing; run `make browser` (Debian's chromium and chromium-driver)")
    return CHROMIUM


class Visits:
    """Every page's HTML as the browser rendered it, for the privacy scan."""

    def __init__(self) -> None:
        self.html: dict[str, str] = {}

    async def keep(self, page: Page) -> None:
        self.html[page.url] = await page.content()

    async def goto(self, page: Page, url: str) -> Any:
        response = await page.goto(url)
        await self.keep(page)
        return response


async def _person(browser: Browser) -> Page:
    """A page in a context of its own: each person has their own cookies, as on their own machine.
    New York's time zone, so that a time shown in UTC would be wrong."""
    context = await browser.new_context(
        viewport={"width": 1280, "height": 900}, timezone_id="America/New_York", locale="en-US"
    )
    context.set_default_timeout(30_000)
    return await context.new_page()


async def _login(browser: Browser, base: str, token: str, visits: Visits) -> Page:
    page = await _person(browser)
    await visits.goto(page, f"{base}/console/queue")
    assert "/console/login" in page.url
    await page.get_by_label("Access token").fill(token)
    await page.get_by_role("button", name="Log in").click()
    await page.wait_for_url(re.compile(r"/console/queue"))
    await visits.keep(page)
    return page


@pytest.mark.timeout(1500)  # a safety net: the wait for the cases goes on while they move
async def test_the_console_in_a_browser(
    tmp_path: Path,
    kafka_settings: Settings,
    redis_client: Any,
    chromium: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path, res = await publish_simulation(tmp_path, kafka_settings, orders=300, seed=3)
    expected = len({em.record.exception_id for em in res.emissions})
    personal, _ = _personal(path)
    assert len(personal) > 300

    people = People(tmp_path / "tokens.toml")
    monkeypatch.setenv("ORDERWATCH_TOKENS_FILE", str(people.path))  # spawn_worker passes the environment on
    config = tmp_path / "handlers.toml"
    config.write_text(OWNERS)
    redis_prefix = f"t{uuid.uuid4().hex}:"
    settings = kafka_settings.model_copy(
        update={"web_port": free_port(), "redis_prefix": redis_prefix, "handlers_config": str(config)}
    )
    base = f"http://127.0.0.1:{settings.web_port}"
    shots = [tmp_path]
    if os.environ.get("ORDERWATCH_SCREENSHOTS"):
        shots.append(Path(os.environ["ORDERWATCH_SCREENSHOTS"]))
    visits = Visits()
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        proc = spawn_worker(settings, "event", log, handlers=True)
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
                look = CasesLook(session, base, people.viewer, settings, expected)
                what = f"{expected} cases listed, none open"
                await wait_for_worker(look, proc, log_path, what=what, every=3)
            async with async_playwright() as pw:
                # Playwright gives the browser a fresh temporary profile (user-data-dir) per launch
                browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
                try:
                    await _operator_and_approver(browser, base, people, settings, visits, shots)
                    await _viewer_and_phone(browser, base, people, visits)
                finally:
                    await browser.close()
        finally:
            stop_worker(proc)
            await delete_prefix(redis_client, redis_prefix)

    assert len(visits.html) >= 10
    leaked = sorted(p for p in personal if any(p in html for html in visits.html.values()))
    assert leaked == [], f"{len(leaked)} phone numbers or address lines on console pages"
    text = log_path.read_text()
    for token in (people.viewer, people.operator, people.approver):
        assert token not in text


async def _operator_and_approver(
    browser: Browser, base: str, people: People, settings: Settings, visits: Visits, shots: list[Path]
) -> None:
    # -- a wrong token is refused ----------------------------------------------------------------
    page = await _person(browser)
    await visits.goto(page, f"{base}/console/queue")
    await page.get_by_label("Access token").fill("not-a-token-" + uuid.uuid4().hex)
    async with page.expect_response(re.compile(r"/console/login$")) as answer:
        await page.get_by_role("button", name="Log in").click()
    assert (await answer.value).status == 401
    await page.get_by_text("That token is not valid").wait_for()
    await visits.keep(page)
    await page.close()

    # -- the operator: filter the queue, open a case ---------------------------------------------
    ana = await _login(browser, base, people.operator, visits)
    # the default queue: what is not resolved yet, by deadline
    assert await ana.locator("table.cases tbody tr").count() >= 2
    assert "resolved" not in await ana.locator("table.cases tbody td:nth-child(4)").all_inner_texts()
    for target in shots:
        await ana.screenshot(path=str(target / "console-queue.png"), full_page=False)
    await ana.get_by_label("Status", exact=True).select_option("escalated")
    await ana.get_by_role("button", name="Apply").click()
    await ana.wait_for_url(re.compile(r"status=escalated"))
    await visits.keep(ana)
    rows = ana.locator("table.cases tbody tr")
    assert await rows.count() >= 2
    statuses = await rows.locator("td:nth-child(4)").all_inner_texts()
    assert all(s.startswith("escalated") for s in statuses), statuses
    assert await ana.locator(".clock.breached").count() >= 1  # replayed, long overdue in event time
    # times were rewritten into the browser's zone (New York), the UTC text kept as the title
    first_time = ana.locator("table.cases time[data-local]").first
    assert "UTC" not in await first_time.inner_text()
    assert (await first_time.get_attribute("title") or "").endswith("Z")

    # the queue refreshes itself and keeps its filters
    await ana.wait_for_function(
        "() => Number(document.getElementById('queue-results').dataset.refreshes || 0) >= 1", timeout=60_000
    )
    assert "status=escalated" in ana.url
    statuses = await ana.locator("table.cases tbody tr td:nth-child(4)").all_inner_texts()
    assert statuses and all(s.startswith("escalated") for s in statuses)

    await ana.locator("table.cases tbody tr").first.locator("td:nth-child(3) a").click()
    await ana.wait_for_url(re.compile(r"/console/cases/"))
    case_url = ana.url.split("?")[0]
    exception_id = case_url.rsplit("/", 1)[1]
    await visits.keep(ana)
    await ana.get_by_role("heading", name="What the rule means").wait_for()

    # -- acknowledge with a note, assign -------------------------------------------------------------
    await ana.get_by_label("Note (optional, saved in the history)").fill("calling the carrier now, ref 4471")
    await ana.get_by_role("button", name="Acknowledge").click()
    await ana.get_by_text("Case acknowledged.").wait_for()
    await visits.keep(ana)
    history = ana.locator("table.history tbody tr").last
    assert "ana" in await history.inner_text() and "escalated → acknowledged" in await history.inner_text()
    assert "calling the carrier now" in await history.inner_text()
    await ana.get_by_label("Owner", exact=True).fill("ana")
    await ana.get_by_label("Team", exact=True).fill("night-shift")
    await ana.get_by_role("button", name="Assign").click()
    await ana.get_by_text("Assignment saved.").wait_for()
    await visits.keep(ana)
    assert "assigned: team night-shift, owner ana" in await ana.locator("table.history tbody tr").last.inner_text()
    for target in shots:
        await ana.screenshot(path=str(target / "console-case.png"), full_page=True)

    # -- a form posted without its CSRF token is refused ----------------------------------------
    answer = await ana.request.post(f"{case_url}/resolve", form={"note": "forged"}, max_redirects=0)
    assert answer.status == 403 and "CSRF" in await answer.text()
    await visits.goto(ana, case_url)
    status_text = await ana.locator("dl.facts > div").first.locator("dd").inner_text()
    assert status_text.startswith("acknowledged"), status_text  # the forged resolve moved nothing

    # -- the order and the incidents ---------------------------------------------------------------
    await ana.get_by_role("link", name="Queue", exact=True).click()
    await ana.locator("table.cases a[href^='/console/orders/']").first.click()
    await ana.get_by_role("heading", name="Timeline").wait_for()
    await visits.keep(ana)
    assert await ana.locator("ol.timeline li").count() >= 2
    assert await ana.locator("ol.timeline").get_by_text("detector").count() >= 1  # this worker owns every partition
    await ana.get_by_role("link", name="Incidents").click()
    await ana.get_by_role("heading", name="Incidents").wait_for()
    await visits.keep(ana)

    # -- the approver approves a pending action in place ------------------------------------------
    lee = await _login(browser, base, people.approver, visits)
    await lee.get_by_role("link", name="Approvals").click()
    await lee.get_by_role("heading", name="Approvals").wait_for()
    await visits.keep(lee)
    rows = lee.locator("table tbody tr")
    chosen = None
    for i in range(await rows.count()):
        code = (await rows.nth(i).locator("td:nth-child(2)").inner_text()).strip()
        if code not in BLOCKLIST_ACTIONS.values():  # those go to `blocklist`, not `order-actions`
            chosen = i
            break
    assert chosen is not None, "the default policy leaves order actions for approval"
    row = rows.nth(chosen)
    action = (await row.locator("td:nth-child(2)").inner_text()).strip()
    href = await row.locator("td:nth-child(4) a").get_attribute("href")
    assert href
    approved_case = href.rsplit("/", 1)[1]
    await row.get_by_role("button", name="Approve").click()
    await lee.get_by_text("Action approved and its command sent.").wait_for()
    await visits.keep(lee)
    commands = await read_json(settings, settings.topic("order-actions"))
    sent = [c for c in commands if c["id"] == f"{approved_case}:{action}"]
    assert len(sent) == 1, [c["id"] for c in commands]
    assert (sent[0]["data"]["mode"], sent[0]["data"]["approved_by"]) == ("approved", "lee")
    await visits.goto(lee, f"{base}/console/cases/{approved_case}")
    assert "action approved" in await lee.locator("table.history").inner_text()
    # an approver sees no case buttons
    assert await lee.get_by_role("button", name="Acknowledge").count() == 0

    # -- the operator resolves ----------------------------------------------------------------------
    await visits.goto(ana, case_url)
    await ana.get_by_label("Note (optional, saved in the history)").fill("carrier confirmed delivery")
    await ana.get_by_role("button", name="Resolve").click()
    await ana.get_by_text("Case resolved.").wait_for()
    await visits.keep(ana)
    assert "acknowledged → resolved" in await ana.locator("table.history tbody tr").last.inner_text()
    assert exception_id in ana.url
    await ana.get_by_role("button", name="Log out").click()
    await ana.wait_for_url(re.compile(r"/console/login"))
    await visits.keep(ana)
    await lee.close()
    await ana.close()


async def _viewer_and_phone(browser: Browser, base: str, people: People, visits: Visits) -> None:
    vic = await _login(browser, base, people.viewer, visits)
    await vic.locator("table.cases tbody tr").first.locator("td:nth-child(3) a").click()
    await vic.wait_for_url(re.compile(r"/console/cases/"))
    await visits.keep(vic)
    case_url = vic.url.split("?")[0]
    for name in ("Acknowledge", "Resolve", "Assign", "Approve"):
        assert await vic.get_by_role("button", name=re.compile(name)).count() == 0, name
    csrf = await vic.locator("form.who input[name=csrf]").get_attribute("value")
    assert csrf
    for verb, form in (("acknowledge", {"note": "x"}), ("assign", {"owner": "vic"})):
        answer = await vic.request.post(f"{case_url}/{verb}", form={**form, "csrf": csrf}, max_redirects=0)
        assert answer.status == 403, verb
        assert "operator role" in await answer.text()
    await visits.goto(vic, case_url)
    assert "vic" not in await vic.locator("table.history").inner_text()

    # keyboard: the first Tab reaches the skip link, which moves focus to the content
    await visits.goto(vic, f"{base}/console/queue")
    await vic.keyboard.press("Tab")
    assert await vic.evaluate("document.activeElement.className") == "skip"
    await vic.keyboard.press("Enter")
    assert await vic.evaluate("document.activeElement.id") == "main"
    # every form field has a label
    unlabeled = await vic.evaluate(
        """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
              .filter(el => !(el.labels && el.labels.length)).map(el => el.name)"""
    )
    assert unlabeled == []

    # a phone: nothing wider than the screen
    await vic.set_viewport_size({"width": 390, "height": 844})
    for url in (f"{base}/console/queue", case_url):
        await visits.goto(vic, url)
        overflow = await vic.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        wide = await vic.evaluate(
            """() => [...document.querySelectorAll('body *')]
                  .filter(el => el.getBoundingClientRect().right > window.innerWidth + 1)
                  .slice(0, 5).map(el => el.tagName + '.' + el.className)"""
        )
        assert overflow <= 1, (url, overflow, wide)
    await vic.close()
