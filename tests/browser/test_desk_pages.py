"""The support desk as a person uses it, in headless Chromium at 1400 and 390 px: what changed
(from the board), a bulk retry of one sink's dead letters after its confirmation, watching
pasted ids with one bad line, and a CSV upload.

Screenshots go to ``test-artifacts/screenshots/desk-*.png``.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait

from tests.browser import chromium
from tests.browser.site import WRITE_TOKEN, Site
from tracker.clock import utc_now

#: The sink of the seeded site that is down: its deliveries are dead letters.
DOWN = "legacy-erp"
#: The phone first: it only cancels the retry that the laptop then confirms.
WIDTHS = {"390": (chromium.PHONE, True), "1400": ((1400, 900), False)}


def shot(driver: WebDriver, name: str) -> Path:
    """A full-page screenshot ``desk-<name>.png``."""
    return chromium.shot(driver, f"desk-{name}")


def fits(driver: WebDriver, width: int) -> None:
    """Nothing on the page is wider than the screen."""
    assert driver.execute_script("return document.documentElement.scrollWidth") <= width


def submit(driver: WebDriver, css: str) -> None:
    """Click the button ``css`` and wait until the page it leads to has replaced this one."""
    page = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.CSS_SELECTOR, css).click()
    WebDriverWait(driver, chromium.WAIT).until(chromium.replaced(page))


def at(driver: WebDriver, site: Site, width: str) -> None:
    """Log in as the write user at ``width`` px."""
    size, mobile = WIDTHS[width]
    chromium.viewport(driver, size, mobile=mobile)
    chromium.log_in(driver, site.url, WRITE_TOKEN)


@pytest.mark.parametrize("width", list(WIDTHS))
class TestDesk:
    """A support engineer's flows over the seeded site, at a laptop's and a phone's width."""

    def test_changes(self, browser: WebDriver, site: Site, width: str) -> None:
        """The board's link opens today's changes; a range lists the seeded transitions,
        latest first, each row leading to its order."""
        at(browser, site, width)
        submit(browser, "#changes-today")
        assert browser.current_url == f"{site.url}/changes"
        assert browser.find_element(By.TAG_NAME, "h1").text == "Changes"
        assert browser.find_element(By.CSS_SELECTOR, "a[rel=prev]").text == "← Previous day"
        since = (utc_now() - timedelta(days=14)).date().isoformat()
        browser.get(f"{site.url}/changes?since={since}")
        rows = browser.find_elements(By.CSS_SELECTOR, "#changes tbody tr")
        assert len(rows) > 5
        times = [str(r.find_element(By.TAG_NAME, "time").get_attribute("datetime")) for r in rows]
        assert times == sorted(times, reverse=True)
        fits(browser, WIDTHS[width][0][0])
        shot(browser, f"changes-{width}")
        order = rows[0].get_attribute("data-order")
        submit(browser, f'#changes tr[data-order="{order}"] td:nth-child(2) a')
        assert browser.current_url == f"{site.url}/orders/{order}"

    def test_bulk_retry_of_one_sink(self, browser: WebDriver, site: Site, width: str) -> None:
        """The sink's retry asks first, naming how many; at 1400 px it is confirmed and the
        list says how many were queued, at 390 px it is cancelled."""
        at(browser, site, width)
        browser.get(f"{site.url}/dead-letters")
        kinds = {td.text for td in browser.find_elements(By.CSS_SELECTOR, "tbody td.nowrap")}
        assert "transition" in kinds
        fits(browser, WIDTHS[width][0][0])
        shot(browser, f"dead-letters-{width}")
        Select(browser.find_element(By.ID, "bulk-sink")).select_by_value(DOWN)
        submit(browser, "#bulk-sink ~ button")
        count = int(browser.find_element(By.ID, "retry-count").text)
        assert count > 0
        assert DOWN in browser.find_element(By.CSS_SELECTOR, "main .lead").text
        shot(browser, f"retry-confirm-{width}")
        if width == "390":
            submit(browser, "form.confirm a")
            assert browser.current_url == f"{site.url}/dead-letters"
            return
        submit(browser, "form.confirm button")
        notice = browser.find_element(By.CSS_SELECTOR, ".notice").text
        assert notice.startswith(f"Queued {count} dead letter")
        assert f"to sink {DOWN}" in notice
        shot(browser, f"retried-{width}")

    def test_paste_and_upload(
        self, browser: WebDriver, site: Site, width: str, tmp_path: Path
    ) -> None:
        """Pasted ids with one bad line: the good ones watched, the bad line named by number;
        then a CSV file with a header and other columns."""
        at(browser, site, width)
        browser.get(f"{site.url}/watch")
        letter = "p" if width == "390" else "l"
        fresh = [f"prdo_desk{letter}{n}{'x' * 16}" for n in range(3)]
        browser.find_element(By.ID, "ids").send_keys(f"{fresh[0]}\n{fresh[1]}\nprdo_BAD id\n")
        submit(browser, "#paste button")
        result = browser.find_element(By.ID, "watch-result").text
        assert "Watching 2 new order(s); 0 already watched." in result
        refused = browser.find_elements(By.CSS_SELECTOR, "#refused tbody tr")
        assert [r.find_element(By.TAG_NAME, "td").text for r in refused] == ["3"]
        fits(browser, WIDTHS[width][0][0])
        shot(browser, f"watch-paste-{width}")
        csv = tmp_path / "orders.csv"
        csv.write_text(f"customer,id\ncus_1,{fresh[1]}\ncus_2,{fresh[2]}\n", encoding="utf-8")
        browser.find_element(By.ID, "file").send_keys(str(csv))
        submit(browser, "#upload button")
        result = browser.find_element(By.ID, "watch-result").text
        assert "Watching 1 new order(s); 1 already watched." in result
        shot(browser, f"watch-upload-{width}")
        browser.get(f"{site.url}/orders/{fresh[2]}")
        assert browser.find_element(By.CSS_SELECTOR, ".watch-controls button").text == "Unwatch"
