"""Smooth pacing and exact due times: requests spread over each second, polls when due."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from datetime import timedelta
from pathlib import Path

import structlog
from sqlalchemy import update
from starlette.requests import Request
from starlette.responses import Response

from tests.support import error, make_settings, ok, order_body
from tracker.clock import utc_now
from tracker.demo.serving import catch_all, serve
from tracker.pacing import Pacer
from tracker.service import Service, open_service
from tracker.store.tables import watched_orders

from .test_polling import Upstream

ORDERS = [f"prdo_{letter * 24}" for letter in "abcdefgh"]
#: Limits for a step to happen at all; missing one fails the test, it times nothing.
PATIENCE = 60.0
#: The upstream answers at once; its timeout only bounds a hang (a loaded machine may take more
#: than the suite's default half second to carry an answer, and no test here is about it).
UPSTREAM = {"timeout": 10}
#: The tracker schedules on the wall clock and waits on the monotonic one; the two may drift
#: apart this much over a few seconds.
CLOCK_SLACK = 0.01


class TestSmoothPace:
    """A budget is spent evenly across each second, never in a burst."""

    async def test_requests_are_spread(self) -> None:
        """Requests start at least 1/rate apart, never more than the rate in any second."""
        loop = asyncio.get_running_loop()
        readings: list[float] = []

        def clock() -> float:
            """The loop's clock, each reading kept: the pacer's last is when it admitted."""
            readings.append(loop.time())
            return readings[-1]

        pacer = Pacer(20, 8, clock=clock)
        starts: list[float] = []

        async def one() -> None:
            async with pacer.slot():
                # The moment the pacer admitted this request, not a later reading of ours that
                # a busy machine could delay for one request and not the next.
                starts.append(readings[-1])

        await asyncio.gather(*(one() for _ in range(30)))
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        # 1/20 s apart; never 20 within a few ms.
        assert min(gaps) >= 0.05 - 1e-9
        for first in starts:
            assert sum(1 for t in starts if first <= t < first + 0.1) <= 3
            assert sum(1 for t in starts if first <= t < first + 1.0) <= 20


class TestDueTimes:
    """Each order is polled when it is due, not at the next whole tick."""

    async def test_never_polled_before_due(self, upstream: Upstream, tmp_path: Path) -> None:
        """An order due between ticks is polled at its due time, never before it."""
        scripted, url = upstream
        for order_id in ORDERS:
            scripted.script(order_id, ok("ordered"))
        settings = make_settings(
            tmp_path,
            url,
            polling={"interval": "1h"},
            upstream=UPSTREAM | {"requests_per_second": 50},
        )
        async with open_service(settings) as polling:
            await polling.store.orders.watch(ORDERS, source="cli", now=utc_now())
            # Due at spread moments within the next two seconds, not on tick boundaries.
            start = utc_now() + timedelta(seconds=0.5)
            due = {
                order_id: start + timedelta(seconds=0.23 * index)
                for index, order_id in enumerate(ORDERS)
            }
            async with polling.store._engine.begin() as conn:
                for order_id, moment in due.items():
                    await conn.execute(
                        update(watched_orders)
                        .where(watched_orders.c.order_id == order_id)
                        .values(next_poll_at=moment)
                    )
            stop = asyncio.Event()
            running = asyncio.create_task(polling.daemon().run(stop))
            try:
                async with asyncio.timeout(PATIENCE):
                    while not all(map(scripted.polls, ORDERS)):  # noqa: ASYNC110 - a server's list
                        await asyncio.sleep(0.05)
            finally:
                stop.set()
                await asyncio.wait_for(running, PATIENCE)
        for order_id in ORDERS:
            arrived = next(s.wall for s in scripted.seen if s.path.endswith(order_id))
            # Not early: a poll is never sent before its order is due (on the wall clock, which
            # both the due times and the arrivals are read from).
            assert arrived >= due[order_id].timestamp() - CLOCK_SLACK, order_id


async def checked(polling: Service, order: str) -> bool:
    """Whether ``order`` is stored as checked."""
    got = await polling.store.orders.get(order)
    return got is not None and got.status == "checked"


class TestRateLimitedOrder:
    """An order whose poll met a 429 is asked again when the pause ends, not backed off."""

    async def test_retried_after_the_pause(self, upstream: Upstream, tmp_path: Path) -> None:
        """A 429 order is asked again after its Retry-After with no failure or backoff counted."""
        scripted, url = upstream
        order = ORDERS[0]
        scripted.script(order, error(429, {"retry-after": "1"}), ok("checked"))
        settings = make_settings(tmp_path, url, polling={"interval": "1h"}, upstream=UPSTREAM)
        async with open_service(settings) as polling:
            await polling.store.orders.watch([order], source="cli", now=utc_now())
            stop = asyncio.Event()
            with structlog.testing.capture_logs() as logs:
                running = asyncio.create_task(polling.daemon().run(stop))
                try:
                    async with asyncio.timeout(PATIENCE):
                        while not await checked(polling, order):  # noqa: ASYNC110 - the store
                            await asyncio.sleep(0.05)
                finally:
                    stop.set()
                    await asyncio.wait_for(running, PATIENCE)
            got = await polling.store.orders.get(order)
        assert got is not None
        assert got.status == "checked"
        assert got.consecutive_failures == 0  # the 429 was about the budget, not the order
        # Asked again within the same poll, not as a failed poll rescheduled with a backoff.
        events = [entry["event"] for entry in logs]
        assert events.count("poll_rate_limited") == 1
        assert "poll_failed" not in events
        times = [s.at for s in scripted.seen if s.path.endswith(order)]
        assert len(times) == 2
        # The second request waited out the 1 s pause, which began after the 429 arrived.
        assert times[1] - times[0] >= 0.95


class TestRateLimitHeaders:
    """The upstream's ``ratelimit-remaining`` slows the tracker down before a 429 comes."""

    async def test_waits_for_the_reset(self, tmp_path: Path) -> None:
        """A spent ratelimit-remaining holds the next request until the reset, logged once."""
        arrivals: list[float] = []

        async def upstream(request: Request) -> Response:
            arrivals.append(time.monotonic())
            order = request.url.path.removeprefix("/meter-orders/")
            spent = (
                {"ratelimit-remaining": "0", "ratelimit-reset": "1"} if len(arrivals) == 1 else {}
            )
            return Response(
                json.dumps(order_body(order, status="ordered")),
                media_type="application/json",
                headers={"ratelimit-limit": "10", **spent},
            )

        async with serve(catch_all(upstream)) as server:
            # One request at a time: the second starts only after the first's answer was read.
            settings = make_settings(
                tmp_path,
                server.url,
                polling={"interval": "1h", "sweep": "ids"},
                upstream=UPSTREAM | {"max_concurrency": 1},
            )
            async with open_service(settings) as polling:
                await polling.store.orders.watch(ORDERS[:3], source="cli", now=utc_now())
                stop = asyncio.Event()
                with structlog.testing.capture_logs() as logs:
                    running = asyncio.create_task(polling.daemon().run(stop))
                    try:
                        async with asyncio.timeout(PATIENCE):
                            while len(arrivals) < 3:  # noqa: ASYNC110 - a server's list
                                await asyncio.sleep(0.05)
                    finally:
                        stop.set()
                        await asyncio.wait_for(running, PATIENCE)
        # The first answer said the window's budget was spent: the next request waited for
        # the reset (1 s), where the tracker's own budget (200/s) would have sent it at once.
        assert arrivals[1] - arrivals[0] >= 0.95
        spent = [e for e in logs if e["event"] == "upstream_budget_spent"]
        assert len(spent) == 1
        assert spent[0]["pause"] == 1.0
