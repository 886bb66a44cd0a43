"""``q`` finds watched orders by id prefix, customer or subscription, on both backends: the
columns are backfilled by revision 0006, follow every stored snapshot, and serve the API."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import event

from tests.outbox import poll
from tests.schema import T0, assert_no_drift, engine_for
from tests.support import ScriptedUpstream, make_settings, ok, order_body
from tracker.clock import utc_now
from tracker.config import Address, HttpUser
from tracker.service import Service, open_service
from tracker.store import Store, upgrade
from tracker.store.db import SCHEMA_HEAD, _alembic_config, connect
from tracker.store.packing import pack_body
from tracker.store.tables import snapshots, watched_orders
from tracker.web import Metrics, build_app, listening

#: Every test here runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.usefixtures("database")

A = "prdo_aaaaaaaaaaaaaaaaaaaaaaaa"
B = "prdo_bbbbbbbbbbbbbbbbbbbbbbbb"
C = "prdo_cccccccccccccccccccccccc"
D = "prdo_dddddddddddddddddddddddd"
#: A customer longer than the column: kept out of it, never cut.
TOO_LONG = "cus_" + "x" * 77
TOKEN = "search-read-token-5c1e"
READ = {"Authorization": f"Bearer {TOKEN}"}
Upstream = tuple[ScriptedUpstream, str]


def _packed(order_id: str, status: str, **changes: str) -> bytes:
    return pack_body(json.dumps(order_body(order_id, status, **changes)))


def _fill_0005(url: str) -> None:
    """A database at revision 0005: A's customer changed between its two snapshots, B's is
    longer than the column, C was never polled."""
    engine = engine_for(url)
    config = _alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0005")
        for order_id in (A, B, C):
            conn.execute(
                watched_orders.insert().values(
                    order_id=order_id,
                    active=True,
                    source="cli",
                    added_at=T0,
                    consecutive_failures=0,
                    status=None if order_id == C else "ordered",
                )
            )
        bodies = [
            (A, _packed(A, "waiting", customer="cus_before", subscription="sub_a")),
            (B, _packed(B, "ordered", customer=TOO_LONG, subscription="sub_b")),
            (A, _packed(A, "ordered", customer="cus_after", subscription="sub_a")),
        ]
        for number, (order_id, body) in enumerate(bodies, start=1):
            conn.execute(
                snapshots.insert().values(id=number, order_id=order_id, observed_at=T0, body=body)
            )
    engine.dispose()


class TestBackfill:
    """Revision 0006 gives existing orders their latest snapshot's customer and subscription."""

    async def test_upgrade_takes_each_orders_latest_snapshot(self, empty_database: str) -> None:
        """Upgrading from 0005 fills customer and subscription from each latest snapshot."""
        url = empty_database
        _fill_0005(url)
        assert upgrade(url) == [f"0005 -> {SCHEMA_HEAD}"]
        assert_no_drift(url)
        engine = engine_for(url)
        with engine.connect() as conn:
            w = watched_orders
            rows = conn.execute(
                sa.select(w.c.order_id, w.c.customer, w.c.subscription).order_by(w.c.order_id)
            ).all()
        engine.dispose()
        assert [tuple(row) for row in rows] == [
            (A, "cus_after", "sub_a"),
            (B, None, "sub_b"),
            (C, None, None),
        ]
        store = Store(connect(url))
        try:
            assert await ids(store, "cus_after") == [A]
            assert await ids(store, "cus_before") == []
            assert await ids(store, "sub_b") == [B]
        finally:
            await store.close()


async def ids(
    store: Store, q: str, *, status: str | None = None, state: str | None = None
) -> list[str]:
    """The order ids of the first page ``q`` finds."""
    page = await store.orders.page(q=q, status=status, state=state, limit=50)
    return [o.order_id for o in page]


@pytest.fixture
async def service(upstream: Upstream, tmp_path: Path) -> AsyncIterator[Service]:
    """A and B belong to customer cus_one, C to cus_two (each with its own subscription);
    D is watched but never polled."""
    scripted, url = upstream
    scripted.script(A, ok("ordered", customer="cus_one", subscription="sub_a"))
    scripted.script(B, ok("checked", customer="cus_one", subscription="sub_b"))
    scripted.script(C, ok("ordered", customer="cus_two", subscription="sub_c"))
    settings = make_settings(tmp_path, url, log={"level": "warning"})
    async with open_service(settings) as opened:
        await opened.store.orders.watch([A, B, C, D], source="cli", now=utc_now())
        await poll(opened, A, B, C)
        yield opened


class TestStoreSearch:
    """``watched_page(q=…)``: an id prefix, or a whole customer or subscription."""

    async def test_by_id_prefix_customer_and_subscription(self, service: Service) -> None:
        """The store finds orders by id prefix or whole customer or subscription, with filters."""
        store = service.store
        assert await ids(store, "cus_one") == [A, B]
        assert await ids(store, "cus_two") == [C]
        assert await ids(store, "sub_b") == [B]
        assert await ids(store, "prdo_") == [A, B, C, D]
        assert await ids(store, "prdo_c") == [C]
        # Whole values only: a customer's prefix matches nothing.
        assert await ids(store, "cus_") == []
        assert await ids(store, "cus_on") == []
        assert await ids(store, "cus_one", status="checked") == [B]
        assert await ids(store, "cus_one", state="removed") == []
        order = await store.orders.get(A)
        assert order is not None
        assert (order.customer, order.subscription) == ("cus_one", "sub_a")
        never = await store.orders.get(D)
        assert never is not None
        assert (never.customer, never.subscription) == (None, None)

    async def test_pages_of_one_customer(self, service: Service) -> None:
        """One customer's orders page by id after the cursor until none are left."""
        store = service.store
        first = await store.orders.page(q="cus_one", limit=1)
        assert [o.order_id for o in first] == [A]
        rest = await store.orders.page(q="cus_one", after=A, limit=1)
        assert [o.order_id for o in rest] == [B]
        assert await store.orders.page(q="cus_one", after=B, limit=1) == []

    async def test_the_columns_follow_a_changed_customer(
        self, service: Service, upstream: Upstream
    ) -> None:
        """A new customer or subscription moves the search columns; a customer longer than
        its column is a failed poll of that order alone, which keeps what it had."""
        scripted, _ = upstream
        # Same status, other customer and subscription: a new snapshot, no transition.
        scripted.script(A, ok("ordered", customer="cus_moved", subscription="sub_moved"))
        # A new status and a customer longer than the column: malformed, nothing stored.
        scripted.script(C, ok("checked", customer=TOO_LONG, subscription="sub_c"))
        await poll(service, A, C)
        store = service.store
        assert await ids(store, "cus_one") == [B]
        assert await ids(store, "cus_moved") == [A]
        assert await ids(store, "sub_moved") == [A]
        assert await ids(store, "sub_a") == []
        after = await store.orders.get(C)
        assert after is not None
        assert (after.status, after.customer, after.subscription) == ("ordered", "cus_two", "sub_c")
        assert after.consecutive_failures == 1
        history = await store.reports.history(A)
        assert history is not None
        assert json.loads(history.snapshots[-1].raw)["customer"] == "cus_moved"


@dataclass
class Api:
    """A live API over the service's store."""

    client: httpx.AsyncClient


@pytest.fixture
async def api(service: Service) -> AsyncIterator[Api]:
    """The app on a free loopback port, with one read user."""
    users = [HttpUser.model_validate({"name": "support-ui", "token": TOKEN, "role": "read"})]
    app = build_app(store=service.store, metrics=Metrics(), sinks=lambda: (), users=users)
    async with (
        listening(app, Address("127.0.0.1", 0)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        yield Api(client=client)


class TestApiSearch:
    """``GET /api/v1/orders?q=`` finds orders by customer and subscription, and shows them."""

    async def test_by_customer_and_subscription(self, api: Api) -> None:
        """The API finds orders by customer, subscription or id prefix and pages them by cursor."""

        async def found(q: str) -> list[dict[str, object]]:
            answer = await api.client.get("/api/v1/orders", params={"q": q}, headers=READ)
            assert answer.status_code == 200, answer.text
            items: list[dict[str, object]] = answer.json()["items"]
            return items

        by_customer = await found("cus_one")
        assert [(o["order_id"], o["customer"], o["subscription"]) for o in by_customer] == [
            (A, "cus_one", "sub_a"),
            (B, "cus_one", "sub_b"),
        ]
        assert [o["order_id"] for o in await found("sub_c")] == [C]
        assert [o["order_id"] for o in await found("prdo_d")] == [D]
        assert [(o["customer"], o["subscription"]) for o in await found("prdo_d")] == [(None, None)]
        paged = await api.client.get(
            "/api/v1/orders", params={"q": "cus_one", "limit": "1"}, headers=READ
        )
        cursor = paged.json()["next_cursor"]
        rest = await api.client.get(
            "/api/v1/orders", params={"q": "cus_one", "cursor": cursor}, headers=READ
        )
        assert [o["order_id"] for o in rest.json()["items"]] == [B]
        assert rest.json()["next_cursor"] is None

    @pytest.mark.parametrize("q", ["CUS_ONE", "cus_one%", "cus one", "cus-one", "", "c" * 81])
    async def test_refuses_what_no_id_holds(self, api: Api, q: str) -> None:
        """A query no order id could hold is refused with 422 naming q."""
        answer = await api.client.get("/api/v1/orders", params={"q": q}, headers=READ)
        assert answer.status_code == 422
        assert "q:" in answer.json()["error"]["message"]


class TestPlans:
    """Every way ``q`` matches is read from an index, never by scanning the table."""

    async def test_each_branch_walks_an_index(self, service: Service) -> None:
        """Each branch of the search is planned over an index, never a table scan."""
        engine = service.store._engine
        sent: list[tuple[str, Any]] = []

        def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
            sent.append((statement, parameters))

        event.listen(engine.sync_engine, "before_cursor_execute", capture)
        try:
            await service.store.orders.page(q="prdo_c", status="ordered", after=A, limit=10)
        finally:
            event.remove(engine.sync_engine, "before_cursor_execute", capture)
        [(statement, parameters)] = sent
        async with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                rows = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
                plan = "\n".join(str(row[-1]) for row in rows)
                # The id prefix is a range over an index of order_id (the primary key's, or
                # its copy), not a scan of the table.
                assert "INDEX" in _line(plan, "(order_id>? AND order_id<?)")
                assert "SCAN watched_orders" not in plan
            else:
                # Small tables are cheaper to scan: forbid it, so that a branch no index can
                # serve (a LIKE under a collation that is not C) shows as a Seq Scan.
                await conn.exec_driver_sql("SET enable_seqscan = off")
                rows = await conn.exec_driver_sql("EXPLAIN " + statement, parameters)
                plan = "\n".join(str(row[0]) for row in rows)
                assert "Seq Scan" not in plan
                assert "ix_watched_orders_order_id_pattern" in _line(plan, "~>=~")
        assert "ix_watched_orders_customer_order_id" in plan
        assert "ix_watched_orders_subscription_order_id" in plan


def _line(plan: str, part: str) -> str:
    """The plan's line that holds ``part``, with the one before it (PostgreSQL's index name
    precedes its condition), or ``""``."""
    lines = plan.splitlines()
    for number, line in enumerate(lines):
        if part in line:
            return "\n".join(lines[max(0, number - 1) : number + 1])
    return ""
