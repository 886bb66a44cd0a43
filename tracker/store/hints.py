"""The provider's push hints: an order made due now, each hint's event id taken once."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from sqlalchemy import and_, case, delete, literal, select, update

from tracker.store.sql import Repository, chunks, insert_new, unclaimed
from tracker.store.tables import UTCDateTime, hints
from tracker.store.tables import watched_orders as w

if TYPE_CHECKING:
    from tracker.store.sql import Conn

#: How long a hint's event id is remembered: the provider redelivers within hours, and a
#: replay older than this costs one extra poll, nothing more.
HINT_RETENTION = timedelta(days=1)
#: Old hints one arriving hint prunes at most: each hint's write stays small and bounded,
#: and the table still shrinks faster than hints arrive.
HINT_PRUNE = 100
Taken = Literal["due", "in_flight", "already_due", "ignored", "replayed"]


class Hints(Repository):
    """Hints about watched orders, remembered for :data:`HINT_RETENTION`."""

    async def hint(self, *, event_id: str, order_id: str, now: datetime) -> Taken:
        """Take the provider's hint that ``order_id`` changed; says what it did.

        ``due``: the watched order was made due now. ``in_flight``: a poll of it holds a claim,
        and that poll's answer may predate the change; the hint is kept pending and the poll's
        record makes the order due again (:func:`settle`). ``already_due``: it will be
        polled anyway. ``ignored``: not watched, or no longer active. ``replayed``: this event
        id was taken before; nothing changed. Leases are never touched.
        """
        async with self._engine.connect() as conn, conn.begin() as tx:
            # The order's row first, as a poll's record takes it: the hint and the record
            # take turns on that row, so whichever comes second sees the other's write.
            row = (
                await conn.execute(
                    update(w)
                    .where(w.c.order_id == order_id, w.c.active)
                    .values(
                        next_poll_at=case(
                            (
                                and_(unclaimed(now), w.c.next_poll_at > now),
                                literal(now, UTCDateTime()),
                            ),
                            else_=w.c.next_poll_at,
                        )
                    )
                    .returning(w.c.leased_by, w.c.leased_until, w.c.next_poll_at)
                )
            ).first()
            if row is None:
                # Not remembered: only hints about watched orders are, so a flood of signed
                # hints about other orders grows nothing (a replay of one is ignored again).
                await tx.rollback()
                return "ignored"
            # Claimed means a live lease: one left behind by a killed process does not count.
            in_flight = (
                row.leased_by is not None
                and row.leased_until is not None
                and row.leased_until > now
            )
            taken = await conn.execute(
                insert_new(conn, hints)
                .values(event_id=event_id, order_id=order_id, received_at=now, pending=in_flight)
                .returning(hints.c.id)
            )
            if taken.first() is None:
                await tx.rollback()  # a replay changes nothing, the order's row included
                return "replayed"
        await self._prune(now)
        if in_flight:
            return "in_flight"
        return "due" if row.next_poll_at == now else "already_due"

    async def _prune(self, now: datetime) -> None:
        """Forget up to ``HINT_PRUNE`` hints older than ``HINT_RETENTION``, oldest first."""
        old = (
            select(hints.c.id)
            .where(hints.c.received_at < now - HINT_RETENTION)
            .order_by(hints.c.received_at)
            .limit(HINT_PRUNE)
        )
        async with self._engine.begin() as conn:
            await conn.execute(delete(hints).where(hints.c.id.in_(old)))

    async def hinted(self, order_id: str) -> list[tuple[str, bool]]:
        """The remembered hints about ``order_id``, oldest first: (event id, pending)."""
        query = (
            select(hints.c.event_id, hints.c.pending)
            .where(hints.c.order_id == order_id)
            .order_by(hints.c.id)
        )
        async with self._engine.connect() as conn:
            return [(row.event_id, row.pending) for row in await conn.execute(query)]


async def settle(conn: Conn, order_ids: Sequence[str], *, at: datetime) -> None:
    """Within a poll's record (its transaction): make due again the recorded orders about which
    a hint arrived while they were polled (at ``at`` at the earliest), and clear those hints.

    It runs after the outcomes' writes, which hold their orders' rows until the commit:
    a hint that came first is visible here (its pending mark committed before this
    statement began); one that comes later waits for the row and finds no claim, so it
    makes the order due itself. An order whose claim another process now holds is left
    to that process's record, its hints pending.
    """
    for chunk in chunks(order_ids):
        pending = select(hints.c.order_id).where(hints.c.pending, hints.c.order_id.in_(chunk))
        settled = await conn.execute(
            update(w)
            .where(w.c.order_id.in_(pending), unclaimed(at))
            .values(
                next_poll_at=case(
                    (w.c.next_poll_at > at, literal(at, UTCDateTime())),
                    else_=w.c.next_poll_at,
                )
            )
            .returning(w.c.order_id)
        )
        ids = settled.scalars().all()
        if ids:
            await conn.execute(
                update(hints)
                .where(hints.c.pending, hints.c.order_id.in_(ids))
                .values(pending=False)
            )
