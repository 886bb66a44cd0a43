"""The support pages on a real uvicorn server and a real client, on both databases."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import markupsafe
import pytest
import structlog
import time_machine
from sqlalchemy.ext.asyncio import create_async_engine

from tests.outbox import FAST, deliver_all, hook_sink, poll
from tests.support import ScriptedUpstream, app_client, error, ok, settings_mapping
from tests.users import FORM, NOWHERE, READ_TOKEN, USERS, WRITE_TOKEN
from tracker import alerts
from tracker.clock import utc_now
from tracker.config import HttpUser, from_mapping
from tracker.model import DeliveryState
from tracker.service import Service, open_service
from tracker.store import Store
from tracker.web import Metrics, build_app
from tracker.web.pages import CSP
from tracker.web.sessions import COOKIE

#: Every test here runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.usefixtures("database")

A = "prdo_aaaaaaaaaaaaaaaaaaaaaaaa"
B = "prdo_bbbbbbbbbbbbbbbbbbbbbbbb"
F = "prdo_ffffffffffffffffffffffff"
H = "prdo_hhhhhhhhhhhhhhhhhhhhhhhh"
NEVER = "prdo_neverwatched"
HOSTILE_STATUS = "<script>alert('status')</script>"
HOSTILE_CUSTOMER = '<img src=x onerror="alert(1)">'
Upstream = tuple[ScriptedUpstream, str]


@dataclass
class World:
    """Live pages over a database with polled orders, one failing, one hostile, dead letters."""

    client: httpx.AsyncClient
    url: str
    service: Service
    users: Sequence[HttpUser]
    scripted: ScriptedUpstream


@asynccontextmanager
async def serving(store: Store, users: Any) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    """The app on a free loopback port, and a client pointed at it (which keeps cookies)."""
    app = build_app(store=store, metrics=Metrics(), sinks=lambda: ("ops",), users=users)
    async with app_client(app) as served:
        yield served


@pytest.fixture
async def world(upstream: Upstream, tmp_path: Path) -> AsyncIterator[World]:
    """A moved ordered → checked (dead at ``ops``), B only ordered, F fails, H is hostile."""
    scripted, url = upstream
    scripted.script(A, ok("ordered"), ok("checked"))
    scripted.script(B, ok("ordered"))
    scripted.script(F, error(500))
    scripted.script(
        H, ok("ordered", customer=HOSTILE_CUSTOMER), ok(HOSTILE_STATUS, customer=HOSTILE_CUSTOMER)
    )
    mapping = settings_mapping(
        tmp_path,
        url,
        delivery=FAST,
        sinks=[hook_sink("ops", NOWHERE, ["*->checked"])],
        http={"listen": "127.0.0.1:0", "users": USERS},
    )
    settings = from_mapping(mapping, {}, origin="test")
    async with open_service(settings) as service:
        await service.store.orders.watch([A, B, F, H], source="cli", now=utc_now())
        await poll(service, A, B, F, H)
        await poll(service, A, H)
        await deliver_all(service)
        async with serving(service.store, settings.http.users) as (base, client):
            yield World(
                client=client,
                url=base,
                service=service,
                users=settings.http.users,
                scripted=scripted,
            )


async def login(client: httpx.AsyncClient, token: str, **fields: str) -> httpx.Response:
    """POST the login form; the client keeps the cookie it sets."""
    return await client.post("/login", data={"token": token, **fields})


def csrf_of(page: httpx.Response) -> str:
    """The CSRF token of the first form on ``page``."""
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None, "no CSRF token on the page"
    return found.group(1)


def esc(text: str) -> str:
    """``text`` as the templates escape it."""
    return str(markupsafe.escape(text))


def cookie_header(answer: httpx.Response) -> str:
    [header] = answer.headers.get_list("set-cookie")
    return header


async def dead_event(world: World) -> str:
    """The event id of A's dead delivery."""
    [delivery] = [d async for d in world.service.store.outbox.deliveries(state="dead")]
    return delivery.event_id


async def states(world: World) -> set[DeliveryState]:
    return {d.state async for d in world.service.store.outbox.deliveries()}


class TestLogin:
    """A valid token sets a signed, HttpOnly, SameSite=Strict cookie; a wrong one is a 401."""

    async def test_login_sets_the_session_cookie(self, world: World) -> None:
        """A valid token sets a 12-hour HttpOnly Strict cookie, goes to next and logs the user."""
        client = world.client
        form = await client.get("/login", params={"next": "/orders?q=prdo_a"})
        assert form.status_code == 200
        assert 'name="token"' in form.text
        assert 'value="/orders?q=prdo_a"' in form.text
        with structlog.testing.capture_logs() as logs:
            answer = await login(client, READ_TOKEN, next="/orders?q=prdo_a")
        assert answer.status_code == 303
        assert answer.headers["location"] == "/orders?q=prdo_a"
        header = cookie_header(answer)
        attributes = {part.strip().split("=")[0] for part in header.split(";")[1:]}
        assert attributes == {"Max-Age", "Path", "HttpOnly", "SameSite"}
        assert "Max-Age=43200" in header
        assert "SameSite=Strict" in header
        assert "Path=/" in header
        assert READ_TOKEN not in header
        assert [(e["event"], e["user"]) for e in logs if e["event"] == "page_login"] == [
            ("page_login", "support-ui")
        ]
        assert READ_TOKEN not in repr(logs)
        board = await client.get("/")
        assert board.status_code == 200
        assert "support-ui" in board.text

    async def test_over_https_the_cookie_is_secure(self, world: World) -> None:
        """Behind HTTPS the session cookie is marked Secure."""
        answer = await world.client.post(
            "/login", data={"token": WRITE_TOKEN}, headers={"X-Forwarded-Proto": "https"}
        )
        assert answer.status_code == 303
        assert cookie_header(answer).endswith("; Secure")

    async def test_wrong_token_shows_the_form_again(self, world: World) -> None:
        """A wrong token gets 401 and the form again, with no cookie and the token never echoed."""
        with structlog.testing.capture_logs() as logs:
            answer = await login(world.client, "not-a-configured-token-at-all")
        assert answer.status_code == 401
        assert "set-cookie" not in answer.headers
        assert "not one of the configured" in answer.text
        assert 'name="token"' in answer.text
        assert "not-a-configured-token-at-all" not in answer.text
        assert "not-a-configured-token-at-all" not in repr(logs)
        assert [e["event"] for e in logs] == ["page_login_refused"]
        assert (await world.client.get("/")).status_code == 303

    async def test_logout_ends_the_session(self, world: World) -> None:
        """Logging out clears the cookie, so the board redirects to login again."""
        client = world.client
        await login(client, READ_TOKEN)
        board = await client.get("/")
        answer = await client.post("/logout", data={"csrf": csrf_of(board)})
        assert answer.status_code == 303
        assert answer.headers["location"] == "/login"
        assert "Max-Age=0" in cookie_header(answer)
        assert (await client.get("/")).status_code == 303

    async def test_bearer_header_opens_the_pages(self, world: World) -> None:
        """A Bearer header opens the pages; a wrong one gets an HTML 401 with a challenge."""
        client = httpx.AsyncClient(base_url=world.url, timeout=10)
        async with client:
            answer = await client.get("/", headers={"Authorization": f"Bearer {READ_TOKEN}"})
            assert answer.status_code == 200
            assert "support-ui" in answer.text
            wrong = await client.get("/", headers={"Authorization": "Bearer nope-nope-nope"})
            assert wrong.status_code == 401
            assert wrong.headers["content-type"].startswith("text/html")
            assert wrong.headers["www-authenticate"] == "Bearer"


class TestSessionCookie:
    """Only an unexpired cookie signed for a configured user's current token opens a page."""

    async def test_tampered_cookies_are_refused(self, world: World) -> None:
        """A tampered, swapped, truncated or oversized cookie is cleared and sent to login."""
        client = world.client
        await login(client, READ_TOKEN)
        value = client.cookies[COOKIE]
        payload, signature = value.split(".")
        async with httpx.AsyncClient(base_url=world.url) as other:
            other_payload = (await login(other, WRITE_TOKEN)).cookies[COOKIE].split(".")[0]
        flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
        for forged in (
            f"{payload}.{flipped}",
            f"{other_payload}.{signature}",  # the write user's name, the read user's signature
            payload,
            "garbage",
            value + "x" * 600,
        ):
            client.cookies.set(COOKIE, forged)
            answer = await client.get("/orders")
            assert answer.status_code == 303, forged
            assert answer.headers["location"] == "/login?next=%2Forders"
            assert "Max-Age=0" in cookie_header(answer)
        client.cookies.set(COOKIE, value)
        assert (await client.get("/orders")).status_code == 200

    async def test_expired_cookie_is_refused(self, world: World) -> None:
        """A cookie opens pages for twelve hours, then sends the browser to login."""
        client = world.client
        await login(client, READ_TOKEN)
        assert (await client.get("/")).status_code == 200
        with time_machine.travel(utc_now() + timedelta(hours=11, minutes=59), tick=True):
            assert (await client.get("/")).status_code == 200
        with time_machine.travel(utc_now() + timedelta(hours=12, minutes=1), tick=True):
            answer = await client.get("/")
        assert answer.status_code == 303
        assert answer.headers["location"] == "/login?next=%2F"

    async def test_cookies_outlive_a_restart_until_the_token_changes(self, world: World) -> None:
        """A cookie survives a restart with the same users but not a rotated token."""
        await login(world.client, READ_TOKEN)
        value = world.client.cookies[COOKIE]
        same = [HttpUser.model_validate(u) for u in USERS]
        rotated = [
            HttpUser.model_validate(u | {"token": "rotated-token-0123456789abcdef"})
            if u["name"] == "support-ui"
            else HttpUser.model_validate(u)
            for u in USERS
        ]
        async with serving(world.service.store, same) as (_url, client):
            client.cookies.set(COOKIE, value)
            assert (await client.get("/")).status_code == 200
        async with serving(world.service.store, rotated) as (_url, client):
            client.cookies.set(COOKIE, value)
            assert (await client.get("/")).status_code == 303


class TestRedirects:
    """A browser without a session goes to /login and comes back only to a local path."""

    async def test_unauthenticated_get_goes_to_login(self, world: World) -> None:
        """A GET without a session goes to login with next; a POST gets an HTML 401."""
        answer = await world.client.get("/orders", params={"q": "prdo_a", "state": "active"})
        assert answer.status_code == 303
        location = answer.headers["location"]
        assert urlsplit(location).path == "/login"
        assert parse_qs(urlsplit(location).query) == {"next": ["/orders?q=prdo_a&state=active"]}
        posted = await world.client.post("/dead-letters/evt_x/retry", data={"csrf": "x"})
        assert posted.status_code == 401
        assert posted.headers["content-type"].startswith("text/html")

    @pytest.mark.parametrize(
        "target",
        [
            "https://evil.example/",
            "//evil.example/path",
            "/\\evil.example",
            "javascript:alert(1)",
            "/ok\r\nSet-Cookie: x=1",
            "orders",
            "",
        ],
    )
    async def test_only_local_paths_are_followed(self, world: World, target: str) -> None:
        """A next that is not a local path leads to the board instead."""
        answer = await login(world.client, READ_TOKEN, next=target)
        assert answer.status_code == 303
        assert answer.headers["location"] == "/"
        form = await world.client.get("/login", params={"next": target})
        assert 'name="next" value="/"' in form.text

    async def test_local_paths_are_kept(self, world: World) -> None:
        """A local next path is where login redirects."""
        answer = await login(world.client, READ_TOKEN, next=f"/orders/{A}")
        assert answer.headers["location"] == f"/orders/{A}"


class TestBoard:
    """The board counts active orders per status and shows unknown, failing and latest ones."""

    async def test_strip_unknown_failing_and_latest(self, world: World) -> None:
        """The board counts active orders per status in order and lists unknown, failing, latest."""
        await login(world.client, READ_TOKEN)
        board = await world.client.get("/")
        assert board.status_code == 200
        text = board.text

        def count(status: str) -> int:
            link = esc(f"/orders?status={status}&state=active")
            found = re.search(
                re.escape(f'href="{link}">') + r'\s*<span class="count">(\d+)</span>', text
            )
            assert found is not None, status
            return int(found.group(1))

        assert count("checked") == 1
        assert count("ordered") == 1
        assert count("activated") == 0
        assert count("blocked_wim") == 0
        assert text.index(">intended<") < text.index(">waiting<") < text.index(">ordered<")
        assert text.index(">ordered<") < text.index(">activated<") < text.index(">blocked<")
        assert text.index(">blocked<") < text.index(">cancelled<")
        unknown = text[text.index('id="unknown"') : text.index('id="failing"')]
        assert esc(HOSTILE_STATUS) in unknown
        assert "%3Cscript%3E" in unknown  # its link to the search, URL-encoded
        failing = text[text.index('id="failing"') : text.index('id="deliveries"')]
        assert '<span class="badge">1</span>' in failing
        assert f'href="/orders/{F}"' in failing
        latest = text[text.index('id="latest"') :]
        assert latest.count("<tr>") == 3  # the header, then A's and H's transitions
        assert f'href="/orders/{A}"' in latest
        assert "1 dead letter" in text


class TestSearch:
    """Search by id prefix, status and state, paged by cursor like the API."""

    async def ids(self, client: httpx.AsyncClient, **params: str) -> list[str]:
        answer = await client.get("/orders", params=params)
        assert answer.status_code == 200, answer.text
        return re.findall(r'<a class="mono" href="/orders/(prdo_[a-z0-9]+)">', answer.text)

    async def test_filters(self, world: World) -> None:
        """The search filters by trimmed id prefix, status and state."""
        client = world.client
        await login(client, READ_TOKEN)
        assert await self.ids(client) == [A, B, F, H]
        assert await self.ids(client, q="prdo_b") == [B]
        assert await self.ids(client, q="  prdo_a ") == [A]
        assert await self.ids(client, status="checked") == [A]
        assert await self.ids(client, status=HOSTILE_STATUS, state="active") == [H]
        assert await self.ids(client, state="removed") == []
        assert await self.ids(client, q="prdo_x") == []

    async def test_refused_values_are_a_400_page(self, world: World) -> None:
        """A bad query, state or cursor gets an HTML 400 page with an alert."""
        await login(world.client, READ_TOKEN)
        for params in ({"q": "PRDO_A"}, {"state": "gone"}, {"cursor": "bm9wZQ"}):
            answer = await world.client.get("/orders", params=params)
            assert answer.status_code == 400, params
            assert answer.headers["content-type"].startswith("text/html")
            assert 'role="alert"' in answer.text

    async def test_pages_follow_the_api_cursor(self, world: World) -> None:
        """Search pages follow the API's cursor and show every order once, in order."""
        many = [f"prdo_p{i:04d}" for i in range(73)]
        await world.service.store.orders.watch(many, source="cli", now=utc_now())
        await login(world.client, READ_TOKEN)
        seen: list[str] = []
        url: str | None = "/orders?q=prdo_p"
        while url is not None:
            page = await world.client.get(url)
            assert page.status_code == 200
            seen += re.findall(r'<a class="mono" href="/orders/(prdo_[a-z0-9]+)">', page.text)
            found = re.search(r'<a href="([^"]+)">Next page', page.text)
            url = html.unescape(found.group(1)) if found else None
        assert seen == many
        api = await world.client.get(
            "/api/v1/orders",
            params={"q": "prdo_p", "limit": "50"},
            headers={"Authorization": f"Bearer {READ_TOKEN}"},
        )
        first = await world.client.get("/orders?q=prdo_p")
        assert f"cursor={api.json()['next_cursor']}" in html.unescape(first.text)


class TestOrderPage:
    """One order: status since when, the timeline oldest first, each transition's deliveries."""

    async def test_timeline_and_deliveries(self, world: World) -> None:
        """An order page shows the timeline oldest first and each delivery with its error."""
        await login(world.client, READ_TOKEN)
        page = await world.client.get(f"/orders/{A}")
        assert page.status_code == 200
        text = page.text
        history = await world.service.store.reports.history(A)
        assert history is not None
        [move] = history.transitions
        first, second = history.snapshots
        assert "since" in text
        timeline = text[text.index('class="timeline"') :]
        assert timeline.index("First snapshot") < timeline.index(move.event_id)
        assert timeline.index(first.observed_at.isoformat()) < timeline.index(
            second.observed_at.isoformat()
        )
        deliveries = timeline[timeline.index('class="deliveries"') :]
        assert "<td>ops</td>" in deliveries
        assert "dead" in deliveries
        assert '<td class="num">3</td>' in deliveries  # the first attempt and two retries
        [delivery] = history.deliveries[move.event_id]
        assert delivery.last_error is not None
        assert esc(delivery.last_error) in deliveries
        assert "cus_qacki3zcrkc9r41qt44ngl9d" in text

    async def test_unknown_and_malformed_ids(self, world: World) -> None:
        """An unknown order gets an HTML 404; a malformed id a short 400."""
        await login(world.client, READ_TOKEN)
        never = await world.client.get(f"/orders/{NEVER}")
        assert never.status_code == 404
        assert never.headers["content-type"].startswith("text/html")
        assert NEVER in never.text
        for bad in ("order-1", "prdo_ABC", "prdo_" + "a" * 500):
            answer = await world.client.get(f"/orders/{bad}")
            assert answer.status_code == 400, bad
            assert "invalid order id" in answer.text
            assert len(answer.text) < 5000

    async def test_malformed_ids_never_reach_the_database(
        self, world: World, tmp_path: Path
    ) -> None:
        """A malformed id is refused before the database is asked."""
        gone = Store(create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/missing/dir/x.db"))
        bearer = {"Authorization": f"Bearer {READ_TOKEN}"}
        async with serving(gone, world.users) as (_url, client):
            malformed = await client.get("/orders/prdo_NOPE", headers=bearer)
            assert malformed.status_code == 400
            valid = await client.get(f"/orders/{A}", headers=bearer)
            assert valid.status_code == 500  # this one asks the database, which is not there
            assert valid.headers["content-type"].startswith("text/html")
            assert "internal error" in valid.text
        await gone.close()


class TestDeadLetters:
    """Dead letters are listed; a write user retries them, through a cross-site-safe POST only."""

    async def test_write_user_retries(self, world: World) -> None:
        """A write user's retry makes the dead letter pending, is logged and is reported."""
        client = world.client
        await login(client, WRITE_TOKEN)
        page = await client.get("/dead-letters")
        event_id = await dead_event(world)
        assert event_id in page.text
        assert f'action="/dead-letters/{event_id}/retry"' in page.text
        with structlog.testing.capture_logs() as logs:
            answer = await client.post(
                f"/dead-letters/{event_id}/retry",
                data={"csrf": csrf_of(page)},
                headers={"Origin": world.url},
            )
        assert answer.status_code == 303
        assert parse_qs(urlsplit(answer.headers["location"]).query) == {
            "retried": [event_id],
            "pending": ["1"],
        }
        assert [(e["user"], e["action"], e["ids"]) for e in logs if e["event"] == "page_write"] == [
            ("ops-bot", "retry", [event_id])
        ]
        assert await states(world) == {DeliveryState.PENDING}
        after = await client.get(answer.headers["location"])
        assert f"Retried {event_id}: 1 delivery is pending again" in after.text
        assert "No dead letters" in after.text
        unknown = await client.post("/dead-letters/evt_nothing/retry", data={"csrf": csrf_of(page)})
        assert parse_qs(urlsplit(unknown.headers["location"]).query) == {"missing": ["evt_nothing"]}
        told = await client.get(unknown.headers["location"])
        assert "Nothing to retry for evt_nothing" in told.text
        malformed = await client.post("/dead-letters/evt%20x/retry", data={"csrf": csrf_of(page)})
        assert malformed.status_code == 400

    async def test_read_user_cannot_retry(self, world: World) -> None:
        """A read user sees no retry button, and a retry POST gets 403."""
        client = world.client
        await login(client, READ_TOKEN)
        page = await client.get("/dead-letters")
        event_id = await dead_event(world)
        assert event_id in page.text
        assert "/retry" not in page.text
        assert "needs a user with the write role" in page.text
        answer = await client.post(f"/dead-letters/{event_id}/retry", data={"csrf": csrf_of(page)})
        assert answer.status_code == 403
        assert answer.headers["content-type"].startswith("text/html")
        assert await states(world) == {DeliveryState.DEAD}

    async def test_cross_site_posts_are_refused(self, world: World) -> None:
        """POSTs without a good CSRF token or from another site get 403; Bearer ones pass."""
        client = world.client
        await login(client, WRITE_TOKEN)
        page = await client.get("/dead-letters")
        token = csrf_of(page)
        event_id = await dead_event(world)
        path = f"/dead-letters/{event_id}/retry"
        refused = [
            await client.post(path),
            await client.post(path, data={"csrf": ""}),
            await client.post(path, data={"csrf": token[:-1] + "x"}),
            await client.post(
                path, data={"csrf": token}, headers={"Origin": "https://evil.example"}
            ),
            await client.post(path, data={"csrf": token}, headers={"Origin": "null"}),
            await client.post(path, data={"csrf": token}, headers={"Sec-Fetch-Site": "cross-site"}),
            await client.post("/logout", data={"csrf": "forged"}),
        ]
        for answer in refused:
            assert answer.status_code == 403
        assert await states(world) == {DeliveryState.DEAD}
        assert (await client.get("/dead-letters")).status_code == 200  # still logged in
        async with httpx.AsyncClient(base_url=world.url) as script:
            bearer = await script.post(path, headers={"Authorization": f"Bearer {WRITE_TOKEN}"})
        assert bearer.status_code == 303  # a bearer header is no browser's ambient credential
        assert await states(world) == {DeliveryState.PENDING}

    async def test_bodies_are_bounded(self, world: World) -> None:
        """Form bodies over 1 MiB get 413, declared or streamed, and JSON bodies 415."""
        client = world.client
        await login(client, WRITE_TOKEN)
        token = csrf_of(await client.get("/dead-letters"))
        event_id = await dead_event(world)
        path = f"/dead-letters/{event_id}/retry"
        big = f"csrf={token}&pad=".encode() + b"x" * (1024 * 1024)
        declared = await client.post(path, content=big, headers=FORM)
        assert declared.status_code == 413
        assert declared.headers["content-type"].startswith("text/html")

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
            for start in range(0, len(big), 65536):
                yield big[start : start + 65536]

        streamed = await client.post(path, content=chunks(), headers=FORM)
        assert streamed.status_code == 413
        as_json = await client.post(path, json={"csrf": token})
        assert as_json.status_code == 415
        assert (await client.post("/login", content=big, headers=FORM)).status_code == 413
        assert await states(world) == {DeliveryState.DEAD}


class TestEscaping:
    """Every upstream value is shown as text: a hostile status or customer never runs."""

    async def test_hostile_values_are_text(self, world: World) -> None:
        """Hostile status and customer values are escaped as text on every page."""
        await login(world.client, READ_TOKEN)
        pages = [
            await world.client.get("/"),
            await world.client.get("/orders"),
            await world.client.get(f"/orders/{H}"),
            await world.client.get("/orders", params={"status": HOSTILE_STATUS}),
        ]
        for page in pages:
            assert page.status_code == 200
            assert "<script>" not in page.text
            assert "<img" not in page.text
            assert esc(HOSTILE_STATUS) in page.text
        assert esc(HOSTILE_CUSTOMER) in pages[2].text


class TestHeadersAndErrors:
    """Pages carry the CSP and friends and fail as HTML; the API keeps its JSON errors."""

    async def test_security_headers_and_stylesheet(self, world: World) -> None:
        """Pages send CSP and nosniff, no inline style, no script but the board's own, and CSS."""
        await login(world.client, READ_TOKEN)
        for answer in (
            await world.client.get("/"),
            await world.client.get("/login"),
            await world.client.get("/nowhere", headers={"Accept": "text/html"}),
            await world.client.get(f"/orders/{NEVER}"),
        ):
            assert answer.headers["content-security-policy"] == CSP
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert answer.headers["referrer-policy"] == "same-origin"
            assert "style=" not in answer.text  # the CSP allows no inline style
            shown = 1 if answer.url.path == "/" else 0  # the board's refresh script, no other
            assert answer.text.count("<script") == shown
            served = r'<script src="/static/refresh\.js\?v=[0-9a-f]+" defer></script>'
            assert len(re.findall(served, answer.text)) == shown
        css_link = re.search(r'href="(/static/tracker\.css\?v=[0-9a-f]+)"', answer.text)
        assert css_link is not None
        css = await world.client.get(css_link.group(1))
        assert css.status_code == 200
        assert css.headers["content-type"] == "text/css; charset=utf-8"
        assert "@media" in css.text

    async def test_error_pages_are_html_and_the_api_stays_json(self, world: World) -> None:
        """Browsers get HTML error pages, while the API and probes keep JSON errors."""
        await login(world.client, READ_TOKEN)
        missing = await world.client.get("/nowhere", headers={"Accept": "text/html"})
        assert missing.status_code == 404
        assert "<h1>404 · Not Found</h1>" in missing.text
        scripted = await world.client.get("/nowhere")  # no browser: the JSON error, as before
        assert scripted.json()["error"]["code"] == "not_found"
        wrong_method = await world.client.put("/orders")
        assert wrong_method.status_code == 405
        assert wrong_method.headers["content-type"].startswith("text/html")
        api = await world.client.get(f"/api/v1/orders/{NEVER}")
        assert api.status_code == 401
        assert api.json()["error"]["code"] == "unauthorized"
        api_missing = await world.client.get("/api/v1/nowhere")
        assert api_missing.status_code == 404
        assert api_missing.json()["error"]["code"] == "not_found"
        assert (await world.client.get("/healthz")).json() == {"status": "ok"}
        browser = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
        for answer in (  # a browser asking the API or a probe the wrong way still gets JSON
            await world.client.get("/api/v1/deliveries/evt_x/retry", headers=browser),
            await world.client.post("/healthz", headers=browser),
            await world.client.get("/api/v1/nowhere", headers=browser),
        ):
            assert answer.status_code in {404, 405}
            assert answer.json()["error"]["code"] in {"not_found", "method_not_allowed"}


class TestLatestTransitions:
    """The store's latest transitions: the newest first, at most ``limit``."""

    async def test_latest_first(self, world: World) -> None:
        """The latest transitions come newest first, at most limit of them."""
        store = world.service.store
        world.scripted.script(B, ok("checked"))
        await poll(world.service, B)
        latest = await store.reports.latest_transitions(limit=10)
        assert sorted(t.order_id for t in latest[1:]) == [A, H]
        assert latest[0].order_id == B
        assert (latest[0].from_status, latest[0].to_status) == ("ordered", "checked")
        assert latest[0].detected_at > latest[1].detected_at >= latest[2].detected_at
        assert await store.reports.latest_transitions(limit=1) == latest[:1]
        assert await store.reports.latest_transitions(limit=0) == []


async def report_stuck(service: Service, thresholds: dict[str, timedelta]) -> None:
    """Report, as the daemon's stuck check does, the stays past ``thresholds`` two hours on."""
    store = service.store
    now = utc_now() + timedelta(hours=2)
    stays = await store.events.stuck(thresholds, now=now, limit=100)
    made = [
        (s, alerts.stuck(order_id=s.order_id, status=s.status, since=s.since,
                         threshold=thresholds[s.status], now=now, routes={}))
        for s in stays
    ]  # fmt: skip
    await store.events.report_stuck(made)


class TestStuck:
    """The board's stuck panel and `/stuck`: the orders stuck now, longest first."""

    @asynccontextmanager
    async def stuck_pages(self, world: World) -> AsyncIterator[httpx.AsyncClient]:
        """B's stay in ordered reported stuck, and pages that know `ordered = "1h"`."""
        await report_stuck(world.service, {"ordered": timedelta(hours=1)})
        app = build_app(
            store=world.service.store,
            metrics=Metrics(),
            users=world.users,
            targets=lambda: {"ordered": timedelta(hours=1)},
        )
        async with app_client(app) as (_url, client):
            await login(client, READ_TOKEN)
            yield client

    async def test_board_panel_and_page(self, world: World) -> None:
        """The board counts the stuck order and links to /stuck, which lists it with its status,
        since when, for how long and the threshold; the others are not listed."""
        async with self.stuck_pages(world) as client:
            board = await client.get("/")
            page = await client.get("/stuck")
        panel = board.text[board.text.index('id="stuck"') : board.text.index('id="deliveries"')]
        assert '<span class="badge">1</span>' in panel
        assert 'href="/stuck"' in panel
        assert f'href="/orders/{B}"' in panel
        assert f'href="/orders/{A}"' not in panel
        assert page.status_code == 200
        assert page.headers["content-security-policy"] == CSP
        table = page.text[page.text.index('id="stuck-orders"') :]
        assert table.count("<tr data-order=") == 1
        row = table[table.index(f'data-order="{B}"') :]
        row = row[: row.index("</tr>")]
        assert ">ordered<" in row
        assert "1h 0m" in row  # the threshold
        order = await world.service.store.orders.get(B)
        assert order is not None
        assert order.last_change_at is not None
        assert f'datetime="{order.last_change_at.isoformat()}"' in row

    async def test_nothing_stuck(self, world: World) -> None:
        """With no stuck order the panel and the page say so."""
        await login(world.client, READ_TOKEN)
        board = await world.client.get("/")
        page = await world.client.get("/stuck")
        panel = board.text[board.text.index('id="stuck"') : board.text.index('id="deliveries"')]
        assert '<span class="badge">0</span>' in panel
        assert "None: no active order stayed longer" in page.text

    async def test_login_and_links_it_did_not_make(self, world: World) -> None:
        """/stuck needs a login, and a page link not made here is a 400 page."""
        answer = await world.client.get("/stuck")
        assert answer.status_code == 303
        assert answer.headers["location"] == "/login?next=%2Fstuck"
        await login(world.client, READ_TOKEN)
        foreign = await world.client.get("/stuck", params={"cursor": "bzpwcmRvX2E"})
        assert foreign.status_code == 400
        assert "text/html" in foreign.headers["content-type"]
