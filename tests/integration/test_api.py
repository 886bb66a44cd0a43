"""The API under /api/v1 on a real uvicorn server and a real client, on both databases."""

from __future__ import annotations

import asyncio
import base64
import csv
import hmac
import io
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog

from tests.outbox import deliver_all, poll
from tests.support import (
    ROOT,
    WEBHOOK_SECRET,
    ScriptedUpstream,
    app_client,
    ok,
    settings_mapping,
    tracker_cli,
    write_config,
)
from tests.users import NOWHERE, READ_TOKEN, USERS, WRITE_TOKEN
from tracker import alerts
from tracker.clock import utc_now
from tracker.config import from_mapping
from tracker.model import DeliveryState
from tracker.service import Service, open_service
from tracker.views import delivery_dict, watched_dict
from tracker.web import Metrics, build_app
from tracker.web.auth import Users
from tracker.web.openapi import document
from tracker.web.throttle import Throttle

#: Every test here runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.usefixtures("database")

A = "prdo_aaaaaaaaaaaaaaaaaaaaaaaa"
B = "prdo_bbbbbbbbbbbbbbbbbbbbbbbb"
C = "prdo_cccccccccccccccccccccccc"
NEVER = "prdo_neverwatched"
READ = {"Authorization": f"Bearer {READ_TOKEN}"}
WRITE = {"Authorization": f"Bearer {WRITE_TOKEN}"}
Upstream = tuple[ScriptedUpstream, str]


@dataclass
class World:
    """A live API over a database with three polled orders and dead-lettered deliveries."""

    client: httpx.AsyncClient
    url: str
    service: Service
    config: Path


def dead_sink(name: str) -> dict[str, Any]:
    return {"name": name, "type": "webhook", "url": NOWHERE, "secret": WEBHOOK_SECRET, "on": ["*"]}


@asynccontextmanager
async def serving(service: Service, users: Any) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    """The app on a free loopback port, and a client pointed at it.

    Wrong tokens are not throttled here: schemathesis sends many on purpose, and the throttle
    has tests of its own (``test_abuse.py``).
    """
    lenient = Users(users, logins=service.store.logins, throttle=Throttle(free=1_000_000))
    app = build_app(
        store=service.store, metrics=Metrics(), sinks=lambda: ("ops", "audit"), users=lenient
    )
    async with app_client(app) as served:
        yield served


@pytest.fixture
async def world(upstream: Upstream, tmp_path: Path) -> AsyncIterator[World]:
    """A and C moved ordered → checked (each transition dead at two sinks); B only ordered."""
    scripted, url = upstream
    scripted.script(A, ok("ordered"), ok("checked"))
    scripted.script(B, ok("ordered"))
    scripted.script(C, ok("ordered"), ok("checked"))
    mapping = settings_mapping(
        tmp_path,
        url,
        delivery={"backoff": ["0.1s", "0.1s"], "timeout": 1},
        sinks=[dead_sink("ops"), dead_sink("audit")],
        http={"listen": "127.0.0.1:0", "users": USERS},
    )
    config = write_config(tmp_path / "c.toml", mapping)
    settings = from_mapping(mapping, {}, origin="test")
    async with open_service(settings) as service:
        await service.store.orders.watch([A, B, C], source="cli", now=utc_now())
        await poll(service, A, B, C)
        await poll(service, A, C)
        await deliver_all(service)
        async with serving(service, settings.http.users) as (base, client):
            yield World(client=client, url=base, service=service, config=config)


class TestAuth:
    """Bearer tokens: 401 without a known one, 403 for a read token on a write route."""

    async def test_missing_wrong_and_foreign_credentials(self, world: World) -> None:
        """Missing, wrong or non-Bearer credentials get 401 with a Bearer challenge."""
        client = world.client
        answers = [
            await client.get("/api/v1/orders"),
            await client.get("/api/v1/orders", headers={"Authorization": "Bearer wrong-token"}),
            await client.get("/api/v1/orders", headers={"Authorization": f"Basic {READ_TOKEN}"}),
            await client.get("/api/v1/orders", headers={"Authorization": "Bearer"}),
            await client.delete(f"/api/v1/orders/{A}"),
        ]
        for answer in answers:
            assert answer.status_code == 401
            assert answer.headers["www-authenticate"] == "Bearer"
            assert answer.json()["error"]["code"] == "unauthorized"
            assert READ_TOKEN not in answer.text

    async def test_read_token_on_write_routes_is_forbidden(self, world: World) -> None:
        """A read token on a write route gets 403 naming the role it lacks."""
        client = world.client
        answers = [
            await client.post("/api/v1/orders", json={"order_ids": [A]}, headers=READ),
            await client.delete(f"/api/v1/orders/{A}", headers=READ),
            await client.post("/api/v1/deliveries/evt_x/retry", headers=READ),
        ]
        for answer in answers:
            assert answer.status_code == 403
            assert answer.json()["error"] == {
                "code": "forbidden",
                "message": "user 'support-ui' has the read role; this needs write",
            }
        assert (await client.get("/api/v1/orders", headers=WRITE)).status_code == 200
        assert (await client.get(f"/api/v1/orders/{A}", headers=READ)).status_code == 200

    async def test_every_token_is_compared_whichever_matches(
        self, world: World, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Every user's digest is compared, equal in length, whichever token matches."""
        compared: list[tuple[int, int]] = []
        real = hmac.compare_digest

        def counting(a: bytes, b: bytes) -> bool:
            compared.append((len(a), len(b)))
            return real(a, b)

        monkeypatch.setattr("tracker.web.auth.hmac.compare_digest", counting)
        for headers in (
            READ,
            WRITE,
            {"Authorization": "Bearer x"},
            {"Authorization": "Bearer " + "y" * 500},
        ):
            compared.clear()
            await world.client.get("/api/v1/orders", headers=headers)
            # One comparison per user, of equal-length digests, for a right or wrong token.
            assert compared == [(32, 32), (32, 32)]

    async def test_openapi_needs_no_token(self, world: World) -> None:
        """The OpenAPI 3.1 document is served without a token."""
        answer = await world.client.get("/api/v1/openapi.json")
        assert answer.status_code == 200
        assert answer.json() == document()
        assert answer.json()["openapi"] == "3.1.0"


class TestOrders:
    """Listing, reading, watching and unwatching orders."""

    async def test_list_and_filters(self, world: World) -> None:
        """Orders list filtered by status, state, id prefix, customer or subscription."""
        client = world.client

        async def ids(**params: str) -> list[str]:
            answer = await client.get("/api/v1/orders", params=params, headers=READ)
            assert answer.status_code == 200, answer.text
            assert answer.json()["next_cursor"] is None
            return [item["order_id"] for item in answer.json()["items"]]

        assert await ids() == [A, B, C]
        assert await ids(status="checked") == [A, C]
        assert await ids(status="ordered") == [B]
        assert await ids(state="active") == [A, B, C]
        assert await ids(state="removed") == []
        assert await ids(q="prdo_c") == [C]
        assert await ids(q="prdo_") == [A, B, C]
        assert await ids(q="prdo_x") == []
        # Every order here is the default body's customer's, on its subscription.
        assert await ids(q="cus_qacki3zcrkc9r41qt44ngl9d") == [A, B, C]
        assert await ids(q="sub_vzyqxohw546im28zwyhn04ei", status="ordered") == [B]
        assert await ids(q="cus_qacki") == []

    async def test_list_objects_are_the_cli_objects(self, world: World) -> None:
        """The API's order list is what `watch list --json` prints."""
        answer = await world.client.get("/api/v1/orders", headers=READ)
        ran = await tracker_cli("watch", "list", "--json", "--config", str(world.config))
        assert ran.code == 0, ran.err
        assert answer.json()["items"] == json.loads(ran.out)

    @pytest.mark.parametrize(
        ("params", "named"),
        [
            ({"status": "lost"}, "status"),
            ({"state": "gone"}, "state"),
            ({"q": "PRDO_A"}, "q"),
            ({"limit": "0"}, "limit"),
            ({"limit": "ten"}, "limit"),
            ({"cursor": "bm9wZQ"}, "cursor"),
            ({"cursor": "%%%"}, "cursor"),
            ({"sort": "desc"}, "sort"),
        ],
    )
    async def test_refused_query_values(
        self, world: World, params: dict[str, str], named: str
    ) -> None:
        """A bad query value gets 422 naming the parameter."""
        answer = await world.client.get("/api/v1/orders", params=params, headers=READ)
        assert answer.status_code == 422
        error = answer.json()["error"]
        assert error["code"] == "unprocessable_entity"
        assert named in error["message"]

    async def test_one_order_is_the_cli_history(self, world: World) -> None:
        """One order's answer is what `history --json` prints, deliveries included."""
        answer = await world.client.get(f"/api/v1/orders/{A}", headers=READ)
        ran = await tracker_cli("history", A, "--json", "--config", str(world.config))
        assert ran.code == 0, ran.err
        assert answer.status_code == 200
        assert answer.json() == json.loads(ran.out)
        [moved] = answer.json()["transitions"]
        assert (moved["from_status"], moved["to_status"]) == ("ordered", "checked")
        assert {d["sink"] for d in moved["deliveries"]} == {"ops", "audit"}

    async def test_unknown_and_malformed_ids(self, world: World) -> None:
        """An unknown order id gets 404 and a malformed one 422."""
        never = await world.client.get(f"/api/v1/orders/{NEVER}", headers=READ)
        assert never.status_code == 404
        assert never.json()["error"]["code"] == "not_found"
        assert NEVER in never.json()["error"]["message"]
        for bad in ("order-1", "prdo_ABC", "prdo_" + "a" * 65, "%27%3B--"):
            answer = await world.client.get(f"/api/v1/orders/{bad}", headers=READ)
            assert answer.status_code == 422, bad
            assert "invalid order id" in answer.json()["error"]["message"]

    async def test_watch_and_unwatch(self, world: World) -> None:
        """Watching and unwatching answer 201 and 204 and log the user, never the token."""
        client = world.client
        new = "prdo_dddddddddddddddddddddddd"
        with structlog.testing.capture_logs() as logs:
            added = await client.post("/api/v1/orders", json={"order_ids": [new, A]}, headers=WRITE)
            again = await client.post("/api/v1/orders", json={"order_ids": [new]}, headers=WRITE)
            gone = await client.delete(f"/api/v1/orders/{B}", headers=WRITE)
        assert (added.status_code, added.json()) == (201, {"added": [new]})
        assert (again.status_code, again.json()) == (201, {"added": []})
        assert (gone.status_code, gone.content) == (204, b"")
        writes = [e for e in logs if e["event"] == "api_write"]
        assert [(e["user"], e["action"], e["ids"]) for e in writes] == [
            ("ops-bot", "watch", [new, A]),
            ("ops-bot", "watch", [new]),
            ("ops-bot", "unwatch", [B]),
        ]
        assert WRITE_TOKEN not in repr(logs)
        removed = await client.get("/api/v1/orders", params={"state": "removed"}, headers=READ)
        assert [o["order_id"] for o in removed.json()["items"]] == [B]
        assert (await world.service.store.orders.get(new)) is not None
        never = await client.delete(f"/api/v1/orders/{NEVER}", headers=WRITE)
        assert never.status_code == 404

    @pytest.mark.parametrize(
        ("body", "named"),
        [
            ({"order_ids": [A, "prdo_BAD"]}, "prdo_BAD"),
            ({"order_ids": []}, "order_ids"),
            ({"order_ids": "prdo_aaa"}, "order_ids"),
            ({"ids": [A]}, "order_ids"),
            ([A], "order_ids"),
        ],
    )
    async def test_refused_bodies(self, world: World, body: Any, named: str) -> None:
        """A bad watch body gets 422 naming what is wrong and watches nothing."""
        answer = await world.client.post("/api/v1/orders", json=body, headers=WRITE)
        assert answer.status_code == 422
        assert named in answer.json()["error"]["message"]
        assert await world.service.store.orders.get("prdo_bad") is None

    async def test_not_json_and_too_large(self, world: World) -> None:
        """A garbled body gets 422; one over 1 MiB gets 413, declared or streamed."""
        client = world.client
        garbled = await client.post("/api/v1/orders", content=b"{order_ids", headers=WRITE)
        assert garbled.status_code == 422
        big = json.dumps({"order_ids": [A] * 40_000}).encode()
        assert len(big) > 1024 * 1024
        declared = await client.post("/api/v1/orders", content=big, headers=WRITE)
        assert declared.status_code == 413
        assert declared.json()["error"]["code"] == "request_entity_too_large"

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
            for start in range(0, len(big), 65536):
                yield big[start : start + 65536]

        streamed = await client.post("/api/v1/orders", content=chunks(), headers=WRITE)
        assert streamed.status_code == 413


class TestPagination:
    """Keyset pages by id: every item once, in order, limits capped."""

    async def test_orders_across_pages(self, world: World) -> None:
        """Walking the pages gives every order once, in id order."""
        many = [f"prdo_p{i:04d}" for i in range(137)]
        await world.service.store.orders.watch(many, source="cli", now=utc_now())
        seen = await walk(world.client, "/api/v1/orders", {"limit": "10", "q": "prdo_p"})
        assert [o["order_id"] for o in seen] == many
        everything = await walk(world.client, "/api/v1/orders", {})
        assert [o["order_id"] for o in everything] == sorted([*many, A, B, C])

    async def test_limit_default_and_cap(self, world: World) -> None:
        """A page holds 50 orders by default and at most 500 whatever the limit."""
        many = [f"prdo_p{i:04d}" for i in range(600)]
        await world.service.store.orders.watch(many, source="cli", now=utc_now())
        default = await world.client.get("/api/v1/orders", headers=READ)
        assert len(default.json()["items"]) == 50
        capped = await world.client.get("/api/v1/orders", params={"limit": "100000"}, headers=READ)
        first = capped.json()
        assert len(first["items"]) == 500
        rest = await world.client.get(
            "/api/v1/orders",
            params={"limit": "100000", "cursor": first["next_cursor"]},
            headers=READ,
        )
        assert len(rest.json()["items"]) == 103
        assert rest.json()["next_cursor"] is None
        for huge in ("9" * 5000, "0000000501"):
            answer = await world.client.get("/api/v1/orders", params={"limit": huge}, headers=READ)
            assert len(answer.json()["items"]) == 500

    async def test_cursors_are_opaque_and_bound_to_their_list(self, world: World) -> None:
        """A cursor is encoded, works only for its own list, and a forged one gets 422."""
        page = await world.client.get("/api/v1/orders", params={"limit": "1"}, headers=READ)
        cursor = page.json()["next_cursor"]
        assert A not in cursor
        assert base64.urlsafe_b64decode(cursor + "==") == f"o:{A}".encode()
        wrong = await world.client.get(
            "/api/v1/deliveries", params={"cursor": cursor}, headers=READ
        )
        assert wrong.status_code == 422
        forged = base64.urlsafe_b64encode(b"o:not-an-id").decode()
        assert (
            await world.client.get("/api/v1/orders", params={"cursor": forged}, headers=READ)
        ).status_code == 422

    async def test_deliveries_across_pages_are_the_cli_objects(self, world: World) -> None:
        """Delivery pages hold what `deliveries list --json` prints; bad filters get 422."""
        seen = await walk(world.client, "/api/v1/deliveries", {"limit": "1"})
        ran = await tracker_cli("deliveries", "list", "--json", "--config", str(world.config))
        assert ran.code == 0, ran.err
        assert seen == json.loads(ran.out)
        assert len(seen) == 4
        assert {d["state"] for d in seen} == {"dead"}
        ops = await walk(world.client, "/api/v1/deliveries", {"sink": "ops", "state": "dead"})
        assert [d for d in seen if d["sink"] == "ops"] == ops
        none = await walk(world.client, "/api/v1/deliveries", {"state": "delivered"})
        assert none == []
        too_far = base64.urlsafe_b64encode(b"d:" + b"9" * 30).decode()
        refused = [
            {"state": "lost"},
            {"sink": "a b"},
            {"sink": ""},
            {"limit": "-1"},
            {"limit": "\u00b2"},
            {"cursor": "xyz"},
            {"cursor": too_far},
        ]
        for params in refused:
            answer = await world.client.get("/api/v1/deliveries", params=params, headers=READ)
            assert answer.status_code == 422, params


async def walk(client: httpx.AsyncClient, path: str, params: dict[str, str]) -> list[Any]:
    """Every item of a paged list, following ``next_cursor``; fails on a repeated cursor."""
    items: list[Any] = []
    cursors: set[str] = set()
    cursor: str | None = None
    while True:
        asked = params | ({"cursor": cursor} if cursor else {})
        answer = await client.get(path, params=asked, headers=READ)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items
        assert cursor not in cursors
        cursors.add(cursor)


class TestRetry:
    """A retry makes an event's undelivered deliveries pending and due now."""

    async def test_dead_deliveries_pending_again(self, world: World) -> None:
        """A retry makes the event's dead deliveries pending and due now, and is logged."""
        history = (await world.client.get(f"/api/v1/orders/{A}", headers=READ)).json()
        event_id = history["transitions"][0]["event_id"]
        before = utc_now()
        with structlog.testing.capture_logs() as logs:
            answer = await world.client.post(f"/api/v1/deliveries/{event_id}/retry", headers=WRITE)
        assert answer.status_code == 202
        assert answer.json() == {"event_id": event_id, "pending": 2}
        assert [(e["user"], e["action"], e["ids"]) for e in logs if e["event"] == "api_write"] == [
            ("ops-bot", "retry", [event_id])
        ]
        rows = [d async for d in world.service.store.outbox.deliveries() if d.event_id == event_id]
        assert {d.state for d in rows} == {DeliveryState.PENDING}
        assert all(d.attempts == 0 and d.next_attempt_at <= utc_now() for d in rows)
        assert all(d.next_attempt_at >= before for d in rows)
        pending = await walk(world.client, "/api/v1/deliveries", {"state": "pending"})
        assert pending == [delivery_dict(d, sinks={"ops", "audit"}) for d in rows]

    async def test_unknown_and_malformed_events(self, world: World) -> None:
        """Retrying an unknown event gets 404, a malformed id 422 and a GET 405."""
        unknown = await world.client.post("/api/v1/deliveries/evt_nothing/retry", headers=WRITE)
        assert unknown.status_code == 404
        assert "evt_nothing" in unknown.json()["error"]["message"]
        malformed = await world.client.post("/api/v1/deliveries/evt%20x/retry", headers=WRITE)
        assert malformed.status_code == 422
        wrong_method = await world.client.get("/api/v1/deliveries/evt_x/retry", headers=WRITE)
        assert wrong_method.status_code == 405
        assert wrong_method.headers["allow"] == "POST"


class TestTransitions:
    """`GET /api/v1/transitions`: `tracker export` over HTTP, the same rows."""

    async def test_the_same_rows_as_the_cli(self, world: World) -> None:
        """The transitions route gives the export's rows as NDJSON or CSV."""
        params = {"since": "2000-01-01"}
        answer = await world.client.get("/api/v1/transitions", params=params, headers=READ)
        ran = await tracker_cli(
            "export", "--since", "2000-01-01", "--format", "ndjson", "--config", str(world.config)
        )
        assert ran.code == 0, ran.err
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("application/x-ndjson")
        rows = [json.loads(line) for line in answer.text.splitlines()]
        assert rows == [json.loads(line) for line in ran.out.splitlines()]
        assert sorted(row["order_id"] for row in rows) == [A, C]
        assert {d["state"] for row in rows for d in row["deliveries"]} == {"dead"}
        as_csv = await world.client.get(
            "/api/v1/transitions",
            params={**params, "format": "csv", "status": "checked"},
            headers=READ,
        )
        header, *lines = list(csv.reader(io.StringIO(as_csv.text)))
        assert header[:3] == ["order_id", "from_status", "to_status"]
        assert len(lines) == 2
        empty = await world.client.get(
            "/api/v1/transitions", params={"since": "2000-01-01", "until": "2000-01-02"},
            headers=READ,
        )  # fmt: skip
        assert (empty.status_code, empty.text) == (200, "")

    @pytest.mark.parametrize(
        ("params", "named"),
        [
            ({}, "since"),
            ({"since": "yesterday"}, "since"),
            ({"since": "2026-11-02", "until": "2026-11-01"}, "before until"),
            ({"since": "2026-11-01", "status": "chekced"}, "status"),
            ({"since": "2026-11-01", "format": "xlsx"}, "format"),
        ],
    )
    async def test_refused(self, world: World, params: dict[str, str], named: str) -> None:
        """Bad transitions parameters get 422 naming them, or 401 without a token."""
        answer = await world.client.get("/api/v1/transitions", params=params, headers=READ)
        assert answer.status_code == 422
        assert named in answer.json()["error"]["message"]
        unauthorised = await world.client.get("/api/v1/transitions", params=params)
        assert unauthorised.status_code == 401


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
    """`GET /api/v1/orders?stuck=true`: the orders stuck now, longest first, with `stuck`."""

    async def test_stuck_orders_with_their_threshold(self, world: World) -> None:
        """Only stuck orders are listed, a page at a time, each with since and threshold."""
        await report_stuck(world.service, {"checked": timedelta(hours=1)})
        users = Users(world.service.settings.http.users, logins=world.service.store.logins)
        app = build_app(
            store=world.service.store,
            metrics=Metrics(),
            users=users,
            targets=lambda: {"checked": timedelta(hours=1)},
        )
        async with app_client(app) as (_url, client):
            first = await client.get("/api/v1/orders", params={"stuck": "true", "limit": "1"},
                                     headers=READ)  # fmt: skip
            assert first.status_code == 200, first.text
            cursor = first.json()["next_cursor"]
            assert cursor is not None
            second = await client.get(
                "/api/v1/orders", params={"stuck": "true", "limit": "1", "cursor": cursor},
                headers=READ,
            )  # fmt: skip
        items = first.json()["items"] + second.json()["items"]
        assert second.json()["next_cursor"] is None
        assert sorted(i["order_id"] for i in items) == [A, C]
        sinces = [i["stuck"]["since"] for i in items]
        assert sinces == sorted(sinces)  # the longest stay first
        for item in items:
            order = await world.service.store.orders.get(item["order_id"])
            assert order is not None
            assert item["status"] == "checked"
            assert item["stuck"]["threshold_seconds"] == 3600
            assert {k: v for k, v in item.items() if k != "stuck"} == watched_dict(order)

    async def test_the_same_objects_as_the_cli(self, world: World) -> None:
        """The API's stuck list is what `watch list --stuck --json` prints (no threshold is
        configured on either side: null)."""
        await report_stuck(world.service, {"checked": timedelta(hours=1)})
        answer = await world.client.get("/api/v1/orders", params={"stuck": "true"}, headers=READ)
        ran = await tracker_cli("watch", "list", "--stuck", "--json", "--config", str(world.config))
        assert ran.code == 0, ran.err
        assert answer.json()["items"] == json.loads(ran.out)
        assert [i["stuck"]["threshold_seconds"] for i in json.loads(ran.out)] == [None, None]
        everyone = await world.client.get("/api/v1/orders", params={"stuck": "false"}, headers=READ)
        assert [i["order_id"] for i in everyone.json()["items"]] == [A, B, C]

    @pytest.mark.parametrize(
        ("params", "named"),
        [
            ({"stuck": "yes"}, "stuck"),
            ({"stuck": "true", "status": "checked"}, "status"),
            ({"stuck": "true", "q": "prdo_a"}, "q"),
            ({"stuck": "true", "cursor": "bzpwcmRvX2E"}, "cursor"),  # an order list's cursor
            ({"stuck": "true", "cursor": "czpub3RhZGF0ZXxwcmRvX2E"}, "cursor"),
        ],
    )
    async def test_refused(self, world: World, params: dict[str, str], named: str) -> None:
        """A bad stuck value, a filter beside it or a foreign cursor gets 422 naming it."""
        answer = await world.client.get("/api/v1/orders", params=params, headers=READ)
        assert answer.status_code == 422
        assert named in answer.json()["error"]["message"]


class TestSchema:
    """schemathesis checks every route of the document against the live server."""

    async def test_schemathesis_finds_no_failure(self, world: World, tmp_path: Path) -> None:
        """schemathesis finds no route that breaks the OpenAPI document."""
        ran = await run_schemathesis(world.url, tmp_path)
        assert ran.returncode == 0, ran.stdout[-6000:]


@dataclass
class Finished:
    returncode: int
    stdout: str


async def run_schemathesis(url: str, workdir: Path) -> Finished:
    """``schemathesis run`` (its own process) against the document served at ``url``.

    Every phase (examples, coverage, fuzzing, stateful) and every check, with a write
    user's token, few examples per operation so that the run takes seconds.
    Its settings are in ``tests/schemathesis.toml``; its cache goes to ``workdir``.
    """
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(ROOT / "tests" / "schemathesis.toml"),
        "run",
        f"{url}/api/v1/openapi.json",
        "--header",
        f"Authorization: Bearer {WRITE_TOKEN}",
        "--checks",
        "all",
        "--max-examples",
        "15",
        "--no-color",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=workdir,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return Finished(process.returncode, out.decode())
