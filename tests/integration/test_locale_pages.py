"""The pages in German and in Europe/Berlin time, on a real server, on both databases."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.outbox import poll
from tests.support import ScriptedUpstream, app_client, ok, settings_mapping
from tracker.clock import utc_now
from tracker.config import from_mapping
from tracker.service import open_service
from tracker.web import Metrics, build_app
from tracker.web.i18n import Localization

pytestmark = pytest.mark.usefixtures("database")

A = "prdo_aaaaaaaaaaaaaaaaaaaaaaaa"
READ_TOKEN = "read-token-7f3a9c2e5b1d8f4a"
ENGLISH_TOKEN = "english-token-5d1c9e7a3b2f"
USERS = [
    {"name": "support-ui", "token": READ_TOKEN, "role": "read"},
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
    """Order A moved ordered → checked; [http] timezone is Europe/Berlin, language auto."""
    scripted, url = upstream
    scripted.script(A, ok("ordered"), ok("checked"))
    http = {"listen": "127.0.0.1:0", "users": USERS, "timezone": "Europe/Berlin"}
    settings = from_mapping(settings_mapping(tmp_path, url, http=http), {}, origin="test")
    async with open_service(settings) as service:
        await service.store.orders.watch([A], source="cli", now=utc_now())
        await poll(service, A)
        await poll(service, A)
        app = build_app(
            store=service.store,
            metrics=Metrics(),
            users=settings.http.users,
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

    async def test_order_page_in_german_and_berlin_time(self, site: Site) -> None:
        """The order page reads German around its values, its times in Berlin."""
        page = await site.client.get(f"/orders/{A}", headers=bearer(READ_TOKEN, **GERMAN))
        assert page.status_code == 200
        assert '<html lang="de">' in page.text
        assert "Alle Zeiten in Europe/Berlin" in page.text
        assert BERLIN_TIME.search(page.text)
        assert re.search(r"\((gerade eben|vor \d+ Min\.)\)", page.text)
        assert 'class="status-label">geprüft<' in page.text

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
