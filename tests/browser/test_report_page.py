"""The report page in headless Chromium at 1400 and 390 px, over the seeded tracker.

Screenshots go to ``test-artifacts/screenshots/reports-1400.png`` and ``reports-390.png``.
"""

from __future__ import annotations

import itertools

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.browser import chromium
from tests.browser.site import READ_TOKEN, Site
from tests.support import ROOT

SHOTS = ROOT / "test-artifacts" / "screenshots"
WIDE = (1400, 900)
#: For each flow arrow, the points along its path (SVG units) that lie inside a box, and the
#: boxes its count's label overlaps; then the pairs of labels that overlap each other.
FLOW_CLASHES = """
const svg = document.querySelector('svg[data-chart=flow]');
const boxes = [...svg.querySelectorAll('g[data-status] rect')].map(r => r.getBBox());
const inside = (x, y, b) => x > b.x + 0.5 && x < b.x + b.width - 0.5
  && y > b.y + 0.5 && y < b.y + b.height - 0.5;
const meet = (a, b) => a.x < b.x + b.width && b.x < a.x + a.width
  && a.y < b.y + b.height && b.y < a.y + a.height;
const paths = [...svg.querySelectorAll('g[data-count] path')];
const labels = [...svg.querySelectorAll('g.count rect')].map(r => r.getBBox());
const crossing = paths.map(p => {
  const n = 200, length = p.getTotalLength(), hits = [];
  for (let i = 0; i <= n; i++) {
    const q = p.getPointAtLength(length * i / n);
    if (boxes.some(b => inside(q.x, q.y, b))) hits.push([q.x, q.y]);
  }
  return hits;
});
const covering = labels.map(l => boxes.filter(b => meet(l, b)).length);
const stacked = labels.flatMap((l, i) => labels.slice(i + 1).filter(m => meet(l, m)).map(() => i));
return {arrows: paths.length, labels: labels.length, crossing, covering, stacked};
"""
#: Each number cell of the report tables whose text runs over more than one line.
WRAPPED = """
return [...document.querySelectorAll('.report table td.num')].filter(td => {
  const range = document.createRange();
  range.selectNodeContents(td);
  return new Set([...range.getClientRects()].map(r => Math.round(r.top))).size > 1;
}).map(td => td.textContent);
"""
#: Each report table's width beyond its box, in CSS pixels (0: it fits).
OVERFLOW = """
return Object.fromEntries([...document.querySelectorAll('.report .scroll')].map(
  s => [s.querySelector('table').dataset.table, s.scrollWidth - s.clientWidth]));
"""
#: The week labels shown under the trend chart: their rectangles on the screen.
WEEK_LABELS = """
return [...document.querySelectorAll('svg[data-chart=weekly] text.week')]
  .filter(t => getComputedStyle(t).display !== 'none')
  .map(t => { const r = t.getBoundingClientRect();
              return {text: t.textContent, left: r.left, right: r.right, height: r.height}; });
"""


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
        self.check_flow(browser)
        assert browser.execute_script(WRAPPED) == []
        self.check_weeks(browser)
        path = chromium.screenshot(browser, SHOTS / "reports-1400.png", full=True)
        assert path.stat().st_size > 5000

    def test_phone(self, browser: WebDriver, site: Site) -> None:
        """At 390 px: nothing wider than the screen, the table below its chart; every table
        fits its box, numbers on one line, week labels apart, the flow arrows clear of boxes."""
        chromium.viewport(browser, chromium.PHONE, mobile=True)
        chromium.log_in(browser, site.url, READ_TOKEN, "/reports")
        width = browser.execute_script("return document.documentElement.scrollWidth")
        assert width <= chromium.PHONE[0]
        figure = browser.find_element(By.CSS_SELECTOR, "#durations figure")
        table = browser.find_element(By.CSS_SELECTOR, "#durations table")
        assert table.location["y"] >= figure.location["y"] + figure.size["height"]
        assert browser.execute_script(OVERFLOW) == {
            "durations": 0,
            "lead-time": 0,
            "weekly": 0,
            "flow": 0,
        }
        assert browser.execute_script(WRAPPED) == []
        self.check_weeks(browser)
        self.check_flow(browser)
        path = chromium.screenshot(browser, SHOTS / "reports-390.png", full=True)
        assert path.stat().st_size > 5000

    @staticmethod
    def check_flow(browser: WebDriver) -> None:
        """No flow arrow passes through a box; each count's label covers no box and no other."""
        found = browser.execute_script(FLOW_CLASHES)
        assert found["arrows"] == found["labels"] > 0
        assert found["crossing"] == [[]] * found["arrows"]
        assert found["covering"] == [0] * found["labels"]
        assert found["stacked"] == []

    @staticmethod
    def check_weeks(browser: WebDriver) -> None:
        """The trend chart's week labels: at least two, none overlapping the next, readable."""
        labels = browser.execute_script(WEEK_LABELS)
        assert len(labels) >= 2
        for one, following in itertools.pairwise(labels):
            assert one["right"] < following["left"], (one, following)
        assert min(label["height"] for label in labels) >= 9
