"""The support pages as a person sees them: headless Chromium, a seeded tracker, screenshots.

Each page's screenshot goes to ``test-artifacts/screenshots/NAME.png``.
"""

from __future__ import annotations

from pathlib import Path

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from tests.browser import chromium
from tests.browser.site import FAILING, READ_TOKEN, SHOWN, WRITE_TOKEN, Site
from tracker.model import DeliveryState
from tracker.web.sessions import COOKIE


def shot(driver: WebDriver, name: str, *, full: bool = False) -> Path:
    """A screenshot ``<name>.png`` of the viewport (of the whole page with ``full``)."""
    return chromium.shot(driver, name, full=full)


def texts(driver: WebDriver, selector: str) -> list[str]:
    return [element.text for element in driver.find_elements(By.CSS_SELECTOR, selector)]


class TestLogin:
    """A support user logs in with the token through the form and lands where they were going."""

    def test_login_through_the_form(self, laptop: WebDriver, site: Site) -> None:
        """A wrong token is refused; the right one opens the page asked for, cookie HttpOnly."""
        laptop.delete_all_cookies()
        laptop.get(f"{site.url}/orders/{SHOWN}")
        WebDriverWait(laptop, chromium.WAIT).until(expected_conditions.url_contains("/login"))
        shot(laptop, "login")
        laptop.find_element(By.ID, "token").send_keys("not-the-token-at-all")
        laptop.find_element(By.CSS_SELECTOR, "form[action='/login'] button").click()
        # The refusal is a new page: wait for it, not for the form the click left behind.
        notice = WebDriverWait(laptop, chromium.WAIT).until(
            expected_conditions.presence_of_element_located((By.CSS_SELECTOR, ".notice"))
        )
        assert "not one of the configured" in notice.text
        laptop.find_element(By.ID, "token").send_keys(READ_TOKEN)
        laptop.find_element(By.CSS_SELECTOR, "form[action='/login'] button").click()
        WebDriverWait(laptop, chromium.WAIT).until(
            expected_conditions.url_to_be(f"{site.url}/orders/{SHOWN}")
        )
        cookie = laptop.get_cookie(COOKIE)
        assert cookie is not None
        assert cookie["httpOnly"] is True
        assert cookie["sameSite"] == "Strict"
        assert laptop.execute_script("return document.cookie") == ""  # out of scripts' reach
        assert "support-ui" in laptop.find_element(By.CSS_SELECTOR, ".who").text


class TestBoard:
    """The board shows the lifecycle strip, unknown and failing orders, the latest transitions."""

    def test_board(self, laptop: WebDriver, site: Site) -> None:
        """The board shows the 14-step strip with counts, unknown, failing and latest, and links."""
        chromium.log_in(laptop, site.url, READ_TOKEN)
        steps = laptop.find_elements(By.CSS_SELECTOR, ".strip .step")
        assert len(steps) == 14
        names = [s.find_element(By.CSS_SELECTOR, ".name").text for s in steps]
        assert names[:3] == ["intended", "waiting", "ordered"]
        detours = ["blocked", "blocked wim", "pre installed", "cancelled"]
        assert names[9:] == ["activated", *detours]
        numbers = [int(s.find_element(By.CSS_SELECTOR, ".count").text) for s in steps]
        counts = dict(zip(names, numbers, strict=True))
        assert counts["installation scheduled"] == 2
        assert counts["checked"] == 1
        assert counts["ordered"] == 1  # the failing order, last seen ordered
        assert "on_hold_by_provider" in laptop.find_element(By.ID, "unknown").text
        failing = laptop.find_element(By.ID, "failing")
        assert failing.find_element(By.CSS_SELECTOR, ".badge").text == "1"
        assert FAILING in failing.text
        latest = laptop.find_elements(By.CSS_SELECTOR, "#latest + * tbody tr")
        assert len(latest) == 10
        assert "installation_scheduled" in latest[0].text  # the newest first
        shot(laptop, "board", full=True)
        chromium.viewport(laptop, chromium.LAPTOP)
        laptop.find_element(By.CSS_SELECTOR, ".strip .step a[href*='status=checked']").click()
        WebDriverWait(laptop, chromium.WAIT).until(expected_conditions.url_contains("/orders?"))
        assert texts(laptop, "tbody td:first-child a") == ["prdo_b2kq7wzt0c9m4xr1np6sd3fh"]


class TestSearch:
    """Searching by a customer finds their order; by an id prefix, every order it starts."""

    def test_search(self, laptop: WebDriver, site: Site) -> None:
        """A customer search finds its one order; an id prefix lists every active order, sorted."""
        chromium.log_in(laptop, site.url, READ_TOKEN)
        laptop.get(f"{site.url}/orders")
        box = laptop.find_element(By.ID, "q")
        box.send_keys("cus_01k3zcrkc9r41qt44ngl9d")
        box.submit()
        WebDriverWait(laptop, chromium.WAIT).until(expected_conditions.url_contains("q=cus_01"))
        assert texts(laptop, "tbody td:first-child a") == [SHOWN]
        laptop.get(f"{site.url}/orders?q=prdo_&state=active")
        found = texts(laptop, "tbody td:first-child a")
        assert len(found) == 9
        assert found == sorted(found)
        shot(laptop, "search", full=True)


class TestOrderPage:
    """One order shows its status since when, its timeline and each transition's deliveries."""

    def test_order_page(self, laptop: WebDriver, site: Site) -> None:
        """The order page shows the status since when, the timeline and each sink's deliveries."""
        chromium.log_in(laptop, site.url, READ_TOKEN, path=f"/orders/{SHOWN}")
        lead = laptop.find_element(By.CSS_SELECTOR, ".lead").text
        assert "installation_scheduled" in lead
        assert "since" in lead
        assert "ago" in lead
        entries = laptop.find_elements(By.CSS_SELECTOR, ".timeline > li")
        assert len(entries) == 6
        assert "First snapshot" in entries[0].text
        assert "Snapshot (no status change)" in entries[4].text
        moves = [e for e in entries if "move" in (e.get_attribute("class") or "")]
        assert [m.find_element(By.CSS_SELECTOR, ".what").text.split("\n")[0] for m in moves] == [
            "waiting → ordered advance",
            "ordered → checked advance",
            "checked → installation_planning advance",
            "installation_planning → installation_scheduled advance",
        ]
        checked = moves[1].find_elements(By.CSS_SELECTOR, ".deliveries tbody tr")
        rows = {r.find_element(By.CSS_SELECTOR, "td").text: r.text for r in checked}
        assert set(rows) == {"crm-webhook", "support-mail"}
        assert "delivered 2 204" in rows["crm-webhook"]  # failed once (500), then taken
        assert "delivered 1" in rows["support-mail"]
        latest = moves[3].find_elements(By.CSS_SELECTOR, ".deliveries tbody tr")
        waiting = {r.find_element(By.CSS_SELECTOR, "td").text: r.text for r in latest}
        assert waiting["crm-webhook"].startswith("crm-webhook pending 1 500 HTTP 500 next ")
        assert "delivered 1 250" in waiting["support-mail"]
        shot(laptop, "order", full=True)


class TestDeadLetters:
    """A write user retries a dead letter with its button; a read user has no button."""

    def test_retry_by_a_write_user(self, laptop: WebDriver, site: Site) -> None:
        """A write user's retry button makes the dead letter pending; a read user sees no button."""
        chromium.log_in(laptop, site.url, READ_TOKEN, path="/dead-letters")
        assert len(laptop.find_elements(By.CSS_SELECTOR, "tbody tr")) == 2
        assert laptop.find_elements(By.CSS_SELECTOR, "form[action$='/retry']") == []
        chromium.log_in(laptop, site.url, WRITE_TOKEN, path="/dead-letters")
        shot(laptop, "dead-letters", full=True)
        chromium.viewport(laptop, chromium.LAPTOP)
        row = laptop.find_element(By.CSS_SELECTOR, "tbody tr")
        event_id, _order, sink = (td.text for td in row.find_elements(By.CSS_SELECTOR, "td")[:3])
        assert sink == "legacy-erp"
        row.find_element(By.CSS_SELECTOR, "button").click()
        WebDriverWait(laptop, chromium.WAIT).until(expected_conditions.url_contains("retried="))
        assert f"Retried {event_id}" in laptop.find_element(By.CSS_SELECTOR, ".notice").text
        assert len(laptop.find_elements(By.CSS_SELECTOR, "tbody tr")) == 1
        shot(laptop, "dead-letters-retried")
        assert site.service is not None
        store = site.service.store

        async def states() -> set[DeliveryState]:
            return {
                d.state
                async for d in store.outbox.deliveries(sink="legacy-erp")
                if d.event_id == event_id
            }

        assert site.run(states()) == {DeliveryState.PENDING}


class TestPhone:
    """On a phone's width the strip wraps and nothing but a table scrolls sideways."""

    def test_phone_width(self, browser: WebDriver, site: Site) -> None:
        """At a phone's width the strip wraps and only the deliveries tables scroll sideways."""
        chromium.viewport(browser, chromium.PHONE, mobile=True)
        try:
            chromium.log_in(browser, site.url, READ_TOKEN)
            width = browser.execute_script("return document.documentElement.scrollWidth")
            assert width <= chromium.PHONE[0]
            rows = browser.execute_script(
                "return new Set([...document.querySelectorAll('ol.strip .step')]"
                ".map(e => e.offsetTop)).size"
            )
            assert rows >= 3  # ten statuses in rows of two
            shot(browser, "board-phone")
            browser.get(f"{site.url}/orders/{SHOWN}")
            width = browser.execute_script("return document.documentElement.scrollWidth")
            assert width <= chromium.PHONE[0]
            scrolls = browser.execute_script(
                "return [...document.querySelectorAll('.scroll')]"
                ".some(e => e.scrollWidth > e.clientWidth)"
            )
            assert scrolls is True  # the deliveries tables scroll inside their box
            shot(browser, "order-phone")
        finally:
            chromium.viewport(browser, chromium.LAPTOP)
