"""List sweeps against the simulated upstream: pages instead of requests, nothing lost."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import structlog
from sqlalchemy import func, select
from starlette.requests import Request
from starlette.responses import Response

from tests.support import STATIC_TOKEN, make_settings, order_body, run_until
from tracker.clock import utc_now
from tracker.demo.serving import catch_all, serve
from tracker.demo.simulator import Script, Simulator, order_id, steady_scripts
from tracker.service import Service, open_service
from tracker.store.tables import snapshots, transitions, watched_orders

#: Orders that move while the test runs: ordered, then checked after a few seconds.
MOVING = [
    Script(
        order_id=order_id(f"moving-{i}"),
        provider="metrify",
        steps=(("ordered", 3.0 + i), ("checked", 0.0)),
    )
    for i in range(3)
]
SWEEP_POLLING = {"interval": 2, "jitter": 1, "sweep": "auto"}


@pytest.fixture
async def simulator() -> AsyncIterator[tuple[Simulator, str]]:
    sim = Simulator([*steady_scripts(40), *MOVING], unwatched=30, static_token=STATIC_TOKEN)
    async with serve(sim.app) as server:
        yield sim, server.url


class TestSweeps:
    """Due orders are learned from list pages, each applied exactly as a poll by id."""

    async def test_pages_replace_requests(
        self, database: str, simulator: tuple[Simulator, str], tmp_path: Path
    ) -> None:
        """Later passes read list pages instead of ids, storing only watched orders as listed."""
        sim, url = simulator
        watched = sim.order_ids
        settings = make_settings(tmp_path, url, polling=SWEEP_POLLING)
        async with open_service(settings) as service:
            await service.store.orders.watch(watched, source="cli", now=utc_now())
            first_pass = len(watched)

            async def moved() -> bool:
                orders = [await service.store.orders.get(o.order_id) for o in MOVING]
                return sim.stats.list_requests >= 3 and all(
                    o is not None and o.status == "checked" for o in orders
                )

            await run_until(service, moved)
            for script in MOVING:
                history = await service.store.reports.history(script.order_id)
                assert history is not None
                assert [(t.from_status, t.to_status) for t in history.transitions] == [
                    ("ordered", "checked")
                ]
                async with service.store._engine.connect() as conn:
                    stored_payload = await conn.scalar(
                        select(transitions.c.payload).where(
                            transitions.c.event_id == history.transitions[0].event_id
                        )
                    )
                payload = json.loads(stored_payload or "{}")
                # The event's order is the object as the list returned it.
                assert payload["data"]["order"]["customer"] == "cus_" + script.order_id[5:]
                assert payload["data"]["order"]["status"] == "checked"
            async with service.store._engine.connect() as conn:
                stored = await conn.scalar(select(func.count()).select_from(watched_orders))
                ids = set(await conn.scalars(select(snapshots.c.order_id).distinct()))
        assert stored == len(watched)  # the organisation's other orders are not stored
        assert ids == set(watched)
        # The first pass polls by id (customers are not known yet); later ones read pages.
        assert sim.stats.list_requests >= 3
        assert sim.stats.id_requests <= first_pass + 3
        assert sim.stats.items_served >= len(watched)

    async def test_an_ignored_filter_falls_back(self, tmp_path: Path) -> None:
        """A list that ignores a filter is dropped to the next filter, then to polls by id."""
        sim = Simulator(
            steady_scripts(12),
            unwatched=20,
            static_token=STATIC_TOKEN,
            ignore_filters=("customer", "subscription"),
        )
        async with serve(sim.app) as server:
            settings = make_settings(tmp_path, server.url, polling=SWEEP_POLLING)
            async with open_service(settings) as service:
                await service.store.orders.watch(sim.order_ids, source="cli", now=utc_now())
                with structlog.testing.capture_logs() as logs:

                    async def third_pass() -> bool:
                        return sim.stats.id_requests >= 3 * len(sim.order_ids) - 2

                    await run_until(service, third_pass)
                orders = [await service.store.orders.get(o) for o in sim.order_ids]
        ignored = [e for e in logs if e["event"] == "list_filter_ignored"]
        assert [e["then"] for e in ignored] == ["filter[subscription][in]", "polls by id"]
        assert [e["filter"] for e in ignored] == [
            "filter[customer][in]",
            "filter[subscription][in]",
        ]
        assert sim.stats.list_requests == 2  # once per filter, then never again
        for order in orders:  # every order still refreshed, by id
            assert order is not None
            assert order.status == "ordered"
            assert order.consecutive_failures == 0


def json_response(
    body: object, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(json.dumps(body), status, headers=headers, media_type="application/json")


class PagedUpstream:
    """Answers ``count`` orders by id ("ordered", each its own customer), and list requests
    with ``listing``; remembers every path asked for."""

    def __init__(
        self, seed: str, count: int, listing: Callable[[Request], Response] | None = None
    ) -> None:
        self.orders = [order_id(f"{seed}-{i}") for i in range(count)]
        self.answers = {
            o: order_body(o, status="ordered", customer=f"cus_{o[5:]}") for o in self.orders
        }
        self.listing = listing or (lambda _request: json_response({}, 404))
        self.seen: list[str] = []

    async def __call__(self, request: Request) -> Response:
        self.seen.append(request.url.path)
        if request.url.path == "/meter-orders":
            return self.listing(request)
        return json_response(self.answers[request.url.path.removeprefix("/meter-orders/")])


@asynccontextmanager
async def swept_service(tmp_path: Path, paged: PagedUpstream) -> AsyncIterator[Service]:
    """A service preferring list pages against ``paged``, its orders watched."""
    async with serve(catch_all(paged)) as server:
        settings = make_settings(tmp_path, server.url, polling={**SWEEP_POLLING, "sweep": "list"})
        async with open_service(settings) as service:
            await service.store.orders.watch(paged.orders, source="cli", now=utc_now())
            yield service


BAD_PAGES: dict[str, Callable[[dict[str, Any]], Any]] = {
    "not_a_list": lambda _page: {"object": "meter_order"},
    "no_has_more": lambda page: {"object": "list", "items": page["items"]},
    "not_meter_orders": lambda page: {
        **page,
        "items": [{**item, "object": "customer"} for item in page["items"]],
    },
    # The first page (good, see the test) leads to cursor "same"; the page there leads to
    # "same" again: that second page is the bad one.
    "repeated_cursor": lambda page: {**page, "has_more": True, "next_page": "same"},
}


class TestBadPages:
    """A bad list page stores nothing from itself; its orders are polled by id instead."""

    @pytest.mark.parametrize("kind", list(BAD_PAGES))
    async def test_bad_page(self, kind: str, tmp_path: Path) -> None:
        """A malformed list page is logged and stores nothing; its orders are polled by id."""
        paged = PagedUpstream("bad", 3)
        # The bad page says "cancelled" where the answers by id say "ordered": a snapshot or
        # a transition to cancelled would come from the bad page.
        listed = [{**answer, "status": "cancelled"} for answer in paged.answers.values()]

        def listing(request: Request) -> Response:
            body = BAD_PAGES[kind]({"object": "list", "items": listed, "has_more": False})
            if kind == "repeated_cursor" and "cursor" not in request.query_params:
                # A good first page, empty: no order on it can look like one its filter
                # should have kept out, so the sweep always goes on to the bad second page.
                body = {**body, "items": []}
            return json_response(body, headers={"x-request-id": "req_page"})

        paged.listing = listing

        # A repeated cursor shows only on the page asked for with it: the second.
        pages = 2 if kind == "repeated_cursor" else 1

        async with swept_service(tmp_path, paged) as service:

            async def paged_then_polled() -> bool:
                # Judged by what was stored, not by what the upstream was asked: an answer
                # is recorded a moment after the request reached the upstream.
                if paged.seen.count("/meter-orders") < pages:
                    return False
                for order in paged.orders:
                    history = await service.store.reports.history(order)
                    if history is None or not history.snapshots:
                        return False
                return True

            with structlog.testing.capture_logs() as logs:
                await run_until(service, paged_then_polled)
            histories = [await service.store.reports.history(o) for o in paged.orders]
        malformed = [e for e in logs if e["event"] == "list_page_malformed"]
        assert malformed
        assert malformed[0]["request_id"] == "req_page"
        # Each order has its one snapshot from the poll by id, none from the bad page.
        for history in histories:
            assert history is not None
            assert [snapshot.status for snapshot in history.snapshots] == ["ordered"]
            assert history.transitions == ()


class TestDiscovery:
    """Many orders never answered are learned from the organisation's list, not one by one."""

    async def test_first_pass_reads_the_list(self, database: str, tmp_path: Path) -> None:
        """The first pass reads the whole list once and polls by id only what it did not show."""
        sim = Simulator(steady_scripts(260), unwatched=90, static_token=STATIC_TOKEN)
        # Watched, but unknown to the upstream: no list shows them; polled by id, they are 404.
        strangers = [order_id(f"stranger-{i}") for i in range(210)]
        async with serve(sim.app) as server:
            settings = make_settings(tmp_path, server.url, polling=SWEEP_POLLING)
            async with open_service(settings) as service:
                await service.store.orders.watch(
                    [*sim.order_ids, *strangers], source="cli", now=utc_now()
                )
                with structlog.testing.capture_logs() as logs:

                    async def all_seen() -> bool:
                        async with service.store._engine.connect() as conn:
                            seen = await conn.scalar(
                                select(func.count(snapshots.c.order_id.distinct()))
                            )
                        return seen == len(sim.order_ids)

                    async def strangers_tried() -> bool:
                        tried = [await service.store.orders.get(o) for o in strangers]
                        return await all_seen() and all(
                            o is not None and o.last_error_kind == "not_found" for o in tried
                        )

                    await run_until(service, strangers_tried)
        ended = [e for e in logs if e["event"] == "discovery_ended"]
        assert len(ended) == 1  # the whole list once; what it did not show is polled by id
        assert ended[0]["found"] >= len(sim.order_ids) - 10
        # 350 orders in the organisation: four pages, where ids would have taken 260 requests.
        # (Later sweeps read the list again as orders come due every 2 s; how many happen
        # before the strangers are tried depends on the machine, so only the first is judged.)
        assert ended[0]["pages"] == 4
        assert sim.stats.id_requests <= len(strangers) + 10


class TestRefusedList:
    """A token allowed orders by id but not the list: polls by id go on, nothing fails."""

    async def test_list_refused_alone(self, tmp_path: Path) -> None:
        """A 403 list is asked once and logged once, while polls by id go on without failures."""
        refused = {"code": "FORBIDDEN", "message": "no list for you", "requestId": "r1"}
        paged = PagedUpstream("refused", 4, lambda _request: json_response(refused, 403))

        async def twice_by_id() -> bool:
            return all(paged.seen.count(f"/meter-orders/{o}") >= 2 for o in paged.orders)

        async with swept_service(tmp_path, paged) as service:
            with structlog.testing.capture_logs() as logs:
                await run_until(service, twice_by_id)
            watched = [await service.store.orders.get(o) for o in paged.orders]
        assert paged.seen.count("/meter-orders") == 1  # asked once, then left alone
        assert [e["event"] for e in logs if e["event"] == "list_unavailable"] == [
            "list_unavailable"
        ]
        for order in watched:  # no failure recorded, no pause held the polls by id back
            assert order is not None
            assert order.consecutive_failures == 0
            assert order.last_error_kind is None
