"""The pages' language negotiation, their German catalog and times in the configured zone."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from tracker import retries
from tracker.field_changes import Change
from tracker.lifecycle import Kind
from tracker.text import Message
from tracker.web import i18n, journey
from tracker.web.i18n import Localization, PageLocale, negotiate

WEB = Path(i18n.__file__).parent
BERLIN = ZoneInfo("Europe/Berlin")
WINTER = datetime(2026, 11, 30, 10, 20, 5, tzinfo=UTC)
SUMMER = datetime(2026, 7, 1, 10, 20, 5, tzinfo=UTC)


class TestNegotiation:
    """Accept-Language picks the best offered language by q-value."""

    @pytest.mark.parametrize(
        ("header", "chosen"),
        [
            ("de", "de"),
            ("de-DE,de;q=0.9,en-US;q=0.8,en;q=0.7", "de"),
            ("en-US,en;q=0.9,de;q=0.8", "en"),
            ("fr-FR,fr;q=0.9,de;q=0.5,en;q=0.4", "de"),
            ("en;q=0.2, de;q=0.8", "de"),
            ("de;q=0.5, en;q=0.5", "de"),
            ("DE-at", "de"),
            ("fr, *;q=0.1", "en"),
            ("de;q=0, *", "en"),
            ("en;q=0, *", "de"),
            ("*;q=0.5, en;q=0", "de"),
            ("fr, it", None),
            ("de;q=0", None),
            ("de;q=abc, en", "en"),
            ("de;q=2, en", "en"),
            ("", None),
            (None, None),
            (",,;q=1,", None),
        ],
    )
    def test_choice(self, header: str | None, chosen: str | None) -> None:
        """Each header chooses the language a reader of it prefers, or none."""
        assert negotiate(header) == chosen

    def test_a_huge_header_is_read_only_in_part(self) -> None:
        """Ranges past the bound are not weighed, so a long header costs little."""
        header = ",".join(["fr"] * 1000 + ["de"])
        assert negotiate(header) is None


class TestChoice:
    """The user's language beats [http] language, which beats the browser."""

    def test_order_of_precedence(self) -> None:
        """A user's own language, then the configured one, then Accept-Language, then English."""
        local = Localization("auto", "Europe/Berlin", {"anna": "de", "bob": None, "eve": "auto"})
        assert local.choose("en", "anna").language == "de"
        assert local.choose("de", "bob").language == "de"
        assert local.choose("fr", None).language == "en"
        fixed = Localization("en", "UTC", {"anna": "de", "eve": "auto"})
        assert fixed.choose("de", None).language == "en"
        assert fixed.choose("en", "anna").language == "de"
        assert fixed.choose("de", "eve").language == "de"  # her "auto" follows her browser
        assert local.choose(None, None).zone == BERLIN


class TestTimes:
    """Page times are shown in the configured zone, named."""

    def test_utc_by_default(self) -> None:
        """Without a zone configured, times read as before: UTC, named."""
        with i18n.rendering(PageLocale()):
            assert i18n.local_text(WINTER) == "2026-11-30 10:20:05 UTC"
            assert i18n.local_text(None) == "-"

    def test_berlin_winter_and_summer(self) -> None:
        """Europe/Berlin shows CET in winter and CEST in summer, an hour or two past UTC."""
        with i18n.rendering(PageLocale(zone=BERLIN)):
            assert i18n.local_text(WINTER) == "2026-11-30 11:20:05 CET"
            assert i18n.local_text(SUMMER) == "2026-07-01 12:20:05 CEST"
            assert i18n.zone_name() == "Europe/Berlin"

    @pytest.mark.parametrize(
        ("offset", "english", "german"),
        [
            (timedelta(seconds=5), "just now", "gerade eben"),
            (timedelta(minutes=5), "5 min ago", "vor 5 Min."),
            (timedelta(hours=3), "3 h ago", "vor 3 Std."),
            (timedelta(days=1), "1 day ago", "vor 1 Tag"),
            (timedelta(days=2), "2 days ago", "vor 2 Tagen"),
            (-timedelta(seconds=5), "in under a minute", "in weniger als einer Minute"),
            (-timedelta(days=2), "in 2 days", "in 2 Tagen"),
        ],
    )
    def test_ago(self, offset: timedelta, english: str, german: str) -> None:
        """How long ago reads in the page's language."""
        with i18n.rendering(PageLocale()):
            assert i18n.ago_text(WINTER - offset, WINTER) == english
        with i18n.rendering(PageLocale(language="de")):
            assert i18n.ago_text(WINTER - offset, WINTER) == german


#: Words handlers hand to a template's ``translated``: kinds, places, titles, reasons.
HANDED = [
    *journey.PLACE_WORDS.values(),
    *journey.ALERT_TITLES.values(),
    *retries.KIND_LABELS.values(),
    "unknown",
    *(kind.value.replace("_", " ") for kind in Kind),
    *(change.value for change in Change),
    "the uploaded file",
    "the pasted lines",
    "no id in the id column",
    "not an order id (prdo_ and a-z, 0-9)",
    "Paste ids or upload a file, not both at once.",
    "Paste at least one order id, or choose a CSV file.",
    # The phrases of the statuses an error page answers with.
    *(HTTPStatus(code).phrase for code in (400, 401, 403, 404, 405, 413, 415, 422, 429, 500, 503)),
]


def german_catalog() -> Catalog:
    """The German catalog as the pages read it."""
    with (WEB / "locale/de/LC_MESSAGES/tracker.po").open("rb") as po:
        return read_po(po)


def untranslated(catalog: Catalog, msgids: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (where, msgid) pairs with no German entry in ``catalog``."""
    missing = []
    for where, msgid in msgids:
        entry = catalog.get(msgid)
        if entry is None or not entry.string:
            missing.append((where, msgid))
    return missing


class TestCatalog:
    """The German catalog covers every text the pages translate."""

    def test_every_handler_msgid_has_a_german_entry(self) -> None:
        """Each Message a page module words, and each word a handler hands to a template, is
        translated."""
        found = [
            (path, message if isinstance(message, str) else message[0])
            for folder in (WEB, WEB.parent)  # the page modules, and the views they share
            for path, _line, message, _comments, _context in extract_from_dir(
                folder,
                method_map=[("*.py", "python")] if folder == WEB else [("views.py", "python")],
                keywords={"Message": None},
            )
        ]
        assert any(path == "desk.py" for path, _m in found), found
        assert any(path == "views.py" for path, _m in found), found
        handed = [("handed", word) for word in HANDED]
        assert untranslated(german_catalog(), found + handed) == []

    def test_a_message_reads_as_its_english_text(self) -> None:
        """A Message is its English text, formatted, with its msgid and values kept."""
        said = Message("day %(day)r is not a date; use YYYY-MM-DD", day="x")
        assert said == "day 'x' is not a date; use YYYY-MM-DD"
        assert said.msgid == "day %(day)r is not a date; use YYYY-MM-DD"
        assert said.values == {"day": "x"}
        assert Message("100% sure") == "100% sure"

    def test_every_template_msgid_has_a_german_entry(self) -> None:
        """Each msgid the templates use (as the page environment reads them) is translated."""
        catalog = german_catalog()
        used = [
            (path, message)
            for path, _line, message, _comments, _context in extract_from_dir(
                WEB / "templates",
                method_map=[("**.html", "jinja2")],
                options_map={
                    "**.html": {"extensions": "jinja2.ext.i18n", "trimmed": "true"},
                },
            )
        ]
        assert used, "no template uses _() or {% trans %}"
        missing = []
        for path, message in used:
            msgid = message if isinstance(message, str) else message[0]
            entry = catalog.get(msgid)
            if entry is None or not entry.string:
                missing.append((path, msgid))
        assert missing == []

    def test_every_status_has_a_german_label(self) -> None:
        """Each documented status gets a German label beside its API spelling; none in English."""
        with i18n.rendering(PageLocale(language="de")):
            labels = {status: i18n.status_label(status) for status in i18n.STATUS_LABELS}
        assert all(labels.values()), labels
        assert labels["installation_planning"] == "Einbau in Planung"
        with i18n.rendering(PageLocale(language="de")):
            assert i18n.status_label("<b>new</b>") is None
        with i18n.rendering(PageLocale()):
            assert i18n.status_label("installation_planning") is None
