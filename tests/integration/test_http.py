"""The HTTP listener on a real uvicorn server and a real client: health, readiness, metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.postgres import Cluster
from tests.support import (
    WEBHOOK_SECRET,
    HookReceiver,
    ScriptedUpstream,
    error,
    make_settings,
    ok,
)
from tracker.clock import utc_now
from tracker.config import Address
from tracker.demo.serving import catch_all, serve
from tracker.service import Service, open_service
from tracker.store import Store, open_store
from tracker.web import Metrics, Readiness, build_app, listening

#: Every test here runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.usefixtures("database")

A = "prdo_aaaaaaaaaaaaaaaaaaaaaaaa"
B = "prdo_bbbbbbbbbbbbbbbbbbbbbbbb"
C = "prdo_cccccccccccccccccccccccc"
Upstream = tuple[ScriptedUpstream, str]
#: Limits for a step to happen at all; missing one fails the test, it times nothing.
PATIENCE = 60.0
#: Samples by metric name, then by their labels (as sorted tuples).
Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


@asynccontextmanager
async def serving(
    store: Store,
    metrics: Metrics | None = None,
    readiness: Readiness | None = None,
    sinks: tuple[str, ...] = (),
) -> AsyncIterator[httpx.AsyncClient]:
    """The app on a free loopback port, and a client pointed at it."""
    app = build_app(
        store=store, metrics=metrics or Metrics(), readiness=readiness, sinks=lambda: sinks
    )
    async with (
        listening(app, Address("127.0.0.1", 0)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        yield client


@asynccontextmanager
async def running(service: Service) -> AsyncIterator[Readiness]:
    """A daemon over ``service`` while the block runs; yields its readiness."""
    stop = asyncio.Event()
    daemon = service.daemon()
    task = asyncio.create_task(daemon.run(stop))
    try:
        yield daemon.readiness
        assert not task.done(), task
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


async def until(check: Callable[[], Awaitable[bool]], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {seconds} s: {what}")
        await asyncio.sleep(0.05)


async def scrape(client: httpx.AsyncClient) -> Samples:
    answer = await client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[labels] = sample.value
    return samples


def hook_sink(name: str, url: str) -> dict[str, Any]:
    return {"name": name, "type": "webhook", "url": url, "secret": WEBHOOK_SECRET, "on": ["*"]}


class TestHealth:
    """/healthz answers while the process runs; /readyz asks the database and the daemon."""

    async def test_healthz_and_readyz_on_a_live_database(self, database: str) -> None:
        """Health and readiness answer 200; unknown routes and methods get JSON 404 and 405."""
        async with open_store(database) as store, serving(store) as client:
            health = await client.get("/healthz")
            ready = await client.get("/readyz")
            missing = await client.get("/nowhere")
            wrong = await client.post("/healthz")
        assert (health.status_code, health.json()) == (200, {"status": "ok"})
        assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
        assert missing.status_code == 404
        assert missing.json() == {"error": {"code": "not_found", "message": "Not Found"}}
        assert wrong.status_code == 405
        assert wrong.json()["error"]["code"] == "method_not_allowed"

    async def test_readyz_says_why_the_daemon_is_not_ready(self, database: str) -> None:
        """Readiness answers 503 with the daemon's reason (tracker_ready 0); health stays 200."""
        reason: list[str | None] = ["the scheduler has not ticked for 12 s"]
        async with (
            open_store(database) as store,
            serving(store, readiness=lambda: reason[0]) as client,
        ):
            unready = await client.get("/readyz")
            gauge_unready = (await scrape(client))["tracker_ready"]
            reason[0] = None
            ready = await client.get("/readyz")
            gauge_ready = (await scrape(client))["tracker_ready"]
            health = await client.get("/healthz")
        assert (gauge_unready, gauge_ready) == ({(): 0}, {(): 1})  # tracker_ready follows
        assert unready.status_code == 503
        assert unready.json() == {
            "status": "unready",
            "reason": "the scheduler has not ticked for 12 s",
        }
        assert ready.status_code == 200
        assert health.status_code == 200  # alive all the same


class TestMetrics:
    """Counters from the daemon's polls, requests, transitions and attempts; gauges from the
    database."""

    async def test_after_polls_and_deliveries(self, upstream: Upstream, tmp_path: Path) -> None:
        """Polls, requests, transitions and attempts are counted; outbox and status gauges match."""
        scripted, url = upstream
        scripted.script(A, ok("ordered"), ok("checked"))
        scripted.script(B, error(500))
        scripted.script(C, ok("ordered"))
        hooks, flaky = HookReceiver(), HookReceiver(answers=(500,))
        async with serve(catch_all(hooks)) as good, serve(catch_all(flaky)) as bad:
            # The peers answer at once; the timeouts only bound a hang (a loaded machine may take
            # more than the suite's usual half second to carry an answer).
            settings = make_settings(
                tmp_path,
                url,
                upstream={"timeout": 10},
                polling={"interval": 0.2, "jitter": 0},
                delivery={"backoff": ["10m"], "timeout": 10},
                sinks=[hook_sink("hooks", good.url), hook_sink("flaky", bad.url)],
            )
            metrics = Metrics(cache=0)
            started = time.time()
            async with open_service(settings, telemetry=metrics) as service:
                await service.store.orders.watch([A, B, C], source="cli", now=utc_now())
                async with (
                    running(service) as readiness,
                    serving(service.store, metrics, readiness, ("hooks", "flaky")) as client,
                ):

                    async def delivered() -> bool:
                        return (
                            len(hooks.accepted) == 1
                            and len(flaky.hooks) == 1
                            and scripted.polls(C) >= 2
                        )

                    await until(delivered, PATIENCE, "both sinks attempted, C polled twice")
                    samples: Samples = {}

                    async def recorded() -> bool:
                        nonlocal samples
                        samples = await scrape(client)  # attempts are written in batches
                        return samples["tracker_outbox_pending"][(("sink", "hooks"),)] == 0

                    await until(recorded, PATIENCE, "the delivered attempt recorded")
                    ready = await client.get("/readyz")
                    scraped = time.time()
        assert ready.status_code == 200, ready.text
        polls = samples["tracker_polls_total"]
        assert polls[(("result", "changed"),)] == 3  # A's first answer and "checked", C's first
        assert polls[(("result", "unchanged"),)] >= 1
        assert polls[(("result", "failed"),)] >= 1
        requests = samples["tracker_upstream_requests_total"]
        assert requests[(("code", "200"),)] >= 3
        assert requests[(("code", "500"),)] >= 1
        durations = samples["tracker_upstream_request_duration_seconds_count"]
        assert durations[()] == sum(requests.values())
        assert samples["tracker_transitions_total"] == {
            (("from_status", "ordered"), ("to_status", "checked")): 1
        }
        assert samples["tracker_deliveries_total"] == {
            (("result", "delivered"), ("sink", "hooks")): 1,
            (("result", "failed"), ("sink", "flaky")): 1,
            # Each sink's dead letters are served from 0, so that the first one is an increase.
            (("result", "dead"), ("sink", "flaky")): 0,
            (("result", "dead"), ("sink", "hooks")): 0,
        }
        assert samples["tracker_outbox_pending"] == {
            (("sink", "flaky"),): 1,
            (("sink", "hooks"),): 0,
        }
        ages = samples["tracker_outbox_oldest_pending_age_seconds"]
        assert ages[(("sink", "flaky"),)] > 0
        assert ages[(("sink", "hooks"),)] == 0
        watched = samples["tracker_watched_orders"]
        assert watched[(("status", "checked"),)] == 1
        assert watched[(("status", "ordered"),)] == 1
        assert watched[(("status", "none"),)] == 1  # B never answered
        assert watched[(("status", "installed"),)] == 0  # every status is there, if at 0
        assert len(watched) == 15
        assert samples["tracker_ready"] == {(): 1}
        assert set(samples["tracker_stuck_orders"].values()) == {0}  # no [alerts.stuck] here
        last = samples["tracker_last_successful_poll_timestamp_seconds"][()]
        assert started <= last <= scraped  # a poll of this run, on the wall clock

    async def test_gauges_are_read_once_per_cache_period(self, database: str) -> None:
        """Database gauges are read once per cache period, and fresh with no cache."""
        async with open_store(database) as store:
            await store.orders.watch([A], source="cli", now=utc_now())
            async with serving(store, Metrics(cache=60)) as cached:
                before = await scrape(cached)
                await store.orders.watch([B, C], source="cli", now=utc_now())
                again = await scrape(cached)
            async with serving(store, Metrics(cache=0)) as fresh:
                now = await scrape(fresh)
        key = (("status", "none"),)
        assert before["tracker_watched_orders"][key] == 1
        assert again["tracker_watched_orders"][key] == 1  # within the period: no query
        assert now["tracker_watched_orders"][key] == 3

    async def test_retired_and_removed_orders_are_not_counted(self, database: str) -> None:
        """Removed orders are not counted, and no last-poll time shows before a poll."""
        async with open_store(database) as store:
            await store.orders.watch([A, B], source="cli", now=utc_now())
            await store.orders.unwatch([B], now=utc_now())
            async with serving(store) as client:
                samples = await scrape(client)
        assert samples["tracker_watched_orders"][(("status", "none"),)] == 1
        assert samples["tracker_polls_total"][(("result", "changed"),)] == 0
        assert "tracker_last_successful_poll_timestamp_seconds" not in samples


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
class TestDatabaseGone:
    """PostgreSQL stopped under a serving daemon: unready, gauges left out, ready again."""

    async def test_unready_while_the_database_is_gone(
        self, upstream: Upstream, tmp_path: Path, postgres: Cluster
    ) -> None:
        """Without the database, readiness is 503 naming it and gauges are left out, then back."""
        scripted, url = upstream
        scripted.script(A, ok("ordered"))
        settings = make_settings(
            tmp_path, url, upstream={"timeout": 10}, polling={"interval": 0.5, "jitter": 0}
        )
        metrics = Metrics(cache=0)
        async with open_service(settings, telemetry=metrics) as service:
            await service.store.orders.watch([A], source="cli", now=utc_now())
            async with (
                running(service) as readiness,
                serving(service.store, metrics, readiness) as client,
            ):

                async def ready() -> bool:
                    return (await client.get("/readyz")).status_code == 200

                async def polled() -> bool:
                    order = await service.store.orders.get(A)
                    return order is not None and order.status == "ordered"

                await until(polled, PATIENCE, "A polled and recorded")
                assert await ready()
                await asyncio.to_thread(postgres.stop)
                try:
                    unready = await client.get("/readyz")
                    health = await client.get("/healthz")
                    during = await scrape(client)
                finally:
                    await asyncio.to_thread(postgres.start)
                await until(ready, PATIENCE, "ready again once the database is back")
                after = await scrape(client)
        assert unready.status_code == 503
        assert unready.json()["status"] == "unready"
        assert f"127.0.0.1:{postgres.port}/" in unready.json()["reason"]
        assert health.status_code == 200
        assert "tracker_polls_total" in during  # the counters are this process's own
        assert "tracker_watched_orders" not in during
        assert during["tracker_ready"] == {(): 0}  # the database does not answer
        # Back with the database (the test cluster may lose its last commits: no fsync).
        assert len(after["tracker_watched_orders"]) >= 14
