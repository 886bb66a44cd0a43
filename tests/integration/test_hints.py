"""Push hints at POST /hooks/nomos on a real uvicorn server and a real client, on both databases."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from starlette.responses import Response

from tests.outbox import poll
from tests.support import (
    ROOT,
    ScriptedUpstream,
    app_client,
    make_settings,
    ok,
    settings_mapping,
    stall,
    tracker_cli,
    write_config,
)
from tracker.clock import utc_now
from tracker.config import Settings
from tracker.service import Service, open_service
from tracker.store import Store, open_store
from tracker.store.hints import HINT_RETENTION
from tracker.web import Metrics, build_app
from tracker.web.hooks import MAX_BODY, TOLERANCE, hook_routes, signed_header

#: Every test here runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.usefixtures("database")

A = "prdo_aaaaaaaaaaaaaaaaaaaaaaaa"
B = "prdo_bbbbbbbbbbbbbbbbbbbbbbbb"
NEVER = "prdo_neverwatchedneverwatched"
SECRET = "nomos-hint-secret-5e1f9a7c3b"
KEY = SECRET.encode()
Upstream = tuple[ScriptedUpstream, str]


def hint_body(order_id: str = A, event_id: str = "evt_first", **extra: Any) -> bytes:
    """A webhook body as the provider sends it."""
    body = {
        "id": event_id,
        "timestamp": int(time.time()),
        "topic": "meter_order.scheduled",
        "context": {"meter_order": order_id},
    }
    return json.dumps(body | extra).encode()


def signed(body: bytes, *, key: bytes = KEY, at: float | None = None) -> dict[str, str]:
    """The headers of a webhook signed with ``key`` at ``at`` (default: now)."""
    return {
        "X-Nomos-Signature": signed_header(key, body, int(time.time() if at is None else at)),
        "Content-Type": "application/json",
    }


@dataclass
class World:
    """A served app beside two watched orders, each polled once (next poll in an hour)."""

    client: httpx.AsyncClient
    service: Service
    metrics: Metrics
    scripted: ScriptedUpstream

    @property
    def store(self) -> Store:
        return self.service.store

    async def next_poll(self, order_id: str) -> datetime:
        order = await self.store.orders.get(order_id)
        assert order is not None
        assert order.next_poll_at is not None
        return order.next_poll_at

    async def hint(self, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
        return await self.client.post(
            "/hooks/nomos", content=body, headers=signed(body) if headers is None else headers
        )


def hint_settings(tmp_path: Path, url: str, **sections: Any) -> Settings:
    """An hour between polls, so only a hint makes an order due soon."""
    polling = {"interval": "1h", "jitter": 0} | sections.pop("polling", {})
    return make_settings(
        tmp_path,
        url,
        upstream={"webhook_secret": SECRET, "timeout": 5},
        polling=polling,
        http={"listen": "127.0.0.1:0"},
        **sections,
    )


@asynccontextmanager
async def serving(
    store: Store, settings: Settings, metrics: Metrics
) -> AsyncIterator[httpx.AsyncClient]:
    """The app as ``tracker run`` builds it, on a free loopback port, and a client for it."""
    app = build_app(store=store, metrics=metrics, webhook_secret=settings.upstream.webhook_secret)
    async with app_client(app) as (_url, client):
        yield client


@pytest.fixture
async def world(upstream: Upstream, tmp_path: Path) -> AsyncIterator[World]:
    scripted, url = upstream
    scripted.script(A, ok("ordered"))
    scripted.script(B, ok("ordered"))
    settings = hint_settings(tmp_path, url)
    metrics = Metrics()
    async with open_service(settings) as service:
        await service.store.orders.watch([A, B], source="cli", now=utc_now())
        await poll(service, A, B)
        async with serving(service.store, settings, metrics) as client:
            world = World(client=client, service=service, metrics=metrics, scripted=scripted)
            assert await world.next_poll(A) > utc_now() + timedelta(minutes=50)
            yield world


def events(logs: Sequence[Mapping[str, Any]], prefix: str = "hint_") -> list[Mapping[str, Any]]:
    return [entry for entry in logs if entry["event"].startswith(prefix)]


class TestAccepted:
    """A signed hint about a watched order makes it due now; its topic is only logged."""

    async def test_watched_order_becomes_due(self, world: World) -> None:
        """A signed hint makes only its order due now, logs the topic and stores no status."""
        with structlog.testing.capture_logs() as logs:
            answer = await world.hint(hint_body(A, "evt_1"))
        assert answer.status_code == 202
        assert answer.json() == {"status": "accepted"}
        assert await world.next_poll(A) <= utc_now()
        assert await world.next_poll(B) > utc_now() + timedelta(minutes=50)  # only A
        [line] = events(logs)
        assert line["event"] == "hint_accepted"
        assert (line["event_id"], line["order_id"]) == ("evt_1", A)
        assert line["topic"] == "meter_order.scheduled"
        assert line["outcome"] == "due"
        assert await world.store.hints.hinted(A) == [("evt_1", False)]
        order = await world.store.orders.get(A)
        assert order is not None
        assert order.status == "ordered"  # the topic is never stored as a status

    async def test_any_matching_v1_signature_is_enough(self, world: World) -> None:
        """One matching v1 signature among several, in any case, is enough."""
        body = hint_body(A, "evt_rolled")
        header = signed(body)["X-Nomos-Signature"]
        stamp, good = header.split(",")
        wrong = signed(body, key=b"the-previous-secret")["X-Nomos-Signature"].split(",")[1]
        for value in (f"{stamp},{wrong},{good}", f"{stamp}, v0=abc, v1={good[3:].upper()}"):
            answer = await world.hint(body, {"X-Nomos-Signature": value})
            assert answer.status_code == 202, answer.text
        assert await world.next_poll(A) <= utc_now()

    async def test_replays_change_nothing(self, world: World) -> None:
        """A replayed event is accepted but logged as a replay and moves no poll."""
        body = hint_body(A, "evt_once")
        assert (await world.hint(body)).status_code == 202
        await poll(world.service, A)  # the hinted poll: next one in an hour again
        after_poll = await world.next_poll(A)
        assert after_poll > utc_now() + timedelta(minutes=50)
        with structlog.testing.capture_logs() as logs:
            # The same event again, as redelivered later: a new timestamp and signature.
            again = await world.hint(body, signed(body, at=time.time() + 2))
        assert again.status_code == 202
        assert again.json() == {"status": "accepted"}
        assert await world.next_poll(A) == after_poll
        assert [line["event"] for line in events(logs)] == ["hint_replayed"]
        assert await world.store.hints.hinted(A) == [("evt_once", False)]

    async def test_unwatched_and_removed_orders_are_ignored(self, world: World) -> None:
        """A hint for an unwatched or removed order is accepted, ignored and not remembered."""
        await world.store.orders.unwatch([B], now=utc_now())
        before = await world.next_poll(B)
        with structlog.testing.capture_logs() as logs:
            never = await world.hint(hint_body(NEVER, "evt_never"))
            removed = await world.hint(hint_body(B, "evt_removed"))
        assert (never.status_code, removed.status_code) == (202, 202)
        assert await world.store.orders.get(NEVER) is None  # not watched by a hint
        assert await world.store.hints.hinted(NEVER) == []  # nor remembered: a flood grows nothing
        assert await world.next_poll(B) == before
        assert [line["event"] for line in events(logs)] == ["hint_ignored", "hint_ignored"]
        assert [order.order_id async for order in world.store.orders.watched()] == [A, B]


# Refused before the body is believed: each makes the headers for a body, answered 401.
def _unsigned(_body: bytes) -> dict[str, str]:
    return {"Content-Type": "application/json"}


def _wrong_secret(body: bytes) -> dict[str, str]:
    return signed(body, key=b"not-the-secret")


def _other_body(body: bytes) -> dict[str, str]:
    return signed(body + b" ")


# An hour away, far outside the tolerance however slow the machine; the edge itself is judged
# under a clock the test holds (TestTolerance).
def _stale(body: bytes) -> dict[str, str]:
    return signed(body, at=time.time() - 3600)


def _future(body: bytes) -> dict[str, str]:
    return signed(body, at=time.time() + 3600)


def _header(value: str) -> Callable[[bytes], dict[str, str]]:
    return lambda _body: {"X-Nomos-Signature": value}


def _no_timestamp(body: bytes) -> dict[str, str]:
    return {"X-Nomos-Signature": signed(body)["X-Nomos-Signature"].split(",")[1]}


def _two_timestamps(body: bytes) -> dict[str, str]:
    return {"X-Nomos-Signature": f"t={int(time.time())}," + signed(body)["X-Nomos-Signature"]}


UNAUTHORIZED: list[tuple[str, Callable[[bytes], dict[str, str]]]] = [
    ("unsigned", _unsigned),
    ("wrong-secret", _wrong_secret),
    ("signed-another-body", _other_body),
    ("stale", _stale),
    ("future", _future),
    ("garbage", _header("garbage")),
    ("empty", _header("")),
    ("timestamp-not-a-number", _header("t=soon,v1=" + "0" * 64)),
    ("short-signature", _header(f"t={int(time.time())},v1=abc")),
    ("huge-header", _header(f"t={int(time.time())}," + ",".join(["v1=" + "0" * 64] * 40))),
    ("no-timestamp", _no_timestamp),
    ("two-timestamps", _two_timestamps),
]


class TestTolerance:
    """A signature's timestamp may lie TOLERANCE seconds either way from the hook's clock."""

    @pytest.mark.parametrize(
        ("offset", "status"),
        [(-TOLERANCE - 1, 401), (-TOLERANCE, 202), (TOLERANCE, 202), (TOLERANCE + 1, 401)],
        ids=["stale-by-one", "oldest-allowed", "newest-allowed", "ahead-by-one"],
    )
    async def test_edge(self, upstream: Upstream, tmp_path: Path, offset: int, status: int) -> None:
        """A timestamp exactly TOLERANCE seconds off is accepted, one second more is refused."""
        _scripted, url = upstream
        settings = hint_settings(tmp_path, url)
        assert settings.upstream.webhook_secret is not None
        frozen = utc_now().replace(microsecond=0)
        async with open_store(settings.database.url) as store:
            await store.orders.watch([A], source="cli", now=frozen)
            app = build_app(
                store=store,
                metrics=Metrics(),
                webhook_secret=settings.upstream.webhook_secret,
                clock=lambda: frozen,
            )
            async with app_client(app) as (_url, client):
                body = hint_body(A, "evt_edge")
                at = frozen.timestamp() + offset
                answer = await client.post(
                    "/hooks/nomos", content=body, headers=signed(body, at=at)
                )
            assert answer.status_code == status, answer.text
            assert await store.hints.hinted(A) == ([("evt_edge", False)] if status == 202 else [])


class TestRefused:
    """Unsigned, mis-signed, stale or malformed hints are refused, change nothing, log once."""

    @pytest.mark.parametrize(("name", "headers"), UNAUTHORIZED, ids=[u[0] for u in UNAUTHORIZED])
    async def test_unauthorized(
        self, world: World, name: str, headers: Callable[[bytes], dict[str, str]]
    ) -> None:
        """A missing, wrong or stale signature gets 401, changes nothing and echoes no secret."""
        body = hint_body(A, f"evt_{name.replace('-', '_')}")
        before = await world.next_poll(A)
        sent = headers(body)
        with structlog.testing.capture_logs() as logs:
            answer = await world.hint(body, sent)
        assert answer.status_code == 401, answer.text
        assert answer.json()["error"]["code"] == "unauthorized"
        assert answer.json()["error"]["message"]
        assert await world.next_poll(A) == before
        assert await world.store.hints.hinted(A) == []
        [line] = events(logs)
        assert line["event"] == "hint_refused"
        assert line["status"] == 401
        assert line["reason"] == answer.json()["error"]["message"]
        printed = json.dumps(logs, default=str) + answer.text
        assert SECRET not in printed
        for value in sent.values():
            for part in value.split(","):
                if part.strip().startswith("v1=") and len(part.strip()) > 10:
                    assert part.strip()[3:] not in printed  # no signature is echoed

    @pytest.mark.parametrize(
        ("body", "status"),
        [
            (b"not json", 400),
            (b"\xff\xfe", 400),
            (b'["evt_x"]', 422),
            (json.dumps({"context": {"meter_order": A}}).encode(), 422),
            (json.dumps({"id": "evt with spaces", "context": {"meter_order": A}}).encode(), 422),
            (json.dumps({"id": "evt_" + "x" * 70, "context": {"meter_order": A}}).encode(), 422),
            (json.dumps({"id": 7, "context": {"meter_order": A}}).encode(), 422),
            (json.dumps({"id": "evt_x"}).encode(), 422),
            (json.dumps({"id": "evt_x", "context": {}}).encode(), 422),
            (json.dumps({"id": "evt_x", "context": {"meter_order": 12}}).encode(), 422),
            (json.dumps({"id": "evt_x", "context": {"meter_order": "prdo_BAD!"}}).encode(), 422),
            (json.dumps({"id": "evt_x", "context": "prdo_x"}).encode(), 422),
        ],
        ids=[
            "not-json",
            "not-utf8",
            "not-an-object",
            "no-id",
            "id-charset",
            "id-length",
            "id-not-a-string",
            "no-context",
            "no-order",
            "order-not-a-string",
            "bad-order-id",
            "context-not-an-object",
        ],
    )
    async def test_signed_but_invalid_bodies(self, world: World, body: bytes, status: int) -> None:
        """A signed but invalid body is refused with its status and changes nothing."""
        before = await world.next_poll(A)
        with structlog.testing.capture_logs() as logs:
            answer = await world.hint(body)
        assert answer.status_code == status, answer.text
        assert set(answer.json()["error"]) == {"code", "message"}
        assert await world.next_poll(A) == before
        assert await world.store.hints.hinted(A) == []
        [line] = events(logs)
        assert (line["event"], line["status"]) == ("hint_refused", status)
        assert SECRET not in json.dumps(logs, default=str)

    async def test_oversize_body(self, world: World) -> None:
        """An oversize body gets 413, with or without a length, and is logged once."""
        body = hint_body(A, "evt_big", padding="x" * MAX_BODY)
        before = await world.next_poll(A)
        with structlog.testing.capture_logs() as logs:
            answer = await world.hint(body)
            # Without a declared length too (chunked): cut off at the same bound.
            streamed = await world.client.post(
                "/hooks/nomos", content=chunks(body), headers=signed(body)
            )
        assert (answer.status_code, streamed.status_code) == (413, 413)
        assert answer.json()["error"]["code"] == "request_entity_too_large"
        assert await world.next_poll(A) == before
        # The first refusal is logged at once; the second is counted into the minute's tally.
        assert [line["status"] for line in events(logs)] == [413]

    async def test_counted_by_result(self, world: World) -> None:
        """Hints are counted in metrics by result: accepted, ignored, replayed, refused."""
        await world.hint(hint_body(A, "evt_m1"))
        await world.hint(hint_body(A, "evt_m1"))
        await world.hint(hint_body(NEVER, "evt_m2"))
        await world.hint(hint_body(A, "evt_m3"), {})
        scraped = (await world.client.get("/metrics")).text
        for result in ("accepted", "ignored", "replayed", "refused"):
            assert f'tracker_hints_total{{result="{result}"}} 1.0' in scraped


class TestWithoutSecret:
    """Without ``webhook_secret`` there is no hint route at all: 404."""

    async def test_no_route(self, upstream: Upstream, tmp_path: Path) -> None:
        """Without a webhook secret the hint route is absent and answers 404."""
        _scripted, url = upstream
        settings = make_settings(tmp_path, url, http={"listen": "127.0.0.1:0"})
        assert settings.upstream.webhook_secret is None
        async with (
            open_store(settings.database.url) as store,
            serving(store, settings, Metrics()) as client,
        ):
            assert hook_routes(store=store, secret=None) == []
            body = hint_body(A, "evt_nowhere")
            answer = await client.post("/hooks/nomos", content=body, headers=signed(body))
            assert answer.status_code == 404
            assert await store.hints.hinted(A) == []


class TestInFlight:
    """A hint that arrives while its order is being polled leads to another poll after it."""

    async def test_hint_during_a_poll_is_not_lost(self, world: World) -> None:
        """A hint during a poll of its order makes the order due again after that poll."""
        # The poll's answer is the old status, sent before the change the hint announces.
        world.scripted.script(A, stall(1.0, ok("ordered")))
        polls_before = world.scripted.polls(A)
        polling = asyncio.create_task(poll(world.service, A))
        for _ in range(100):
            if world.scripted.polls(A) > polls_before:
                break
            await asyncio.sleep(0.02)
        with structlog.testing.capture_logs() as logs:
            answer = await world.hint(hint_body(A, "evt_during"))
        assert answer.status_code == 202
        assert not polling.done()  # the hint came while the request was in flight
        [line] = events(logs)
        assert line["outcome"] == "in_flight"
        assert await world.store.hints.hinted(A) == [("evt_during", True)]
        await asyncio.wait_for(polling, 10)
        order = await world.store.orders.get(A)
        assert order is not None
        assert order.consecutive_failures == 0  # the poll succeeded, with the old answer
        # Without the hint this poll would set the next one an hour away.
        assert await world.next_poll(A) <= utc_now()
        assert await world.store.hints.hinted(A) == [("evt_during", False)]
        world.scripted.script(A, ok("ordered"))
        await poll(world.service, A)  # the hinted poll settles nothing more: an hour again
        assert await world.next_poll(A) > utc_now() + timedelta(minutes=50)


class TestSharedDatabase:
    """Two processes' stores on one database take the same event once between them."""

    async def test_concurrent_deliveries_of_one_event(self, world: World, tmp_path: Path) -> None:
        """One event posted to two stores at once is accepted once, and a restart remembers it."""
        settings = world.service.settings
        async with (
            open_store(settings.database.url) as other,
            serving(other, settings, Metrics()) as second,
        ):
            body = hint_body(A, "evt_twice")
            with structlog.testing.capture_logs() as logs:
                answers = await asyncio.gather(
                    *(
                        client.post("/hooks/nomos", content=body, headers=signed(body))
                        for client in (world.client, second, world.client, second)
                    )
                )
            assert [a.status_code for a in answers] == [202] * 4
            outcomes = sorted(line["event"] for line in events(logs))
            assert outcomes == ["hint_accepted"] + ["hint_replayed"] * 3
            assert await other.hints.hinted(A) == [("evt_twice", False)]
        # A restart remembers it too.
        async with open_store(settings.database.url) as restarted:
            assert await restarted.hints.hint(event_id="evt_twice", order_id=A, now=utc_now()) == (
                "replayed"
            )

    async def test_old_hints_are_pruned(self, world: World) -> None:
        """Hints older than the retention are pruned when a new one is stored."""
        long_ago = utc_now() - HINT_RETENTION - timedelta(minutes=1)
        for n in range(3):
            await world.store.hints.hint(event_id=f"evt_old{n}", order_id=A, now=long_ago)
        assert len(await world.store.hints.hinted(A)) == 3
        assert await world.store.hints.hint(event_id="evt_new", order_id=A, now=utc_now()) in {
            "due",
            "already_due",
        }
        assert await world.store.hints.hinted(A) == [("evt_new", False)]


class TestEndToEnd:
    """A daemon polling hourly stores a change within seconds of the provider's hint."""

    async def test_hint_to_transition(self, upstream: Upstream, tmp_path: Path) -> None:
        """A hint makes an hourly daemon poll at once and store the change, with one extra poll."""
        scripted, url = upstream
        status = {A: "ordered"}

        async def answer(order_id: str) -> Response:
            return await ok(status[order_id])(order_id)

        scripted.script(A, answer)
        settings = hint_settings(tmp_path, url)
        async with open_service(settings) as service:
            await service.store.orders.watch([A], source="cli", now=utc_now())
            stop = asyncio.Event()
            running = asyncio.create_task(service.daemon().run(stop))
            try:
                async with serving(service.store, settings, Metrics()) as client:
                    await until(lambda: scripted.polls(A) == 1)
                    await until_async(lambda: _status(service.store, A), "ordered")
                    status[A] = "checked"
                    body = hint_body(A, "evt_e2e")
                    posted = await client.post("/hooks/nomos", content=body, headers=signed(body))
                    assert posted.status_code == 202
                    await until_async(lambda: _status(service.store, A), "checked")
            finally:
                stop.set()
                await asyncio.wait_for(running, 10)
            history = await service.store.reports.history(A)
            assert history is not None
            [moved] = history.transitions
            assert (moved.from_status, moved.to_status) == ("ordered", "checked")
            assert scripted.polls(A) == 2  # one at the start, one for the hint; no more


@dataclass
class Running:
    """A `tracker` command in its own process: its listener's URL and its JSON log lines."""

    url: str
    lines: list[dict[str, Any]]

    def hint_events(self) -> list[str]:
        return [e["event"] for e in self.lines if e["event"].startswith("hint_")]


@asynccontextmanager
async def running(path: Path, command: str) -> AsyncIterator[Running]:
    """`tracker COMMAND --config PATH` until the block ends, then SIGTERM and a clean exit."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tracker",
        command,
        "--config",
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=ROOT,
    )
    assert process.stdout is not None
    lines: list[dict[str, Any]] = []

    async def read(stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            lines.append(json.loads(line))

    reading = asyncio.create_task(read(process.stdout))
    try:
        await until(lambda: any(e["event"] == "http_listening" for e in lines))
        url = next(e["url"] for e in lines if e["event"] == "http_listening")
        yield Running(url=url, lines=lines)
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(reading, 15)
        assert await asyncio.wait_for(process.wait(), 15) == 0


def command_config(tmp_path: Path, url: str, **sections: Any) -> Path:
    """A config file as an operator writes it: hourly polls, a listener, the hint secret."""
    mapping = settings_mapping(
        tmp_path,
        url,
        upstream={"webhook_secret": SECRET, "timeout": 5},
        polling={"interval": "1h", "jitter": 0},
        http={"listen": "127.0.0.1:0"},
        log={"format": "json", "level": "info"},
        **sections,
    )
    return write_config(tmp_path / "c.toml", mapping)


class TestCommands:
    """`tracker run` and `tracker serve` take hints when configured; their logs never hold the
    secret."""

    async def test_run_stores_the_hinted_change(self, upstream: Upstream, tmp_path: Path) -> None:
        """`run` stores a signed hint's change, refuses an unsigned hint and logs no secret."""
        scripted, url = upstream
        status = {A: "ordered"}

        async def answer(order_id: str) -> Response:
            return await ok(status[order_id])(order_id)

        scripted.script(A, answer)
        path = command_config(tmp_path, url, watch={"orders": [A]})
        async with (
            running(path, "run") as daemon,
            httpx.AsyncClient(base_url=daemon.url, timeout=10) as client,
        ):
            await until_async(lambda: _cli_order(path, "status"), "ordered")
            status[A] = "checked"
            body = hint_body(A, "evt_subprocess")
            posted = await client.post("/hooks/nomos", content=body, headers=signed(body))
            assert posted.status_code == 202
            unsigned = await client.post("/hooks/nomos", content=body)
            assert unsigned.status_code == 401
            await until_async(lambda: _cli_order(path, "status"), "checked")
        assert scripted.polls(A) == 2  # the first poll, and the hinted one
        assert SECRET not in json.dumps(daemon.lines)
        assert daemon.hint_events() == ["hint_accepted", "hint_refused"]
        assert "transition_detected" in [e["event"] for e in daemon.lines]

    async def test_serve_makes_the_order_due(self, upstream: Upstream, tmp_path: Path) -> None:
        """`serve` takes a hint by making the order due, without polling it itself."""
        scripted, url = upstream
        scripted.script(A, ok("ordered"))
        path = command_config(tmp_path, url)
        for args in (("watch", "add", A), ("poll", A)):
            ran = await tracker_cli(*args, "--config", str(path))
            assert ran.code == 0, ran.err
        polled_next = await _cli_order(path, "next_poll_at")
        assert datetime.fromisoformat(str(polled_next)) > utc_now() + timedelta(minutes=50)
        async with (
            running(path, "serve") as serving_process,
            httpx.AsyncClient(base_url=serving_process.url, timeout=10) as client,
        ):
            body = hint_body(A, "evt_served")
            posted = await client.post("/hooks/nomos", content=body, headers=signed(body))
            assert posted.status_code == 202
            hinted_next = await _cli_order(path, "next_poll_at")
        assert datetime.fromisoformat(str(hinted_next)) <= utc_now()
        assert scripted.polls(A) == 1  # serve never polls: a daemon would, now
        assert serving_process.hint_events() == ["hint_accepted"]
        assert SECRET not in json.dumps(serving_process.lines)


async def _cli_order(path: Path, key: str) -> object:
    """One field of the only watched order, as `tracker watch list --json` prints it."""
    ran = await tracker_cli("watch", "list", "--json", "--config", str(path))
    assert ran.code == 0, ran.err
    [order] = json.loads(ran.out)
    return order[key]


async def _status(store: Store, order_id: str) -> str | None:
    order = await store.orders.get(order_id)
    return order.status if order is not None else None


async def until(check: Callable[[], bool], seconds: float = 15) -> None:
    for _ in range(int(seconds * 20)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not true within {seconds} s")


async def until_async(read: Callable[[], Any], wanted: object, seconds: float = 15) -> None:
    for _ in range(int(seconds * 20)):
        if await read() == wanted:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never {wanted!r} within {seconds} s")


async def chunks(body: bytes) -> AsyncIterator[bytes]:
    """``body`` streamed in two pieces, with no declared length."""
    yield body[:40_000]
    yield body[40_000:]


class TestSignature:
    """The signing helper is the documented rule: HMAC-SHA256(secret, "<t>.<raw body>")."""

    def test_signed_header(self) -> None:
        """The signing helper gives t=<time>,v1=HMAC-SHA256 of the time and raw body."""
        body = b'{"id":"evt_1"}'
        digest = hmac.new(KEY, b"1700000000." + body, hashlib.sha256).hexdigest()
        assert signed_header(KEY, body, 1_700_000_000) == f"t=1700000000,v1={digest}"
