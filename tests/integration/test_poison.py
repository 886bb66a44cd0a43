"""One hostile upstream string, or one result the database refuses, fails its own order alone."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import structlog
from sqlalchemy import String, text, update
from starlette.requests import Request
from starlette.responses import Response

from tests.support import make_settings, order_body
from tracker.app import Polling, open_polling
from tracker.clock import utc_now
from tracker.daemon import Daemon
from tracker.demo.serving import catch_all, serve
from tracker.model import FIELD_LIMITS
from tracker.poller import poll_now
from tracker.service import Service, open_service
from tracker.store import Store
from tracker.store.tables import events, transitions, watched_orders
from tracker.sweep import SweepPlanner
from tracker.telemetry import PollResult

A = "prdo_aaaaaaaaaaaaaaaaaaaaaaaa"
B = "prdo_bbbbbbbbbbbbbbbbbbbbbbbb"
C = "prdo_cccccccccccccccccccccccc"
#: Answers that no order may give, each breaking one bound of one field.
POISON: dict[str, dict[str, Any]] = {
    "status_too_long": {"status": "x" * 65},
    "nul_in_status": {"status": "checked\x00"},
    "escape_in_status": {"status": "checked\x1b[2J"},
    "c1_in_provider": {"provider": "metrify\x85"},
    "customer_too_long": {"customer": "cus_" + "c" * 77},
    "surrogate_in_subscription": {"subscription": "sub_\ud800"},
    "surrogate_in_unknown_field": {"note": "\udfff"},
}
#: What a test's stand-in for a database-level refusal says (a trigger's message).
REFUSAL = "refused by a trigger of the test"


def customer(order_id: str) -> str:
    """Each order its own customer, as organisations of one order each."""
    return f"cus_{order_id[5:]}"


class Upstream:
    """Answers each order by id and in list pages (filtered by customer) from ``answers``."""

    def __init__(self, *order_ids: str) -> None:
        self.answers = {o: order_body(o, status="ordered", customer=customer(o)) for o in order_ids}
        self.seen: list[str] = []

    def listed(self, customers: list[str]) -> list[dict[str, Any]]:
        """The answers of the orders of ``customers`` (the upstream's own record of whose
        order is whose, whatever an answer says)."""
        return [self.answers[o] for o in self.answers if customer(o) in customers]

    async def __call__(self, request: Request) -> Response:
        path = request.url.path
        self.seen.append(path)
        if path == "/meter-orders":
            wanted = request.query_params.get("filter[customer][in]", "").split(",")
            body: object = {"object": "list", "items": self.listed(wanted), "has_more": False}
        else:
            body = self.answers[path.removeprefix("/meter-orders/")]
        # ensure_ascii (the default) writes a lone surrogate as its escape, as an upstream would.
        return Response(json.dumps(body), media_type="application/json")


class Counted:
    """Telemetry that counts polls by result."""

    def __init__(self) -> None:
        self.polls: dict[str, int] = {}

    def polled(self, result: str) -> None:
        """Count one poll."""
        self.polls[result] = self.polls.get(result, 0) + 1

    def requested(self, code: int | None, seconds: float) -> None:
        """Not counted."""

    def started_late(self, seconds: float) -> None:
        """Not counted."""

    def transitioned(self, from_status: str, to_status: str) -> None:
        """Not counted."""

    def delivered(self, sink: str, result: str) -> None:
        """Not counted."""


@asynccontextmanager
async def polling_against(tmp_path: Path, upstream: Upstream) -> AsyncIterator[Polling]:
    """Polling (list sweeps on) against ``upstream``, its orders watched."""
    async with serve(catch_all(upstream)) as server:
        settings = make_settings(tmp_path, server.url, polling={"sweep": "list"})
        async with open_polling(settings) as polling:
            await polling.store.orders.watch(list(upstream.answers), source="cli", now=utc_now())
            yield polling


async def poll_by_id(polling: Polling, *order_ids: str) -> None:
    """Poll the orders by id, all in one window: their results are recorded in one write."""
    claims = await polling.store.polls.claim(list(order_ids), lease_until=utc_now() + polling.lease)
    async for _ in poll_now(polling.store, polling.poller, claims):
        pass


async def statuses(store: Store) -> dict[str, tuple[str | None, int, str | None]]:
    """Each watched order's status, failures in a row and last error kind."""
    return {
        o.order_id: (o.status, o.consecutive_failures, o.last_error_kind)
        async for o in store.orders.watched()
    }


async def refuse(store: Store, *, table: str, when: str, event: str = "INSERT") -> None:
    """Make the database itself refuse writes to ``table`` for which ``when`` (SQL over
    ``NEW``/``OLD``) holds: a trigger, on either backend."""
    async with store._engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            await conn.execute(
                text(
                    f"CREATE TRIGGER refuse BEFORE {event} ON {table} WHEN {when} "
                    f"BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END"
                )
            )
            return
        await conn.execute(
            text(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"IF {when} THEN RAISE EXCEPTION '{REFUSAL}' USING ERRCODE = 'check_violation';"
                " END IF; RETURN NEW; END $$"
            )
        )
        await conn.execute(
            text(
                f"CREATE TRIGGER refuse BEFORE {event} ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION refuse()"
            )
        )


async def allow(store: Store, *, table: str) -> None:
    """Drop the trigger :func:`refuse` made."""
    async with store._engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            await conn.execute(text("DROP TRIGGER refuse"))
        else:
            await conn.execute(text(f"DROP TRIGGER refuse ON {table}"))


async def until(done: Callable[[], Awaitable[bool]], limit: float = 30) -> None:
    """Wait until ``done`` says so; ``limit`` only ends a test that would hang."""
    async with asyncio.timeout(limit):
        while not await done():  # noqa: ASYNC110 - the state is in the database and the daemon
            await asyncio.sleep(0.05)


@asynccontextmanager
async def running(service: Service) -> AsyncIterator[Daemon]:
    """The service's daemon, running while the block runs, stopped (its writes done) after."""
    daemon = service.daemon()
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    try:
        yield daemon
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


def test_every_limit_fits_its_columns() -> None:
    """Each field's bound is no wider than any column its value is written to."""
    columns = {
        "status": [
            watched_orders.c.status,
            transitions.c.from_status,
            transitions.c.to_status,
            events.c.status,
        ],
        "customer": [watched_orders.c.customer],
        "subscription": [watched_orders.c.subscription],
    }
    for name, cols in columns.items():
        for column in cols:
            assert isinstance(column.type, String)
            assert column.type.length is not None
            assert FIELD_LIMITS[name] <= column.type.length, (name, column)


@pytest.mark.usefixtures("database")
class TestPoisonAnswers:
    """A hostile string in an answer is a malformed poll of its order; the others are kept."""

    @pytest.mark.parametrize("poison", list(POISON))
    async def test_by_id(self, poison: str, tmp_path: Path) -> None:
        """Polled by id in one window, the poisoned order fails as malformed, the rest land."""
        upstream = Upstream(A, B, C)
        upstream.answers[B] |= POISON[poison]
        async with polling_against(tmp_path, upstream) as polling:
            with structlog.testing.capture_logs() as logs:
                await poll_by_id(polling, A, B, C)
            seen = await statuses(polling.store)
        assert seen == {
            A: ("ordered", 0, None),
            B: (None, 1, "malformed"),
            C: ("ordered", 0, None),
        }
        failed = [e for e in logs if e["event"] == "poll_failed"]
        assert [(e["order_id"], e["kind"]) for e in failed] == [(B, "malformed")]

    @pytest.mark.parametrize("poison", list(POISON))
    async def test_in_a_list_page(self, poison: str, tmp_path: Path) -> None:
        """A poisoned item spoils only its order: the page's others land, it fails by id."""
        upstream = Upstream(A, B, C)
        async with polling_against(tmp_path, upstream) as polling:
            await poll_by_id(polling, A, B, C)  # their customers are known: sweeps find them
            for order_id in (A, B, C):
                upstream.answers[order_id]["status"] = "checked"
            upstream.answers[B] |= POISON[poison]
            claims = await polling.store.polls.claim(
                [A, B, C], lease_until=utc_now() + polling.lease
            )
            planner = SweepPlanner(mode="list")
            [batch], by_id = planner.plan(claims)
            assert by_id == []
            with structlog.testing.capture_logs() as logs:
                swept = await polling.poller.sweep(batch, planner)
                await polling.store.polls.record(swept.outcomes)
                assert [claim.order_id for claim in swept.leftovers] == [B]
                async for _ in poll_now(polling.store, polling.poller, swept.leftovers):
                    pass
            seen = await statuses(polling.store)
        assert swept.pages == 1
        assert seen == {
            A: ("checked", 0, None),
            B: ("ordered", 1, "malformed"),
            C: ("checked", 0, None),
        }
        assert [e["order_id"] for e in logs if e["event"] == "list_item_malformed"] == [B]
        assert not [e for e in logs if e["event"] == "list_page_malformed"]
        failed = [e for e in logs if e["event"] == "poll_failed"]
        assert [(e["order_id"], e["kind"]) for e in failed] == [(B, "malformed")]


@pytest.mark.usefixtures("database")
class TestRefusedWrites:
    """A result the database refuses is retried alone; the daemon says when none can land."""

    async def test_a_refused_row_does_not_drop_its_batch(self, tmp_path: Path) -> None:
        """One sweep's results share a write; the one refused fails alone, the others land."""
        upstream = Upstream(A, B, C)
        telemetry = Counted()
        async with serve(catch_all(upstream)) as server:
            settings = make_settings(tmp_path, server.url, polling={"sweep": "list"})
            async with open_service(settings, telemetry=telemetry) as service:
                store = service.store
                await store.orders.watch([A, B, C], source="cli", now=utc_now())
                await poll_by_id(service, A, B, C)  # their customers are known: sweeps find them
                for order_id in (A, B, C):
                    upstream.answers[order_id]["status"] = "checked"
                # Only the database knows: B's snapshot is refused, whatever it holds.
                await refuse(store, table="snapshots", when=f"NEW.order_id = '{B}'")
                async with store._engine.begin() as conn:  # all three due at once
                    await conn.execute(update(watched_orders).values(next_poll_at=utc_now()))
                with structlog.testing.capture_logs() as logs:

                    async def batch_failed() -> bool:
                        return any(e["event"] == "batch_write_failed" for e in logs)

                    async with running(service):
                        await until(batch_failed)
                    # Stopped: the writer finished what it had, the failed batch included.
                seen = await statuses(store)
                b = await store.orders.get(B)
        assert upstream.seen.count("/meter-orders") == 1
        [batch] = [e for e in logs if e["event"] == "batch_write_failed"]
        assert batch["items"] == 3
        assert REFUSAL in batch["error"]
        assert seen == {
            A: ("checked", 0, None),
            B: ("ordered", 1, "internal"),
            C: ("checked", 0, None),
        }
        assert b is not None
        assert b.last_error is not None
        assert "could not be recorded" in b.last_error
        assert REFUSAL in b.last_error
        failed = [e for e in logs if e["event"] == "poll_failed"]
        assert [(e["order_id"], e["kind"]) for e in failed] == [(B, "internal")]
        assert telemetry.polls[PollResult.FAILED] == 1

    async def test_unready_while_nothing_can_be_recorded(self, tmp_path: Path) -> None:
        """Readiness says results cannot be recorded while every write fails, and recovers."""
        upstream = Upstream(A, B, C)
        async with serve(catch_all(upstream)) as server:
            settings = make_settings(tmp_path, server.url)
            async with open_service(settings) as service:
                store = service.store
                # Every poll's result sets last_polled_at: the database refuses them all.
                changed = (
                    "NEW.last_polled_at IS NOT OLD.last_polled_at"
                    if store._engine.dialect.name == "sqlite"
                    else "NEW.last_polled_at IS DISTINCT FROM OLD.last_polled_at"
                )
                await refuse(store, table="watched_orders", when=changed, event="UPDATE")
                await store.orders.watch([A, B], source="cli", now=utc_now())
                reasons: list[str | None] = []
                async with running(service) as daemon:

                    async def unready() -> bool:
                        reasons.append(daemon.readiness())
                        return reasons[-1] is not None

                    await until(unready)
                    await allow(store, table="watched_orders")
                    await store.orders.watch([C], source="cli", now=utc_now())

                    async def recovered() -> bool:
                        reasons.append(daemon.readiness())
                        order = await store.orders.get(C)
                        return (
                            reasons[-1] is None and order is not None and order.status is not None
                        )

                    await until(recovered)
        first = next(reason for reason in reasons if reason is not None)
        assert first.startswith("results cannot be recorded: ")
        assert REFUSAL in first
