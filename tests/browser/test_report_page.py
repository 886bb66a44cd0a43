"""The report page in headless Chromium at 1400 and 390 px, over the seeded tracker.

Screenshots go to ``test-artifacts/screenshots/reports-1400.png`` and ``reports-390.png``.
"""

from __future__ import annotations

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.browser import chromium
from tests.browser.site import READ_TOKEN, Site
from tests.support import ROOT

SHOTS = ROOT / "test-artifacts" / "screenshots"
WIDE = (1400, 900)


class TestReportPage:
    """The report page draws its charts as inline SVG beside their tables, on both widths."""

    def test_wide(self, browser: WebDriver, site: Site) -> None:
        """At 1400 px: four charts drawn (no SLA targets configured), each with a table and a
        CSV link, the flow arrows carrying counts, and no script on the page."""
        chromium.viewport(browser, WIDE)
        chromium.log_in(browser, site.url, READ_TOKEN, "/reports")
        assert browser.current_url.startswith(f"{site.url}/reports")
        charts = browser.find_elements(By.CSS_SELECTOR, "svg[data-chart]")
        assert [c.get_attribute("data-chart") for c in charts] == [
            "durations",
            "lead-time",
            "weekly",
            "flow",
        ]
        for chart in charts:
            assert chart.size["width"] > 300
            assert chart.size["height"] > 100
        durations = browser.find_elements(By.CSS_SELECTOR, "table[data-table=durations] tbody tr")
        assert len(durations) >= 1
        counts = [
            int(g.get_attribute("data-count") or 0)
            for g in browser.find_elements(By.CSS_SELECTOR, "svg[data-chart=flow] g[data-count]")
        ]
        assert counts
        assert all(n > 0 for n in counts)
        links = [a.get_attribute("href") or "" for a in browser.find_elements(By.LINK_TEXT, "CSV")]
        assert len(links) == 4
        assert browser.find_elements(By.TAG_NAME, "script") == []
        # Chart beside table on a wide screen.
        figure = browser.find_element(By.CSS_SELECTOR, "#durations figure")
        table = browser.find_element(By.CSS_SELECTOR, "#durations table")
        assert table.location["x"] > figure.location["x"] + figure.size["width"] - 1
        path = chromium.screenshot(browser, SHOTS / "reports-1400.png", full=True)
        assert path.stat().st_size > 5000

    def test_phone(self, browser: WebDriver, site: Site) -> None:
        """At 390 px: nothing wider than the screen, the table below its chart."""
        chromium.viewport(browser, chromium.PHONE, mobile=True)
        chromium.log_in(browser, site.url, READ_TOKEN, "/reports")
        width = browser.execute_script("return document.documentElement.scrollWidth")
        assert width <= chromium.PHONE[0]
        figure = browser.find_element(By.CSS_SELECTOR, "#durations figure")
        table = browser.find_element(By.CSS_SELECTOR, "#durations table")
        assert table.location["y"] >= figure.location["y"] + figure.size["height"]
        path = chromium.screenshot(browser, SHOTS / "reports-390.png", full=True)
        assert path.stat().st_size > 5000
