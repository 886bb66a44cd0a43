"""Make ``docs/order-page.png``: the support pages' order page in headless Chromium.

The tracker behind it is the browser tests' seeded one (``tests/browser/site.py``): an order
polled through five statuses over twelve days, with webhook and e-mail deliveries, one refused
attempt and one waiting for its next. Run ``.venv/bin/python benchmarks/screenshot_order_page.py``
(it needs Debian's ``chromium`` and ``chromium-driver``).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file, not with ``-m``
    sys.path.insert(0, str(ROOT))

from tests.browser import chromium  # noqa: E402 - needs the root on the path
from tests.browser.site import READ_TOKEN, SHOWN, Site  # noqa: E402 - needs the root on the path

#: Where the picture goes, and the laptop width it is taken at.
OUTPUT = ROOT / "docs" / "order-page.png"
WIDTH = 1280


def main() -> None:
    """Seed, serve, log in, open the order page and save it whole."""
    with tempfile.TemporaryDirectory() as folder:
        site = Site(Path(folder)).start()
        driver = chromium.start()
        try:
            chromium.viewport(driver, (WIDTH, 800))
            chromium.log_in(driver, site.url, READ_TOKEN, path=f"/orders/{SHOWN}")
            chromium.screenshot(driver, OUTPUT, full=True)
        finally:
            driver.quit()
            site.stop()
    print(f"wrote {OUTPUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
