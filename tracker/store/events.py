"""Events that are not transitions (stuck, failing, recovered, digests) with their outbox rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import func, insert, select, tuple_, update

from tracker.model import DeliveryState, Event, EventKind
from tracker.store.sql import Repository, chunks, insert_new, lock_in_order
from tracker.store.tables import deliveries, events
from tracker.store.tables import watched_orders as w

if TYPE_CHECKING:
    from tracker.store.sql import Conn


@dataclass(frozen=True, slots=True, kw_only=True)
class Stay:
    """An order's stay in its status, from ``since``."""

    order_id: str
    status: str
    since: datetime


#: The events that are alerts about one order (a digest is about none).
ALERT_KINDS = (EventKind.STUCK, EventKind.POLL_FAILING, EventKind.POLL_RECOVERED)


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert:
    """An alert raised about one order: stuck, poll failing, or polled again."""

    event_id: str
    #: One of :data:`ALERT_KINDS`' values.
    kind: str
    #: The order's status when it was raised.
    status: str | None
    raised_at: datetime
    #: The webhook body (``tracker.sinks.render.alert_body``), as sent.
    payload: str


async def order_alerts(conn: Conn, order_id: str) -> list[Alert]:
    """The alerts raised about ``order_id``, oldest first (found by the ``order_id, id``
    index; an order has few, so sorting them by time costs nothing)."""
    found = await conn.execute(
        select(
            events.c.event_id, events.c.kind, events.c.status, events.c.raised_at, events.c.payload
        )
        .where(events.c.order_id == order_id, events.c.kind.in_([k.value for k in ALERT_KINDS]))
        .order_by(events.c.raised_at, events.c.id)
    )
    return [
        Alert(
            event_id=row.event_id,
            kind=row.kind,
            status=row.status,
            raised_at=row.raised_at,
            payload=row.payload,
        )
        for row in found
    ]


class Events(Repository):
    """Raising events once (their ``key`` is unique across daemons) and finding stuck stays."""

    async def stuck(
        self, thresholds: Mapping[str, timedelta], *, now: datetime, limit: int
    ) -> list[Stay]:
        """Up to ``limit`` active orders (in all) whose stay is longer than its status's
        threshold and not reported yet, longest first per status. A partial index holds only
        the unreported stays, so the cost follows those that crossed, not all orders."""
        stays: list[Stay] = []
        async with self._engine.connect() as conn:
            for status, threshold in thresholds.items():
                if len(stays) >= limit:
                    break
                found = await conn.execute(
                    select(w.c.order_id, w.c.status, w.c.status_since)
                    .where(
                        w.c.status == status,
                        w.c.stuck_at.is_(None),
                        w.c.status_since <= now - threshold,
                        w.c.active,
                    )
                    .order_by(w.c.status_since)
                    .limit(limit - len(stays))
                )
                stays += [
                    Stay(order_id=r.order_id, status=r.status, since=r.status_since) for r in found
                ]
        return stays

    async def raise_events(self, raised: Sequence[Event]) -> list[Event]:
        """Store events with their outbox rows in one transaction; returns the new ones (an
        event whose ``key`` is stored already, raised by another daemon, is left out)."""
        async with self._engine.begin() as conn:
            return await raise_on(conn, raised)

    async def report_stuck(self, reports: Sequence[tuple[Stay, Event]]) -> list[Event]:
        """Mark each stay reported and raise its event, once: a stay another daemon reported,
        or that ended meanwhile, is left out. A few statements per chunk of stays, not per
        stay, so that a first start with thousands of stuck orders holds no lock for long."""
        raised: list[Event] = []
        async with self._engine.begin() as conn:
            await lock_in_order(conn, w.c.order_id, sorted({stay.order_id for stay, _ in reports}))
            for chunk in chunks(reports):
                at = chunk[0][1].raised_at
                marked = await conn.execute(
                    update(w)
                    .where(
                        tuple_(w.c.order_id, w.c.status_since).in_(
                            [(stay.order_id, stay.since) for stay, _ in chunk]
                        ),
                        w.c.stuck_at.is_(None),
                    )
                    .values(stuck_at=at)
                    .returning(w.c.order_id, w.c.status_since)
                )
                mine = {(row[0], row[1]) for row in marked}
                raised += await raise_on(
                    conn, [e for stay, e in chunk if (stay.order_id, stay.since) in mine]
                )
        return raised

    async def has_event(self, key: str) -> bool:
        """Whether an event with this ``key`` is stored: one look into its unique index."""
        async with self._engine.connect() as conn:
            found = await conn.execute(select(events.c.id).where(events.c.key == key).limit(1))
            return found.first() is not None

    async def latest_event_key(self, prefix: str) -> str | None:
        """The greatest stored event key that starts with ``prefix``, if any.

        Digest keys (``digest:SINK:``) end in a fixed-width UTC time, so the greatest is the
        latest. The range on ``key`` walks its unique index backwards from the end of the
        prefix; ``substr`` keeps the answer exact under any collation.
        """
        key = events.c.key
        after = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        query = (
            select(key)
            .where(key >= prefix, key < after, func.substr(key, 1, len(prefix)) == prefix)
            .order_by(key.desc())
            .limit(1)
        )
        async with self._engine.connect() as conn:
            latest: str | None = (await conn.execute(query)).scalar()
            return latest


async def raise_on(conn: Conn, raised: Sequence[Event]) -> list[Event]:
    """Insert events with their outbox rows, three statements for the whole batch; one whose
    key is stored already (raised by another daemon) is left out, and so are its rows."""
    if not raised:
        return []
    await conn.execute(
        insert_new(conn, events),
        [
            {
                "event_id": e.event_id,
                "key": e.key,
                "kind": e.kind,
                "order_id": e.order_id,
                "status": e.status,
                "raised_at": e.raised_at,
                "payload": e.payload,
            }
            for e in raised
        ],
    )
    stored = await conn.execute(
        select(events.c.event_id).where(events.c.event_id.in_([e.event_id for e in raised]))
    )
    fresh = set(stored.scalars())
    kept = [e for e in raised if e.event_id in fresh]
    outbox = [
        {
            "event_id": e.event_id,
            "sink": sink,
            "state": DeliveryState.PENDING,
            "attempts": 0,
            "created_at": e.raised_at,
            "next_attempt_at": e.raised_at,
        }
        for e in kept
        for sink in e.sinks
    ]
    if outbox:
        await conn.execute(insert(deliveries), outbox)
    return kept
