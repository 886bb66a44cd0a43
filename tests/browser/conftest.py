"""The support pages in a real headless Chromium (Selenium) against a seeded tracker.

One browser and one site per module and worker: starting Chromium and seeding twelve days of
polls take seconds, the checks that follow take a fraction of one each. A missing Chromium or
chromedriver fails the run, saying what to install: the pages are not tested without them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from selenium.webdriver.remote.webdriver import WebDriver

from tests.browser import chromium
from tests.browser.site import Site


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The seeded tracker's pages, served from a thread."""
    served = Site(tmp_path_factory.mktemp("site")).start()
    try:
        yield served
    finally:
        served.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """Headless Chromium; fails (not skips) when Chromium or its driver is not installed."""
    absent = chromium.missing()
    if absent:
        pytest.fail(chromium.MISSING.format(missing=" and ".join(absent)), pytrace=False)
    driver = chromium.start()
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def laptop(browser: WebDriver) -> WebDriver:
    """The browser with a laptop's viewport."""
    chromium.viewport(browser, chromium.LAPTOP)
    return browser
