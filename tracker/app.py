"""The one place that wires settings, store, upstream client, poller and daemon together."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

import httpx

from tracker.clock import utc_now
from tracker.config import Settings
from tracker.daemon import Daemon, TransitionListener
from tracker.outbox import Dispatcher, window
from tracker.poller import Poller
from tracker.sinks import build_sinks, routes
from tracker.store import Store, open_store
from tracker.upstream import build_client

#: How long a claimed order stays hidden from other ticks beyond two request timeouts.
LEASE_MARGIN = timedelta(seconds=60)
#: Polling counts as stalled when orders wait and no poll was recorded for two request timeouts,
#: one gap of the budget, and this much more (an event loop busy writing a large batch).
STALL_MARGIN = 10.0


def delivery_lease(settings: Settings) -> timedelta:
    """How long a claimed delivery is hidden from other claims: its queue, sent at the slowest."""
    rounds = window(settings.delivery.max_concurrency) // settings.delivery.max_concurrency
    return (rounds + 1) * max(settings.delivery.timeout, settings.smtp.timeout) + LEASE_MARGIN


@asynccontextmanager
async def open_outbox(settings: Settings, store: Store) -> AsyncIterator[Dispatcher]:
    """A dispatcher over the configured sinks; their HTTP client is closed afterwards."""
    limit = settings.delivery.max_concurrency * max(len(settings.sinks), 1)
    http = httpx.AsyncClient(
        timeout=httpx.Timeout(settings.delivery.timeout.total_seconds()),
        limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
        follow_redirects=False,
        trust_env=False,
        headers={"User-Agent": "meter-order-tracker", "Accept-Encoding": "identity"},
    )
    try:
        yield Dispatcher(
            store=store,
            sinks=build_sinks(settings, http),
            backoff=settings.delivery.backoff,
            clock=utc_now,
            concurrency=settings.delivery.max_concurrency,
            lease=delivery_lease(settings),
        )
    finally:
        await http.aclose()


@dataclass(frozen=True, slots=True, kw_only=True)
class Polling:
    """What polling needs: the store, a poller on an open upstream client, the outbox."""

    settings: Settings
    store: Store
    poller: Poller
    dispatcher: Dispatcher

    @property
    def lease(self) -> timedelta:
        """How long a claim hides an order from other ticks."""
        return 2 * self.settings.upstream.timeout + LEASE_MARGIN

    def daemon(self, on_transition: TransitionListener | None = None) -> Daemon:
        """A daemon over this store and poller, sized from the settings."""
        upstream = self.settings.upstream
        # Enough queued work for two seconds at the budget keeps the workers busy between ticks.
        capacity = max(2 * int(upstream.requests_per_second) + upstream.max_concurrency, 4)
        return Daemon(
            store=self.store,
            poller=self.poller,
            clock=utc_now,
            workers=upstream.max_concurrency,
            capacity=min(capacity, 2000),
            lease=self.lease,
            stop_grace=upstream.timeout.total_seconds() + 1,
            stall_after=2 * upstream.timeout.total_seconds()
            + 1 / upstream.requests_per_second
            + STALL_MARGIN,
            on_transition=on_transition,
            dispatcher=self.dispatcher,
        )


@asynccontextmanager
async def open_polling(settings: Settings, *, one_shot: bool = False) -> AsyncIterator[Polling]:
    """Yield the store and a poller; configured orders are watched first.

    ``one_shot`` (``tracker poll``): a request does not wait out a pause longer than the
    request timeout; it fails as rate-limited and the order keeps its schedule.
    """
    async with (
        open_store(settings.database.url) as store,
        open_outbox(settings, store) as dispatcher,
    ):
        patience = settings.upstream.timeout.total_seconds() if one_shot else None
        client, http = build_client(settings.upstream, patience=patience)
        try:
            await store.watch_from_config(settings.watch.orders, now=utc_now())
            poller = Poller(
                client=client,
                policy=settings.polling.policy(),
                clock=utc_now,
                rng=random.Random(),
                routes=routes(settings),
            )
            yield Polling(settings=settings, store=store, poller=poller, dispatcher=dispatcher)
        finally:
            await http.aclose()
