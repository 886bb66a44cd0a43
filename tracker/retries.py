"""Retrying deliveries: one way for the pages, the API and ``tracker deliveries retry``.

A retry makes deliveries pending again, due now, with their attempts counted afresh; the
daemon's outbox sends them at its next pass. Each retried delivery is named by its event, the
order the event is about and the sink, never by an internal row number.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from tracker.errors import InvalidOrderId
from tracker.model import Delivery, validate_order_id
from tracker.text import printable

if TYPE_CHECKING:
    from tracker.store import Store

#: The characters an event id may have (as the API's filter reads them).
EVENT_ID = re.compile(r"[A-Za-z0-9_.:-]{1,40}")
#: A sink name as the configuration allows them.
SINK_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
#: How each kind of event reads in a list of dead letters.
KIND_LABELS = {
    "transition": "transition",
    "stuck": "stuck",
    "poll_failing": "poll failing",
    "poll_recovered": "recovered",
    "digest": "digest",
}


def kind_label(kind: str | None) -> str:
    """An event's kind in words; ``unknown`` for an event stored nowhere."""
    return KIND_LABELS.get(kind or "", kind or "unknown")


async def filter_problem(
    store: Store, *, sink: str | None, order_id: str | None, configured: Collection[str]
) -> str | None:
    """What is wrong with a bulk retry's sink and order, in one line; ``None`` if nothing.

    A sink must be configured or have deliveries; an order must be or have been watched.
    """
    if sink is not None and (
        not SINK_NAME.fullmatch(sink)
        or (sink not in configured and not await store.outbox.page(sink=sink, limit=1))
    ):
        known = ", ".join(sorted(configured)) or "none configured"
        return (
            f"sink {printable(sink)[:80]!r} is not configured and has no deliveries; sinks: {known}"
        )
    if order_id is not None:
        try:
            validate_order_id(order_id)
        except InvalidOrderId as exc:
            return str(exc)
        if not await store.reports.watched_ids([order_id]):
            return f"order {order_id} was never watched (see the search or `tracker watch list`)"
    return None


async def unknown_events(store: Store, event_ids: Sequence[str]) -> list[str]:
    """The ids among ``event_ids`` that are malformed or have no delivery stored."""
    wellformed = [e for e in event_ids if EVENT_ID.fullmatch(e)]
    stored = {d.event_id for d in await store.reports.deliveries_of(wellformed)}
    return [e for e in dict.fromkeys(event_ids) if e not in stored]


async def count_dead(store: Store, *, sink: str | None = None, order_id: str | None = None) -> int:
    """How many dead deliveries a bulk retry of ``sink`` and ``order_id`` would queue."""
    return await store.outbox.count_dead(sink=sink, order_id=order_id)


async def retry_dead(
    store: Store, *, sink: str | None = None, order_id: str | None = None, now: datetime
) -> list[Delivery]:
    """Queue every dead delivery (to ``sink`` only, of ``order_id`` only) again."""
    return await store.outbox.requeue(sink=sink, order_id=order_id, now=now)


async def retry_events(store: Store, event_ids: Sequence[str], *, now: datetime) -> list[Delivery]:
    """Queue the undelivered deliveries of ``event_ids`` again."""
    return await store.outbox.requeue(event_ids=list(dict.fromkeys(event_ids)), now=now)


def scope_text(sink: str | None, order_id: str | None) -> str:
    """Which dead letters a bulk retry takes, in words: ``all``, ``of sink ops``, …"""
    parts = [f"to sink {sink}"] if sink else []
    if order_id:
        parts.append(f"of order {order_id}")
    return " ".join(parts) if parts else "all"
