"""The order page's journey as a person sees it in headless Chromium, at 1400 and 390 px.

Screenshots go to ``test-artifacts/screenshots/journey-*.png``.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.browser import chromium
from tests.browser.site import READ_TOKEN, SHOWN, Site
from tracker import alerts
from tracker.clock import utc_now
from tracker.service import Service

WIDE = (1400, 900)
#: The seeded order that took a detour: checked (seen first), then blocked_wim 5.5 days ago.
DETOUR = "prdo_c5nv8ye2ha0t6kq3wz1rm7bx"


async def report_stuck(service: Service) -> None:
    """DETOUR's stay in blocked_wim reported stuck (over two days), as the daemon does."""
    thresholds = {"blocked_wim": timedelta(days=2)}
    now = utc_now()
    stays = await service.store.events.stuck(thresholds, now=now, limit=10)
    made = [
        (s, alerts.stuck(order_id=s.order_id, status=s.status, since=s.since,
                         threshold=thresholds[s.status], now=now, routes={}))
        for s in stays
    ]  # fmt: skip
    await service.store.events.report_stuck(made)


@pytest.fixture(scope="module")
def journey_site(site: Site) -> Site:
    """The seeded site with DETOUR's stay reported stuck."""
    assert site.service is not None
    site.run(report_stuck(site.service))
    return site


def steps(driver: WebDriver, selector: str) -> dict[str, str]:
    """Each step's status and the text a person reads in it."""
    return {
        str(e.get_attribute("data-status")): e.text
        for e in driver.find_elements(By.CSS_SELECTOR, selector)
    }


class TestJourney:
    """A support engineer sees where an order stands and how long each step took."""

    def test_wide(self, browser: WebDriver, journey_site: Site) -> None:
        """At 1400 px the main path is one row of ten: the steps passed with their times, the
        current one ringed with its time so far, what came before watching unknown, and a
        changed field in the timeline."""
        chromium.viewport(browser, WIDE)
        try:
            chromium.log_in(browser, journey_site.url, READ_TOKEN, path=f"/orders/{SHOWN}")
            main = steps(browser, "ol.path .jstep")
            assert list(main)[:3] == ["intended", "waiting", "ordered"]
            assert len(main) == 10
            tops = browser.execute_script(
                "return new Set([...document.querySelectorAll('ol.path .jstep')]"
                ".map(e => e.offsetTop)).size"
            )
            assert tops == 1  # one row
            assert "before watching" in main["intended"]
            assert "unknown" in main["waiting"]  # seen first in waiting: its start is unknown
            assert "3d 9h" in main["ordered"]  # 9.6 → 6.2 days ago
            assert "2d 2h" in main["checked"]  # 6.2 → 4.1 days ago
            assert "4d 2h" in main["installation_planning"]  # 4.1 → 0.01 days ago
            current = browser.find_element(By.CSS_SELECTOR, "ol.path [aria-current='step']")
            assert current.get_attribute("data-status") == "installation_scheduled"
            assert "current" in current.text
            assert "so far" in current.text
            assert "not reached" in main["activated"]
            assert (
                "None: the order kept to the main path."
                in browser.find_element(By.CSS_SELECTOR, ".journey").text
            )
            changes = browser.find_elements(By.CSS_SELECTOR, "table.changes tbody tr")
            updated = [row.text for row in changes if row.text.startswith("updated_at")]
            assert updated[0] == 'updated_at changed "2024-03-14T12:00:00Z" "2026-11-27T09:12:00Z"'
            chromium.shot(browser, "journey-1400")
            browser.get(f"{journey_site.url}/orders/{DETOUR}")
            detours = steps(browser, "ul.path .jstep")
            assert list(detours) == ["blocked_wim"]
            assert "current" in detours["blocked_wim"]
            assert "5d 12h so far" in detours["blocked_wim"]
            alert = browser.find_element(By.CSS_SELECTOR, ".timeline li.alert")
            assert "ALERT" in alert.text
            assert "Stuck" in alert.text
            assert "stuck in blocked_wim since" in alert.text
            chromium.shot(browser, "journey-detour-1400")
        finally:
            chromium.viewport(browser, chromium.LAPTOP)

    def test_phone(self, browser: WebDriver, journey_site: Site) -> None:
        """At 390 px the path runs down the page, one step a line, nothing wider than the
        screen, and the detour and the alert still show."""
        chromium.viewport(browser, chromium.PHONE, mobile=True)
        try:
            chromium.log_in(browser, journey_site.url, READ_TOKEN, path=f"/orders/{SHOWN}")
            width = browser.execute_script("return document.documentElement.scrollWidth")
            assert width <= chromium.PHONE[0]
            tops = browser.execute_script(
                "return new Set([...document.querySelectorAll('ol.path .jstep')]"
                ".map(e => e.offsetTop)).size"
            )
            assert tops == 10  # one step a line
            main = steps(browser, "ol.path .jstep")
            assert "3d 9h" in main["ordered"]
            assert "so far" in main["installation_scheduled"]
            chromium.shot(browser, "journey-390")
            browser.get(f"{journey_site.url}/orders/{DETOUR}")
            width = browser.execute_script("return document.documentElement.scrollWidth")
            assert width <= chromium.PHONE[0]
            assert "5d 12h so far" in steps(browser, "ul.path .jstep")["blocked_wim"]
            assert "Stuck" in browser.find_element(By.CSS_SELECTOR, ".timeline li.alert").text
            chromium.shot(browser, "journey-detour-390")
        finally:
            chromium.viewport(browser, chromium.LAPTOP)


class TestBoardStrip:
    """The board's strip: the main path in order on one row at 1400 px, detours apart."""

    def test_board_strip(self, browser: WebDriver, journey_site: Site) -> None:
        """At 1400 px the ten main-path steps share one row; at 390 px they are two a row and
        the page is no wider than the screen."""
        chromium.viewport(browser, WIDE)
        try:
            chromium.log_in(browser, journey_site.url, READ_TOKEN)
            rows = (
                "return new Set([...document.querySelectorAll('ol.strip .step')]"
                ".map(e => e.offsetTop)).size"
            )
            assert browser.execute_script(rows) == 1
            detours = browser.find_elements(By.CSS_SELECTOR, ".detour-box .step .name")
            names = [d.text for d in detours]
            assert names == ["blocked", "blocked wim", "pre installed", "cancelled"]
            chromium.shot(browser, "journey-board-1400")
            chromium.viewport(browser, chromium.PHONE, mobile=True)
            browser.refresh()
            assert browser.execute_script(rows) == 5
            width = browser.execute_script("return document.documentElement.scrollWidth")
            assert width <= chromium.PHONE[0]
            chromium.shot(browser, "journey-board-390")
        finally:
            chromium.viewport(browser, chromium.LAPTOP)
