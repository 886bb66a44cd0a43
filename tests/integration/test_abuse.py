"""Hostile clients of the listener's routes, on the real listener over SQLite and PostgreSQL.

Unread exports, token guessing, copied cookies, deep JSON, large forms: none may stop the
watching, hold the daemon's database connections, grow the process or outlive a logout.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import structlog
from pydantic import SecretStr
from sqlalchemy import insert

from tests.users import READ_TOKEN, WRITE_TOKEN
from tracker.config import Address, HttpUser
from tracker.store import Store, listener_store, open_store
from tracker.store.tables import snapshots, transitions, watched_orders
from tracker.web import Metrics, build_app, listening
from tracker.web.auth import Users
from tracker.web.bodies import MAX_DEPTH
from tracker.web.hooks import signed_header
from tracker.web.sessions import COOKIE
from tracker.web.throttle import FREE_FAILURES, REFILL_SECONDS, Throttle

#: Every test here runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.usefixtures("database")

A = "prdo_aaaaaaaaaaaaaaaaaaaaaaaa"
T0 = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
OTHER_READ_TOKEN = "read-token-other-5c1e9a7d3b"
HOOK_SECRET = "hook-secret-for-abuse-tests"
#: Transitions to export: far more than a stalled client's socket buffers hold.
EXPORTED = 3_000
#: Seconds a test waits for what must happen at all.
PATIENCE = 20.0


def user(name: str, token: str, role: str) -> HttpUser:
    return HttpUser(name=name, token=SecretStr(token), role=role)  # type: ignore[arg-type]


READER = user("support-ui", READ_TOKEN, "read")
OTHER_READER = user("analyst", OTHER_READ_TOKEN, "read")
WRITER = user("ops-bot", WRITE_TOKEN, "write")


@dataclass
class Clock:
    """The throttle's clock, moved by the test."""

    now: float = 1_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    """The app on the real listener over a store of its own (the listener's small pool)."""

    url: str
    port: int
    store: Store
    users: Users
    clock: Clock
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    def client(self, **headers: str) -> httpx.AsyncClient:
        made = httpx.AsyncClient(base_url=self.url, timeout=PATIENCE, headers=headers)
        self.clients.append(made)
        return made


async def seed(store_url: str) -> None:
    """One watched order with :data:`EXPORTED` transitions."""
    async with open_store(store_url) as store, store.reading() as conn:
        await conn.execute(
            insert(watched_orders).values(order_id=A, active=True, source="cli", added_at=T0)
        )
        await conn.execute(insert(snapshots).values(id=1, order_id=A, observed_at=T0, body=b""))
        await conn.execute(
            insert(transitions),
            [
                {
                    "event_id": f"evt_{n:08d}",
                    "order_id": A,
                    "from_status": "ordered",
                    "to_status": "checked",
                    "kind": "forward",
                    "skipped": "",
                    "detected_at": T0 + timedelta(seconds=n),
                    "snapshot_id": 1,
                }
                for n in range(EXPORTED)
            ],
        )
        await conn.commit()


@asynccontextmanager
async def served(database: str) -> AsyncIterator[World]:
    """The listener over ``database``, seeded, with a throttle on a clock the test moves."""
    await seed(database)
    clock = Clock()
    async with listener_store(database) as store:
        users = Users(
            [READER, OTHER_READER, WRITER], logins=store.logins, throttle=Throttle(clock=clock)
        )
        app = build_app(
            store=store, metrics=Metrics(), users=users, webhook_secret=SecretStr(HOOK_SECRET)
        )
        async with listening(app, Address("127.0.0.1", 0)) as url:
            world = World(
                url=url, port=int(url.rsplit(":", 1)[1]), store=store, users=users, clock=clock
            )
            try:
                yield world
            finally:
                for client in world.clients:
                    await client.aclose()


@pytest.fixture
async def world(database: str) -> AsyncIterator[World]:
    async with served(database) as made:
        yield made


async def unread_export(port: int, token: str) -> socket.socket:
    """A client that asks for the whole export and never reads a byte of it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)  # noqa: FBT003 - the socket module's own signature
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    head = (
        "GET /api/v1/transitions?since=2000-01-01 HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {token}\r\n\r\n"
    )
    await loop.sock_sendall(sock, head.encode())
    return sock


class TestExports:
    """A user's unread exports hold no database connection, and a user has two at most."""

    async def test_unread_exports_hold_no_connection_and_a_third_is_refused(
        self, world: World
    ) -> None:
        """Four stalled exports leave the listener's pool free; a user's third gets 429."""
        stalled = [
            await unread_export(world.port, token)
            for token in (READ_TOKEN, READ_TOKEN, OTHER_READ_TOKEN, OTHER_READ_TOKEN)
        ]
        try:
            reader = world.client(Authorization=f"Bearer {READ_TOKEN}")
            async with asyncio.timeout(PATIENCE):
                while True:  # until both of its exports stream (they counted against it)
                    third = await reader.get("/api/v1/transitions", params={"since": "2000-01-01"})
                    if third.status_code == 429:
                        break
                    assert third.status_code == 200
            assert third.headers["retry-after"] == "5"
            assert "2 exports already" in third.json()["error"]["message"]
            # The listener's pool has 4 connections: four stalled exports hold none of them.
            for _ in range(8):
                listed = await reader.get("/api/v1/orders")
                assert listed.status_code == 200
            assert [o["order_id"] for o in listed.json()["items"]] == [A]
        finally:
            for sock in stalled:
                sock.close()

    async def test_an_ended_export_frees_its_slot(self, world: World) -> None:
        """A user whose exports were read to the end may export again at once."""
        reader = world.client(Authorization=f"Bearer {READ_TOKEN}")
        for _ in range(4):
            whole = await reader.get("/api/v1/transitions", params={"since": "2000-01-01"})
            assert whole.status_code == 200
            assert len(whole.text.splitlines()) == EXPORTED


class TestGuessing:
    """Wrong tokens from one address are answered 429 after a few, before they are checked."""

    async def test_login_guesses_are_throttled_and_logged_as_counts(self, world: World) -> None:
        """After the free failures, even the right token waits; the log has one line, not 50."""
        browser = world.client()
        with structlog.testing.capture_logs() as logs:
            answers = [
                (await browser.post("/login", data={"token": f"guess-{n:04d}-xxxxxxxx"}))
                for n in range(50)
            ]
            right = await browser.post("/login", data={"token": READ_TOKEN})
        codes = [a.status_code for a in answers]
        assert codes == [401] * FREE_FAILURES + [429] * (50 - FREE_FAILURES)
        assert right.status_code == 429  # not even checked
        assert int(right.headers["retry-after"]) >= 1
        assert [e["event"] for e in logs if e["event"].endswith("_refused")] == [
            "page_login_refused",
            "auth_refused",
        ]
        # Once the bucket refills, the right token logs in.
        world.clock.now += REFILL_SECONDS
        assert (await browser.post("/login", data={"token": READ_TOKEN})).status_code == 303

    async def test_api_bearer_guesses_are_throttled(self, world: World) -> None:
        """Wrong bearer tokens get 401 a few times, then 429 with Retry-After."""
        codes = [
            (
                await world.client(Authorization=f"Bearer wrong-{n}").get("/api/v1/orders")
            ).status_code
            for n in range(FREE_FAILURES + 2)
        ]
        assert codes == [401] * FREE_FAILURES + [429, 429]

    async def test_unsigned_hooks_are_throttled(self, world: World) -> None:
        """Unsigned webhooks get 401 a few times, then 429; a signed one later is taken."""
        poster = world.client()
        body = json.dumps({"id": "evt_x", "context": {"meter_order": A}}).encode()
        codes = [
            (
                await poster.post(
                    "/hooks/nomos",
                    content=body,
                    headers={"X-Nomos-Signature": "t=1,v1=" + "0" * 64},
                )
            ).status_code
            for _ in range(FREE_FAILURES + 2)
        ]
        assert codes == [401] * FREE_FAILURES + [429, 429]
        world.clock.now += REFILL_SECONDS
        header = signed_header(HOOK_SECRET.encode(), body, int(time.time()))
        taken = await poster.post(
            "/hooks/nomos", content=body, headers={"X-Nomos-Signature": header}
        )
        assert taken.status_code == 202


class TestSessions:
    """A session ends for every copy of its cookie at logout, and with its user's token."""

    async def login(self, world: World, token: str) -> tuple[httpx.AsyncClient, str]:
        browser = world.client()
        answer = await browser.post("/login", data={"token": token})
        assert answer.status_code == 303
        return browser, browser.cookies[COOKIE]

    async def test_logout_ends_every_copy_of_the_cookie(self, world: World) -> None:
        """A cookie copied before logout no longer opens a page after it."""
        browser, cookie = await self.login(world, READ_TOKEN)
        copy = world.client()
        copy.cookies.set(COOKIE, cookie)
        assert (await copy.get("/")).status_code == 200
        board = await browser.get("/")
        token = board.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        assert (await browser.post("/logout", data={"csrf": token})).status_code == 303
        assert (await copy.get("/")).status_code == 303  # to /login
        assert (await copy.get("/")).headers["location"].startswith("/login")

    async def test_a_reload_ends_a_removed_users_sessions_and_takes_new_tokens(
        self, world: World
    ) -> None:
        """After a reload, a changed token's old token and cookie fail, the new token works,
        and a removed user's cookie fails too."""
        reader, reader_cookie = await self.login(world, READ_TOKEN)
        _writer, writer_cookie = await self.login(world, WRITE_TOKEN)
        rotated = user("support-ui", "read-token-rotated-0a1b2c3d", "read")
        ended = world.users.replace([rotated, OTHER_READER])
        assert ended == ["ops-bot", "support-ui"]
        for cookie in (reader_cookie, writer_cookie):
            copy = world.client()
            copy.cookies.set(COOKIE, cookie)
            assert (await copy.get("/")).status_code == 303
        old = world.client(Authorization=f"Bearer {READ_TOKEN}")
        new = world.client(Authorization=f"Bearer {rotated.token.get_secret_value()}")
        assert (await old.get("/api/v1/orders")).status_code == 401
        assert (await new.get("/api/v1/orders")).status_code == 200
        assert (
            await reader.post("/login", data={"token": "read-token-rotated-0a1b2c3d"})
        ).status_code == 303


class TestBodies:
    """Bodies are parsed within bounds: depth, size and the memory all bodies hold at once."""

    async def test_deep_json_is_a_400_not_a_crash(self, world: World) -> None:
        """60 KB of '[' to the API and to the hook is refused as too deep (400)."""
        deep = b"[" * 60_000
        writer = world.client(Authorization=f"Bearer {WRITE_TOKEN}")
        answer = await writer.post(
            "/api/v1/orders", content=deep, headers={"Content-Type": "application/json"}
        )
        assert answer.status_code == 400
        assert f"deeper than {MAX_DEPTH}" in answer.json()["error"]["message"]
        header = signed_header(HOOK_SECRET.encode(), deep, int(time.time()))
        hooked = await world.client().post(
            "/hooks/nomos", content=deep, headers={"X-Nomos-Signature": header}
        )
        assert hooked.status_code == 400

    async def test_a_large_login_form_is_refused_unread(self, world: World) -> None:
        """A 512 KiB login body is 413 on its declared length (forms hold a few KiB)."""
        answer = await world.client().post(
            "/login",
            content=b"token=" + b"x" * (512 * 1024),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert answer.status_code == 413


class TestApiHeaders:
    """Authenticated API answers are neither sniffed nor cached."""

    async def test_nosniff_and_no_store_on_answers_and_errors(self, world: World) -> None:
        """A 200 and a 401 under /api/v1 both carry nosniff and no-store."""
        for client in (world.client(Authorization=f"Bearer {READ_TOKEN}"), world.client()):
            answer = await client.get("/api/v1/orders")
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert answer.headers["cache-control"] == "no-store"
