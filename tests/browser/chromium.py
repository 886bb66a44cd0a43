"""Debian's headless Chromium through Selenium: start it, size it, log in, take screenshots."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from tests.support import ROOT

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
MISSING = (
    "the browser tests need Debian's Chromium and its driver ({missing} not found); "
    "install them: apt-get install -y chromium chromium-driver (.ci/run does)"
)
#: Headless, without the sandbox (CI runs as root) or /dev/shm (small in containers).
ARGUMENTS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--hide-scrollbars",
    "--lang=en-US",
)
#: A laptop's viewport, and a phone's (an iPhone 12-15's CSS pixels).
LAPTOP = (1280, 800)
PHONE = (390, 844)
#: Seconds a page may take to load, or a condition to come true.
WAIT = 15
#: The tallest full-page screenshot: a long timeline is cut here rather than be megapixels.
MAX_HEIGHT = 4000


def missing() -> list[str]:
    """The paths of Chromium or its driver that are not installed."""
    return [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]


def start() -> WebDriver:
    """A headless Chromium session (fails saying what to install when it is missing)."""
    absent = missing()
    if absent:
        raise RuntimeError(MISSING.format(missing=" and ".join(absent)))
    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in ARGUMENTS:
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(WAIT)
    return driver


def viewport(driver: WebDriver, size: tuple[int, int], *, mobile: bool = False) -> None:
    """Make the page's viewport exactly ``size`` CSS pixels (a phone's: ``mobile``)."""
    width, height = size
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
    )


def log_in(driver: WebDriver, base: str, token: str, path: str = "/") -> None:
    """Log in through the form, as a person would, starting from ``path``."""
    driver.delete_all_cookies()
    driver.get(base + path)
    WebDriverWait(driver, WAIT).until(expected_conditions.url_contains("/login"))
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "form[action='/login'] button[type=submit]").click()
    WebDriverWait(driver, WAIT).until(lambda d: "/login" not in d.current_url)


def screenshot(driver: WebDriver, path: Path, *, full: bool = False) -> Path:
    """Save the viewport (or, ``full``, the whole page at the viewport's width) as a PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if full:
        width = driver.execute_script("return window.innerWidth")
        height = driver.execute_script("return document.documentElement.scrollHeight")
        viewport(driver, (int(width), min(int(height), MAX_HEIGHT)))
    driver.save_screenshot(str(path))
    return path


def shot(driver: WebDriver, name: str, *, full: bool = True) -> Path:
    """Save ``test-artifacts/screenshots/NAME.png`` (the whole page unless ``full`` is false)
    and check that it shows a rendered page, not an empty image."""
    path = screenshot(driver, ROOT / "test-artifacts" / "screenshots" / f"{name}.png", full=full)
    assert path.stat().st_size > 5000
    return path


def replaced(page: WebElement) -> Callable[[WebDriver], bool]:
    """A wait condition: ``page`` (the old page's ``<html>``) is gone from the window. While
    the next page loads, chromedriver may answer a look at the old node with "does not belong
    to the document" instead of "stale": both mean it was replaced."""

    def gone(_driver: WebDriver) -> bool:
        try:
            page.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as exc:
            if "does not belong to the document" in (exc.msg or ""):
                return True
            raise
        return False

    return gone
