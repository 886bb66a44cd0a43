"""The stuck orders as a person sees them: the board's panel and ``/stuck`` in headless Chromium.

Screenshots go to ``test-artifacts/screenshots/stuck-*.png``.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from tests.browser import chromium
from tests.browser.site import READ_TOKEN, SHOWN, Site
from tracker import alerts
from tracker.clock import utc_now
from tracker.service import Service

#: ``[alerts.stuck]`` for the seeded orders: three of them stay longer than this.
THRESHOLDS = {
    "installation_scheduled": timedelta(days=1),
    "waiting": timedelta(days=7),
    "blocked_wim": timedelta(days=2),
}
#: The seeded orders past their status's threshold, and the status each is in.
STUCK = {
    "prdo_h3qz6wk0mb9t2xv5pn8cd1sg": "installation_scheduled",
    "prdo_g8pm2dv5tx1q7cn4wz0hk3rb": "waiting",
    "prdo_c5nv8ye2ha0t6kq3wz1rm7bx": "blocked_wim",
}


async def report_stuck(service: Service) -> None:
    """Report, as the daemon's stuck check does, the stays past :data:`THRESHOLDS` now."""
    store = service.store
    now = utc_now()
    stays = await store.events.stuck(THRESHOLDS, now=now, limit=100)
    made = [
        (s, alerts.stuck(order_id=s.order_id, status=s.status, since=s.since,
                         threshold=THRESHOLDS[s.status], now=now, routes={}))
        for s in stays
    ]  # fmt: skip
    await store.events.report_stuck(made)


@pytest.fixture(scope="module")
def stuck_site(site: Site) -> Site:
    """The seeded site with its stuck stays reported."""
    assert site.service is not None
    site.run(report_stuck(site.service))
    return site


class TestStuckOrders:
    """A support engineer finds the stuck orders from the board in one click."""

    def test_board_panel_leads_to_the_page(self, laptop: WebDriver, stuck_site: Site) -> None:
        """The board's panel counts the stuck orders; its link opens /stuck, which lists each
        with its status, since when and for how long, the longest stay first."""
        chromium.viewport(laptop, (1400, 900))
        chromium.log_in(laptop, stuck_site.url, READ_TOKEN)
        panel = laptop.find_element(By.ID, "stuck")
        assert panel.find_element(By.CSS_SELECTOR, ".badge").text == str(len(STUCK))
        for order_id in STUCK:
            assert order_id in panel.text
        assert SHOWN not in panel.text  # scheduled an hour ago: not stuck
        chromium.shot(laptop, "stuck-board-1400")
        panel.find_element(By.CSS_SELECTOR, "h2 a").click()
        WebDriverWait(laptop, chromium.WAIT).until(
            expected_conditions.url_to_be(f"{stuck_site.url}/stuck")
        )
        rows = laptop.find_elements(By.CSS_SELECTOR, "#stuck-orders tbody tr")
        listed = {
            row.get_attribute("data-order"): row.find_elements(By.TAG_NAME, "td")[1].text
            for row in rows
        }
        assert listed == STUCK
        assert rows[-1].get_attribute("data-order") == "prdo_c5nv8ye2ha0t6kq3wz1rm7bx"
        lasting = rows[0].find_elements(By.TAG_NAME, "td")[3].text
        assert lasting.startswith("12d")
        chromium.shot(laptop, "stuck-1400")

    def test_phone_width(self, browser: WebDriver, stuck_site: Site) -> None:
        """At a phone's width the page is no wider than the screen and every id shows whole."""
        chromium.viewport(browser, chromium.PHONE, mobile=True)
        try:
            chromium.log_in(browser, stuck_site.url, READ_TOKEN, path="/stuck")
            width = browser.execute_script("return document.documentElement.scrollWidth")
            assert width <= chromium.PHONE[0]
            links = browser.find_elements(By.CSS_SELECTOR, "#stuck-orders tbody td:first-child a")
            assert sorted(str(link.get_attribute("textContent")) for link in links) == sorted(STUCK)
            chromium.shot(browser, "stuck-390")
        finally:
            chromium.viewport(browser, chromium.LAPTOP)
