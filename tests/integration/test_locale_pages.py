"""The pages in German and in Europe/Berlin time, on a real server, on both databases."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.outbox import FAST, deliver_all, hook_sink, poll
from tests.support import ScriptedUpstream, app_client, ok, settings_mapping
from tests.users import NOWHERE, READ_TOKEN, WRITE_TOKEN
from tracker.clock import utc_now
from tracker.config import from_mapping
from tracker.service import open_service
from tracker.web import Metrics, build_app
from tracker.web.i18n import Localization

pytestmark = pytest.mark.usefixtures("database")

A = "prdo_aaaaaaaaaaaaaaaaaaaaaaaa"
ENGLISH_TOKEN = "english-token-5d1c9e7a3b2f"
USERS = [
    {"name": "support-ui", "token": READ_TOKEN, "role": "read"},
    {"name": "ops-lead", "token": WRITE_TOKEN, "role": "write"},
    {"name": "anglo", "token": ENGLISH_TOKEN, "role": "read", "language": "en"},
]
#: A time shown in Berlin: CET in winter, CEST in summer, whenever the test runs.
BERLIN_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d CES?T")
GERMAN = {"Accept-Language": "de-DE,de;q=0.9,en;q=0.5"}


@dataclass
class Site:
    """A live site whose pages show Europe/Berlin and speak as each browser asks."""

    url: str
    client: httpx.AsyncClient


@pytest.fixture
async def site(upstream: tuple[ScriptedUpstream, str], tmp_path: Path) -> AsyncIterator[Site]:
    """Order A moved ordered → checked, its transition dead at ``audit``; [http] timezone is
    Europe/Berlin, language auto."""
    scripted, url = upstream
    scripted.script(A, ok("ordered"), ok("checked"))
    http = {"listen": "127.0.0.1:0", "users": USERS, "timezone": "Europe/Berlin"}
    mapping = settings_mapping(
        tmp_path, url, http=http, delivery=FAST, sinks=[hook_sink("audit", NOWHERE, ["*"])]
    )
    settings = from_mapping(mapping, {}, origin="test")
    async with open_service(settings) as service:
        await service.store.orders.watch([A], source="cli", now=utc_now())
        await poll(service, A)
        await poll(service, A)
        await deliver_all(service)
        app = build_app(
            store=service.store,
            metrics=Metrics(),
            users=settings.http.users,
            sinks=lambda: [s.name for s in settings.sinks],
            localization=Localization.from_settings(settings.http),
        )
        async with app_client(app) as (base, client):
            yield Site(url=base, client=client)


def bearer(token: str, **headers: str) -> dict[str, str]:
    """Headers that open the pages with ``token``."""
    return {"Authorization": f"Bearer {token}", **headers}


class TestGerman:
    """A browser asking for German gets German pages with Berlin times."""

    async def test_board_in_german_and_berlin_time(self, site: Site) -> None:
        """The board says lang="de", German navigation, Berlin times and names the zone."""
        board = await site.client.get("/", headers=bearer(READ_TOKEN, **GERMAN))
        assert board.status_code == 200
        assert '<html lang="de">' in board.text
        assert ">Übersicht</a>" in board.text
        assert ">Unzustellbar</a>" in board.text
        assert "Alle Zeiten in Europe/Berlin" in board.text
        assert BERLIN_TIME.search(board.text)
        assert " UTC" not in board.text
        assert 'class="status-label">geprüft<' in board.text  # beside its API spelling
        assert ">checked</span>" in board.text
        assert 'data-fresh="Vor {n} s aktualisiert' in board.text
        for german in (
            "Wo die aktiven Aufträge stehen",
            "Hauptweg, der Reihe nach",
            "Umwege",
            "Letzte Statuswechsel",
            "Fehlschlagende Aufträge",
            "Zustellungen",
            "1 unzustellbare Meldung",
            ">Änderungen</a>",
            "Was sich heute geändert",
        ):
            assert german in board.text, german
        assert "Where the active orders stand" not in board.text
        assert ">Beobachten</a>" not in board.text  # /watch is linked for write users only
        writer = await site.client.get("/", headers=bearer(WRITE_TOKEN, **GERMAN))
        assert '<a href="/watch">Beobachten</a>' in writer.text

    async def test_order_page_in_german_and_berlin_time(self, site: Site) -> None:
        """The order page reads German around its values, its times in Berlin."""
        page = await site.client.get(f"/orders/{A}", headers=bearer(READ_TOKEN, **GERMAN))
        assert page.status_code == 200
        assert '<html lang="de">' in page.text
        assert "Alle Zeiten in Europe/Berlin" in page.text
        assert BERLIN_TIME.search(page.text)
        assert re.search(r"\((gerade eben|vor \d+ Min\.)\)", page.text)
        assert 'class="status-label">geprüft<' in page.text
        for german in (
            "Verlauf",
            "Verweildauer in jedem Status",
            "Genommene Umwege",
            "Zeitleiste",
            "Erster Abruf",
            "Kunde",
            "Beobachtet seit",
            "Ziel",
            "Versuche",
            "Zugestellt / nächster Versuch",
            "Schritt vor",
        ):
            assert german in page.text, german
        journey = page.text.split('class="journey"')[1].split("</section>")[0]
        assert '<span class="place">vor der Beobachtung</span>' in journey  # intended, waiting
        assert '<span class="place">durchlaufen</span>' in journey  # ordered
        assert '<span class="place">aktuell</span>' in journey  # checked
        assert '<span class="place">nicht erreicht</span>' in journey
        assert '<span class="time">unbekannt</span>' in journey  # ordered began before watching
        assert re.search(r'<span class="time">[^<]+ bisher</span>', journey)
        assert "so far" not in journey
        assert "Timeline" not in page.text

    async def test_dead_letters_and_their_retries_in_german(self, site: Site) -> None:
        """The dead letters, the bulk retry's confirmation and the notice after a retry read
        German, their times in Berlin."""
        writer = bearer(WRITE_TOKEN, **GERMAN)
        page = await site.client.get("/dead-letters", headers=writer)
        assert page.status_code == 200
        for german in (
            "<h1>Unzustellbar</h1>",
            "Zustellungen, die nach ihrem letzten Versuch",
            "Die 1 unzustellbare Meldung erneut senden…",
            "Alle des Ziels",
            ">Erneut senden</button>",
            '<td class="nowrap">Statuswechsel</td>',
            "<th>Ereignis</th>",
            "Alle Zeiten in Europe/Berlin",
        ):
            assert german in page.text, german
        assert BERLIN_TIME.search(page.text)
        confirm = await site.client.get("/dead-letters/retry-all?sink=audit", headers=writer)
        assert "Dies stellt" in confirm.text
        assert "unzustellbare Meldung (an Ziel audit) erneut ein" in confirm.text
        assert "1 unzustellbare Meldung erneut senden</button>" in confirm.text
        done = await site.client.post(
            "/dead-letters/retry-all",
            data={"sink": "audit"},
            headers=writer,
            follow_redirects=True,
        )
        assert done.status_code == 200  # followed the 303 back to the list
        assert "1 unzustellbare Meldung an Ziel audit erneut eingestellt" in done.text
        none = await site.client.get("/dead-letters/retry-all?order=" + A, headers=writer)
        assert f"keine unzustellbaren Meldungen (von Auftrag {A})" in none.text
        reader = await site.client.get("/dead-letters", headers=bearer(READ_TOKEN, **GERMAN))
        assert "Erneutes Senden braucht einen Benutzer mit der Rolle write." in reader.text

    async def test_changes_in_german_and_berlin_time(self, site: Site) -> None:
        """/changes reads German, its rows' times in Berlin; a bad status is refused in German."""
        page = await site.client.get("/changes", headers=bearer(READ_TOKEN, **GERMAN))
        assert page.status_code == 200
        for german in (
            "<h1>Änderungen</h1>",
            "Statuswechsel, erkannt am",
            "(UTC-Tag)",
            "die neuesten zuerst",
            "← Vorheriger Tag",
            "Nach Status",
            "Anzeigen",
            'data-label="Erkannt"',
            "vorgesehen",
        ):
            assert german in page.text, german
        assert BERLIN_TIME.search(page.text.split("<tbody>")[1])
        bad = await site.client.get(
            "/changes?status=chekced", headers=bearer(READ_TOKEN, **GERMAN, Accept="text/html")
        )
        assert bad.status_code == 400
        assert "400 · Ungültige Anfrage" in bad.text
        assert "Status &#39;chekced&#39; ist kein bekannter Status; verwenden Sie einen von:" in (
            bad.text
        )
        english = await site.client.get("/changes?status=chekced", headers=bearer(READ_TOKEN))
        assert "status &#39;chekced&#39; is not a known status" in english.text

    async def test_watch_page_in_german(self, site: Site) -> None:
        """/watch reads German, and so do its counts and the reasons of refused lines."""
        writer = bearer(WRITE_TOKEN, **GERMAN)
        page = await site.client.get("/watch", headers=writer)
        assert page.status_code == 200
        for german in (
            "<h1>Aufträge beobachten</h1>",
            "IDs einfügen",
            "Diese beobachten",
            "CSV-Datei hochladen",
            "Höchstens 1 MiB und 10.000 IDs.",
        ):
            assert german in page.text, german
        answer = await site.client.post("/watch", data={"ids": f"{A}\nnot-an-id"}, headers=writer)
        assert answer.status_code == 422
        assert "0 neue(r) Auftrag/Aufträge beobachtet; 1 bereits beobachtet." in answer.text
        assert "1 Zeile der eingefügten Zeilen abgelehnt:" in answer.text
        assert "<td>keine Auftrags-ID (prdo_ und a-z, 0-9)</td>" in answer.text
        empty = await site.client.post("/watch", data={"ids": " "}, headers=writer)
        assert "Fügen Sie mindestens eine Auftrags-ID ein" in empty.text
        order = await site.client.get(f"/orders/{A}", headers=writer)
        assert "Beobachtet: wird planmäßig abgefragt." in order.text
        assert ">Nicht mehr beobachten</button>" in order.text
        reader = await site.client.get("/watch", headers=bearer(READ_TOKEN, **GERMAN))
        assert "Aufträge zu beobachten braucht einen Benutzer mit der Rolle write." in reader.text

    async def test_english_by_default_and_by_the_users_choice(self, site: Site) -> None:
        """No Accept-Language means English; a user's own language beats the browser's."""
        plain = await site.client.get("/", headers=bearer(READ_TOKEN))
        assert '<html lang="en">' in plain.text
        assert ">Board</a>" in plain.text
        assert "All times in Europe/Berlin" in plain.text
        assert "status-label" not in plain.text
        chosen = await site.client.get("/", headers=bearer(ENGLISH_TOKEN, **GERMAN))
        assert '<html lang="en">' in chosen.text
        login = await site.client.get("/login", headers=GERMAN)
        assert "Fügen Sie das Token" in login.text

    async def test_the_api_stays_utc(self, site: Site) -> None:
        """The API's times are UTC ISO-8601 whatever the pages' zone and language."""
        answer = await site.client.get(f"/api/v1/orders/{A}", headers=bearer(READ_TOKEN, **GERMAN))
        assert answer.status_code == 200
        stamps = re.findall(r'"(\d{4}-\d\d-\d\dT[^"]+)"', answer.text)
        assert stamps
        assert all(s.endswith(("Z", "+00:00")) for s in stamps), stamps
