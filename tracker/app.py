"""The one place that wires settings, store, upstream client and poller together.

The daemon's wiring (the outbox, its sinks, the scheduler) is in ``tracker.service``: polling once
(``tracker poll``) loads none of it.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

from tracker.clock import utc_now
from tracker.config import Settings
from tracker.poller import Poller
from tracker.store import Store, open_store
from tracker.telemetry import SILENT, Telemetry
from tracker.upstream import build_client

#: How long a claimed order stays hidden from other ticks beyond two request timeouts.
LEASE_MARGIN = timedelta(seconds=60)


@dataclass(frozen=True, slots=True, kw_only=True)
class Polling:
    """What polling needs: the store and a poller on an open upstream client."""

    settings: Settings
    store: Store
    poller: Poller

    @property
    def lease(self) -> timedelta:
        """How long a claim hides an order from other ticks."""
        return 2 * self.settings.upstream.timeout + LEASE_MARGIN


@asynccontextmanager
async def open_polling(settings: Settings, *, one_shot: bool = False) -> AsyncIterator[Polling]:
    """Yield the store and a poller; configured orders are watched first.

    ``one_shot`` (``tracker poll``): a request does not wait out a pause longer than the
    request timeout; it fails as rate-limited and the order keeps its schedule. Its store is a
    plain one (``open_store(plain=True)``, no asyncio extension or ORM: some 6 MiB and, on
    SQLite, a thread hop per statement less): it claims before the first request and records
    each window once its requests are answered, so only the lease renewal (a few statements
    every third of a lease) runs while requests are in flight.
    """
    async with (
        open_store(settings.database.url, plain=one_shot) as store,
        polling_on(settings, store, one_shot=one_shot) as polling,
    ):
        yield polling


@asynccontextmanager
async def polling_on(
    settings: Settings, store: Store, *, one_shot: bool = False, telemetry: Telemetry = SILENT
) -> AsyncIterator[Polling]:
    """A poller on an open upstream client over ``store``; the client is closed afterwards.

    ``telemetry`` hears of every poll and upstream request.
    """
    patience = settings.upstream.timeout.total_seconds() if one_shot else None
    client, http = build_client(settings.upstream, patience=patience, telemetry=telemetry)
    try:
        await store.orders.watch_from_config(settings.watch.orders, now=utc_now())
        poller = Poller(
            client=client,
            policy=settings.polling.policy(),
            clock=utc_now,
            rng=random.Random(),
            routes=settings.routes(),
            failing_after=settings.alerts.failing_after,
            telemetry=telemetry,
        )
        yield Polling(settings=settings, store=store, poller=poller)
    finally:
        await http.aclose()
