"""Histories for the reports' tests: orders polled at set days through the store's recording."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

from tests.support import order_body
from tracker.diff import decide
from tracker.model import MeterOrder
from tracker.store import PollOutcome, Store, upgrade
from tracker.store.db import connect

#: Day 0 of a history: a Monday at midnight UTC.
D0 = datetime(2026, 10, 5, tzinfo=UTC)
DAY = timedelta(days=1)
#: Per order: its provider, and each poll's time (days after ``D0``, or a timedelta) and status.
History = Mapping[str, tuple[str, list[tuple["float | timedelta", str]]]]


async def record_history(store: Store, history: History) -> None:
    """Poll each order of ``history`` at its times, through the store's own recording."""
    await store.orders.watch(list(history), source="manual", now=D0 - DAY)
    steps = sorted(
        (D0 + (day if isinstance(day, timedelta) else day * DAY), order_id, status, provider)
        for order_id, (provider, journey) in history.items()
        for day, status in journey
    )
    for number, (at, order_id, status, provider) in enumerate(steps):
        await poll_once(store, order_id, status, at=at, provider=provider, number=number)


async def poll_once(
    store: Store,
    order_id: str,
    status: str,
    *,
    at: datetime,
    provider: str = "metrify",
    number: int = 0,
    retire: bool = False,
) -> None:
    """Record one poll of ``order_id`` finding it in ``status`` at ``at`` (its transition's
    event numbered ``number``); ``retire``: the poll retires it (its final grace is over)."""
    [claim] = await store.polls.claim([order_id], lease_until=at + DAY)
    body = json.dumps(order_body(order_id, status, provider=provider)).encode()
    order = MeterOrder.from_json(body, expected_id=order_id)
    decision = decide(claim.status, claim.fingerprint, order)
    event_id = f"evt_test{number:04d}" if decision.change is not None else None
    await store.polls.record(
        [
            PollOutcome(
                claim=claim,
                polled_at=at,
                next_poll_at=at + DAY,
                order=order,
                decision=decision,
                event_id=event_id,
                final_since=at if retire else None,
                retire=retire,
            )
        ]
    )


@asynccontextmanager
async def holding(database: str, history: History) -> AsyncIterator[Store]:
    """A store on ``database``, migrated, holding ``history``; closed at the block's end."""
    upgrade(database)
    opened = Store(connect(database))
    try:
        await record_history(opened, history)
        yield opened
    finally:
        await opened.close()
