"""The outbox: deliveries claimed behind a lease, their attempts recorded, retried on demand."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, bindparam, func, or_, select, update

from tracker.model import Delivery, DeliveryState, DueDelivery
from tracker.store import rows
from tracker.store.rows import DELIVERY_ROWS
from tracker.store.sql import BATCH, Repository, chunks
from tracker.store.tables import deliveries as d
from tracker.store.tables import events, transitions


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    """One finished delivery attempt and what follows from it."""

    delivery_id: int
    at: datetime
    attempts: int
    state: str
    next_attempt_at: datetime
    status: int | None
    error: str | None


_ATTEMPTED = (
    update(d)
    .where(d.c.id == bindparam("b_id"), d.c.leased_by == bindparam("b_owner"))
    .values(
        state=bindparam("b_state"),
        attempts=bindparam("b_attempts"),
        next_attempt_at=bindparam("b_next"),
        leased_until=None,
        leased_by=None,
        last_attempt_at=bindparam("b_at"),
        last_status=bindparam("b_status"),
        last_error=bindparam("b_error"),
        delivered_at=bindparam("b_delivered"),
    )
)


class Outbox(Repository):
    """One row per (event, sink): pending until delivered or dead, claimed while being sent."""

    async def claim(
        self, *, sink: str, now: datetime, limit: int, lease_until: datetime
    ) -> list[DueDelivery]:
        """Take up to ``limit`` due pending deliveries of one sink, oldest due first."""
        due = (
            select(
                d.c.id,
                d.c.event_id,
                d.c.sink,
                d.c.attempts,
                func.coalesce(transitions.c.payload, events.c.payload).label("payload"),
            )
            .outerjoin(transitions, transitions.c.event_id == d.c.event_id)
            .outerjoin(events, events.c.event_id == d.c.event_id)
            .where(
                d.c.state == DeliveryState.PENDING,
                d.c.sink == sink,
                d.c.next_attempt_at <= now,
                or_(d.c.leased_until.is_(None), d.c.leased_until <= now),
            )
            .order_by(d.c.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True, of=d)
        )
        async with self._engine.begin() as conn:
            found = (await conn.execute(due)).all()
            if found:
                await conn.execute(
                    update(d)
                    .where(d.c.id.in_([row.id for row in found]))
                    .values(leased_until=lease_until, leased_by=self.owner)
                )
        return [
            DueDelivery(
                id=row.id,
                event_id=row.event_id,
                sink=row.sink,
                attempts=row.attempts,
                payload=row.payload or "",
            )
            for row in found
        ]

    async def record(self, attempts: Sequence[Attempt]) -> None:
        """Write finished attempts in one transaction."""
        if not attempts:
            return
        params = [
            {
                "b_id": a.delivery_id,
                "b_owner": self.owner,
                "b_state": a.state,
                "b_attempts": a.attempts,
                "b_next": a.next_attempt_at,
                "b_at": a.at,
                "b_status": a.status,
                "b_error": a.error,
                "b_delivered": a.at if a.state == DeliveryState.DELIVERED else None,
            }
            for a in attempts
        ]
        async with self._engine.begin() as conn:
            await conn.execute(_ATTEMPTED, params)

    async def release(self, delivery_ids: Sequence[int]) -> None:
        """Hand claimed deliveries back unattempted."""
        async with self._engine.begin() as conn:
            for chunk in chunks(delivery_ids):
                await conn.execute(
                    update(d)
                    .where(d.c.id.in_(chunk), d.c.leased_by == self.owner)
                    .values(leased_until=None, leased_by=None)
                )

    async def extend_leases(self, delivery_ids: Sequence[int], *, lease_until: datetime) -> None:
        """Keep claimed deliveries hidden while they wait to be sent or recorded."""
        await self._extend(d.c.id, delivery_ids, lease_until)

    async def retry(
        self, *, event_ids: Sequence[str] = (), all_dead: bool = False, now: datetime
    ) -> int:
        """Make dead (or the given events') undelivered deliveries pending again, due now."""
        chosen = (
            d.c.state == DeliveryState.DEAD
            if all_dead
            else and_(d.c.event_id.in_(event_ids), d.c.state != DeliveryState.DELIVERED)
        )
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(d)
                .where(chosen)
                .values(
                    state=DeliveryState.PENDING,
                    attempts=0,
                    next_attempt_at=now,
                    leased_until=None,
                    leased_by=None,
                )
            )
        return result.rowcount

    async def deliveries(
        self, *, state: str | None = None, sink: str | None = None
    ) -> AsyncIterator[Delivery]:
        """Deliveries, oldest first, streamed."""
        query = DELIVERY_ROWS.order_by(d.c.id)
        if state is not None:
            query = query.where(d.c.state == state)
        if sink is not None:
            query = query.where(d.c.sink == sink)
        async with self._engine.connect() as conn:
            result = await conn.stream(query.execution_options(yield_per=BATCH))
            async for row in result:
                yield rows.delivery(row)

    async def page(
        self,
        *,
        state: str | None = None,
        sink: str | None = None,
        after_id: int | None = None,
        limit: int,
    ) -> list[tuple[int, Delivery]]:
        """Up to ``limit`` deliveries with their ids, oldest first, after ``after_id``."""
        query = DELIVERY_ROWS.add_columns(d.c.id.label("delivery_id")).order_by(d.c.id).limit(limit)
        if state is not None:
            query = query.where(d.c.state == state)
        if sink is not None:
            query = query.where(d.c.sink == sink)
        if after_id is not None:
            query = query.where(d.c.id > after_id)
        async with self._engine.connect() as conn:
            return [(row.delivery_id, rows.delivery(row)) for row in await conn.execute(query)]

    # -- dead letters by sink and order: the desk's bulk retry ----------------------------------

    async def count_dead(self, *, sink: str | None = None, order_id: str | None = None) -> int:
        """How many dead deliveries there are (to ``sink`` only, of ``order_id`` only)."""
        query = (
            select(func.count())
            .select_from(_WITH_ORDER)
            .where(d.c.state == DeliveryState.DEAD, *_narrowed(sink, order_id))
        )
        async with self._engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def requeue(
        self,
        *,
        event_ids: Sequence[str] | None = None,
        sink: str | None = None,
        order_id: str | None = None,
        now: datetime,
    ) -> list[Delivery]:
        """Make deliveries pending again, due now, and name them: the undelivered ones of
        ``event_ids`` when given, else every dead one (to ``sink`` only, of ``order_id`` only).
        A delivery that arrives or is retried meanwhile by someone else is not named."""
        if event_ids is not None:
            still = d.c.state != DeliveryState.DELIVERED
            chosen = and_(d.c.event_id.in_(event_ids), still)
        else:
            still = d.c.state == DeliveryState.DEAD
            chosen = and_(still, *_narrowed(sink, order_id))
        query = DELIVERY_ROWS.add_columns(d.c.id.label("delivery_id")).where(chosen)
        done: list[Delivery] = []
        async with self._engine.begin() as conn:
            found = {row.delivery_id: rows.delivery(row) for row in await conn.execute(query)}
            for chunk in chunks(list(found)):
                changed = await conn.execute(
                    update(d)
                    .where(d.c.id.in_(chunk), still)
                    .values(
                        state=DeliveryState.PENDING,
                        attempts=0,
                        next_attempt_at=now,
                        leased_until=None,
                        leased_by=None,
                    )
                    .returning(d.c.id)
                )
                done += [found[i] for i in sorted(changed.scalars())]
        return done


#: Deliveries with the order their event is about (a transition's or an alert's).
_WITH_ORDER = d.outerjoin(transitions, transitions.c.event_id == d.c.event_id).outerjoin(
    events, events.c.event_id == d.c.event_id
)


def _narrowed(sink: str | None, order_id: str | None) -> list[ColumnElement[bool]]:
    """The conditions that keep one sink's and one order's deliveries."""
    kept: list[ColumnElement[bool]] = []
    if sink is not None:
        kept.append(d.c.sink == sink)
    if order_id is not None:
        kept.append(or_(transitions.c.order_id == order_id, events.c.order_id == order_id))
    return kept
