"""The board and an order in German and Berlin time, at a laptop's and a phone's width, and the
board refreshing itself, in headless Chromium.

Screenshots go to ``test-artifacts/screenshots/locale-*.png``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.wait import WebDriverWait

from tests.browser import chromium
from tests.browser.site import READ_TOKEN, SHOWN, WRITE_TOKEN, Site
from tests.outbox import poll
from tests.support import ok
from tracker.web.refresh import REFRESH_SECONDS

WIDE = (1400, 900)
GERMAN = "de-DE,de;q=0.9,en;q=0.5"
#: A time shown in Berlin: CET in winter, CEST in summer, whenever the test runs.
BERLIN_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d CES?T")
#: A seeded order that has waited twelve days; the refresh test moves it on.
MOVED = "prdo_g8pm2dv5tx1q7cn4wz0hk3rb"
#: Seconds the refresh may take to show: only ends a hang (the script fetches every 30 s).
REFRESH_LIMIT = REFRESH_SECONDS * 4


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The seeded tracker's pages, their times in Europe/Berlin."""
    served = Site(tmp_path_factory.mktemp("site"), timezone="Europe/Berlin").start()
    try:
        yield served
    finally:
        served.stop()


@pytest.fixture
def german(browser: WebDriver) -> Iterator[WebDriver]:
    """The browser asking for German (``Accept-Language``), as a German desktop does."""
    agent = str(browser.execute_script("return navigator.userAgent"))
    browser.execute_cdp_cmd(
        "Emulation.setUserAgentOverride", {"userAgent": agent, "acceptLanguage": GERMAN}
    )
    try:
        yield browser
    finally:
        browser.execute_cdp_cmd(
            "Emulation.setUserAgentOverride", {"userAgent": agent, "acceptLanguage": "en-US"}
        )
        chromium.viewport(browser, chromium.LAPTOP)


def shot(driver: WebDriver, name: str) -> Path:
    """A full-page screenshot ``locale-<name>.png``."""
    return chromium.shot(driver, f"locale-{name}")


def assert_german_in_berlin(driver: WebDriver) -> None:
    """The page is German, its times Berlin's, the zone named."""
    assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "de"
    nav = driver.find_element(By.CSS_SELECTOR, "header nav").text
    assert "Übersicht" in nav
    assert "Suche" in nav
    footer = driver.find_element(By.TAG_NAME, "footer").text
    assert "Alle Zeiten in Europe/Berlin" in footer
    assert BERLIN_TIME.search(driver.find_element(By.TAG_NAME, "main").text)


class TestGermanPages:
    """A German browser reads the board and an order in German, with Berlin times."""

    @pytest.mark.parametrize("size", [WIDE, chromium.PHONE], ids=["1400", "390"])
    def test_board(self, german: WebDriver, site: Site, size: tuple[int, int]) -> None:
        """The board in German at both widths, no wider than the screen, its times in Berlin."""
        chromium.viewport(german, size, mobile=size == chromium.PHONE)
        chromium.log_in(german, site.url, READ_TOKEN)
        assert_german_in_berlin(german)
        fresh = german.find_element(By.ID, "freshness").text
        assert re.fullmatch(r"Vor \d+ s aktualisiert; aktualisiert sich alle 30 s\.", fresh)
        main = german.find_element(By.TAG_NAME, "main").text
        assert "Einbau terminiert" in main
        assert "Wo die aktiven Aufträge stehen" in main
        assert "Letzte Statuswechsel" in main
        assert "Where the active orders stand" not in main
        width = german.execute_script("return document.documentElement.scrollWidth")
        assert width <= size[0]
        shot(german, f"board-{size[0]}")

    @pytest.mark.parametrize("size", [WIDE, chromium.PHONE], ids=["1400", "390"])
    def test_order(self, german: WebDriver, site: Site, size: tuple[int, int]) -> None:
        """An order in German at both widths, its customer id whole on one line."""
        chromium.viewport(german, size, mobile=size == chromium.PHONE)
        chromium.log_in(german, site.url, READ_TOKEN, path=f"/orders/{SHOWN}")
        assert_german_in_berlin(german)
        main = german.find_element(By.TAG_NAME, "main").text
        assert "Einbau in Planung" in main
        journey = german.find_element(By.CSS_SELECTOR, "section.journey").text
        assert "Verweildauer in jedem Status" in journey
        assert "bisher" in journey
        assert "so far" not in main
        assert "Zeitleiste" in main
        width = german.execute_script("return document.documentElement.scrollWidth")
        assert width <= size[0]
        shot(german, f"order-{size[0]}")

    def test_search_cards_and_retry_at_phone_width(self, german: WebDriver, site: Site) -> None:
        """At 390 px the search lists cards with labelled values, and Retry is in view."""
        chromium.viewport(german, chromium.PHONE, mobile=True)
        chromium.log_in(german, site.url, READ_TOKEN, path="/orders")
        rows = german.find_elements(By.CSS_SELECTOR, ".cards tbody tr")
        assert rows
        first = rows[0].rect
        assert first["width"] <= chromium.PHONE[0]
        assert german.execute_script("return document.documentElement.scrollWidth") <= 390
        label = german.execute_script(
            "return getComputedStyle(arguments[0], '::before').content",
            rows[0].find_element(By.TAG_NAME, "td"),
        )
        assert label == '"Auftrag"'
        shot(german, "search-390")
        chromium.log_in(german, site.url, WRITE_TOKEN, path="/dead-letters")
        buttons = german.find_elements(By.CSS_SELECTOR, "td form button")
        assert buttons
        box = buttons[0].rect
        assert box["x"] >= 0
        assert box["x"] + box["width"] <= chromium.PHONE[0]
        shot(german, "dead-letters-390")


class TestRefresh:
    """The board refreshes itself when a transition is recorded, without a reload."""

    def test_a_new_transition_appears(self, laptop: WebDriver, site: Site) -> None:
        """After a new transition the board's latest list shows it; the page was not reloaded
        (a mark set on the window survives) and the freshness line counts from the swap."""
        chromium.viewport(laptop, WIDE)
        chromium.log_in(laptop, site.url, READ_TOKEN)
        latest = laptop.find_element(By.ID, "latest").find_element(By.XPATH, "..")
        assert MOVED not in latest.text
        laptop.execute_script("window.notReloaded = true")
        assert site.scripted is not None
        assert site.service is not None
        site.scripted.script(MOVED, ok("ordered"))
        site.run(poll(site.service, MOVED))
        WebDriverWait(laptop, REFRESH_LIMIT).until(
            lambda d: MOVED in d.find_element(By.ID, "latest").find_element(By.XPATH, "..").text
        )
        assert laptop.execute_script("return window.notReloaded") is True
        fresh = laptop.find_element(By.ID, "freshness").text
        assert re.fullmatch(r"Updated \d+ s ago; refreshes every 30 s\.", fresh)
        shot(laptop, "board-refreshed-1400")
