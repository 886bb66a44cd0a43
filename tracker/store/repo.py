"""The repository: watched orders, snapshots and transitions in domain words."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar

from sqlalchemy import (
    Column,
    ColumnElement,
    Row,
    Table,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    tuple_,
    union,
    update,
)
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tracker.diff import Decision
from tracker.model import (
    Claim,
    DaemonRecord,
    Delivery,
    DeliveryState,
    DueDelivery,
    Event,
    MeterOrder,
    Snapshot,
    StatusChange,
    Transition,
    WatchedOrder,
)
from tracker.store.logins import Logins
from tracker.store.packing import pack_body, unpack_body
from tracker.store.tables import (
    UTCDateTime,
    daemons,
    deliveries,
    events,
    fleet,
    hints,
    snapshots,
    transitions,
    watched_orders,
)

w = watched_orders

#: How many rows one statement writes or one fetch reads at most.
BATCH = 500
#: The width of ``watched_orders.customer`` and ``.subscription`` (``String(80)``, like order
#: ids): a longer value is not kept there (PostgreSQL would refuse the whole poll's write).
SEARCH_WIDTH = 80
#: The PostgreSQL advisory lock a joining daemon holds ("trk" + "join" in ASCII): two daemons
#: starting at the same moment each see the other, rather than both finding themselves alone.
JOIN_LOCK = 0x74726B_6A6F696E
T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class PollOutcome:
    """The result of one poll, ready to be written in one transaction."""

    claim: Claim
    polled_at: datetime
    next_poll_at: datetime
    #: Set on success.
    order: MeterOrder | None = None
    decision: Decision | None = None
    #: Set when the status changed: the event's id, its body and the sinks it goes to.
    event_id: str | None = None
    payload: str | None = None
    sinks: tuple[str, ...] = ()
    final_since: datetime | None = None
    retire: bool = False
    #: Alerts this poll raised (failing, recovered): written only if its outcome lands.
    alerts: tuple[Event, ...] = ()
    #: Set on failure.
    error_kind: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class History:
    """An order's stored timeline."""

    order: WatchedOrder
    snapshots: tuple[Snapshot, ...]
    transitions: tuple[Transition, ...]
    #: Each transition's deliveries, by event id.
    deliveries: dict[str, tuple[Delivery, ...]]


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


@dataclass(frozen=True, slots=True, kw_only=True)
class Joined:
    """What a starting daemon found: the other live daemons, and whether it was let in."""

    joined: bool
    others: tuple[DaemonRecord, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Stay:
    """An order's stay in its status, from ``since``."""

    order_id: str
    status: str
    since: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Taken:
    """How many claims of gone daemons were released, to be taken by the live ones."""

    orders: int
    deliveries: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Overview:
    """How the tracker stands, for ``tracker status``."""

    daemons: tuple[DaemonRecord, ...]
    #: (status, state, count), state being ``active``, ``retired`` or ``removed``.
    orders: tuple[tuple[str | None, str, int], ...]
    #: (sink, state, count, oldest ``created_at`` of the pending ones).
    deliveries: tuple[tuple[str, str, int, datetime | None], ...]
    last_success_at: datetime | None


#: A poll's outcome lands only while its claim is still this store's (see ``Store.owner``).
_QUIET = (
    update(w)
    .where(w.c.order_id == bindparam("b_id"), w.c.leased_by == bindparam("b_owner"))
    .values(
        next_poll_at=bindparam("b_next"),
        last_polled_at=bindparam("b_at"),
        last_success_at=bindparam("b_at"),
        leased_until=None,
        leased_by=None,
        consecutive_failures=0,
        last_error_kind=None,
        last_error=None,
        active=and_(w.c.active, bindparam("b_keep")),
        retired_at=bindparam("b_retired"),
    )
)
_FAILED = (
    update(w)
    .where(w.c.order_id == bindparam("b_id"), w.c.leased_by == bindparam("b_owner"))
    .values(
        next_poll_at=bindparam("b_next"),
        leased_until=None,
        leased_by=None,
        last_polled_at=bindparam("b_at"),
        consecutive_failures=bindparam("b_failures"),
        last_error_kind=bindparam("b_kind"),
        last_error=bindparam("b_error"),
    )
)


class Store:
    """Every read and write the tracker makes, over one async engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        #: Whose claims these are: every claim this store takes carries it, and only a claim
        #: that still does is renewed, released or recorded. Another process (or a daemon that
        #: took over an expired lease) holds another owner, so it never finds its work undone
        #: or overwritten by a process that lost its claim.
        self.owner = "own_" + base64.b32encode(os.urandom(10)).decode().lower()
        #: The support pages' logins (``tracker.store.logins``).
        self.logins = Logins(engine)

    @property
    def where(self) -> str:
        """Where the database is, for messages: never with its password."""
        return where(self._engine.url)

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncConnection]:
        """A connection for one long read streamed to a client (``GET /api/v1/transitions``)."""
        async with self._engine.connect() as conn:
            yield conn

    async def close(self) -> None:
        """Release the engine's connections."""
        await self._engine.dispose()

    # -- watching ---------------------------------------------------------------------------

    async def watch(self, order_ids: Iterable[str], *, source: str, now: datetime) -> list[str]:
        """Watch orders (again); returns the ids that were not watched before."""
        wanted = list(dict.fromkeys(order_ids))
        added: list[str] = []
        async with self._engine.begin() as conn:
            for chunk in _chunks(wanted):
                rows = await conn.execute(
                    select(w.c.order_id, w.c.active).where(w.c.order_id.in_(chunk))
                )
                existing = {row.order_id: row.active for row in rows}
                fresh = [i for i in chunk if i not in existing]
                revived = [i for i in chunk if existing.get(i) is False]
                if fresh:
                    # Another process (a daemon starting at the same moment) may insert the
                    # same new ids between the read and this insert: theirs stand.
                    await conn.execute(
                        _insert_new(conn, w),
                        [
                            {
                                "order_id": i,
                                "active": True,
                                "source": source,
                                "added_at": now,
                                "next_poll_at": now,
                                "consecutive_failures": 0,
                            }
                            for i in fresh
                        ],
                    )
                if revived:
                    await conn.execute(
                        update(w)
                        .where(w.c.order_id.in_(revived))
                        .values(active=True, removed_at=None, retired_at=None, next_poll_at=now)
                    )
                added += fresh + revived
        return added

    async def watch_from_config(self, order_ids: Iterable[str], *, now: datetime) -> list[str]:
        """Watch configured orders never seen before; one removed by hand stays removed."""
        wanted = list(dict.fromkeys(order_ids))
        known: set[str] = set()
        async with self._engine.connect() as conn:
            for chunk in _chunks(wanted):
                rows = await conn.execute(select(w.c.order_id).where(w.c.order_id.in_(chunk)))
                known.update(rows.scalars())
        return await self.watch([i for i in wanted if i not in known], source="config", now=now)

    async def unwatch(self, order_ids: Iterable[str], *, now: datetime) -> list[str]:
        """Stop polling orders, keeping their history; returns the ids that were active."""
        removed: list[str] = []
        async with self._engine.begin() as conn:
            for chunk in _chunks(list(dict.fromkeys(order_ids))):
                rows = await conn.execute(
                    update(w)
                    .where(w.c.order_id.in_(chunk), w.c.active)
                    .values(active=False, removed_at=now)
                    .returning(w.c.order_id)
                )
                removed += rows.scalars().all()
        return removed

    async def watched(self, *, status: str | None = None) -> AsyncIterator[WatchedOrder]:
        """Every watched order (retired and removed too), streamed in id order."""
        query = select(w).order_by(w.c.order_id)
        if status is not None:
            query = query.where(w.c.status == status)
        async with self._engine.connect() as conn:
            result = await conn.stream(query.execution_options(yield_per=BATCH))
            async for row in result:
                yield _watched(row)

    async def get(self, order_id: str) -> WatchedOrder | None:
        """One watched order, or ``None``."""
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(w).where(w.c.order_id == order_id))).first()
        return _watched(row) if row is not None else None

    async def watched_page(
        self,
        *,
        status: str | None = None,
        state: str | None = None,
        q: str | None = None,
        after: str | None = None,
        limit: int,
    ) -> list[WatchedOrder]:
        """Up to ``limit`` watched orders in id order, after the id ``after`` (keyset paging).

        ``state`` is ``active``, ``retired`` or ``removed``. ``q`` matches an order id that
        starts with it, or a customer or subscription equal to it (exact: a prefix of those
        would read and sort every order of every customer it matches, for any page).
        """
        filters: list[ColumnElement[bool]] = []
        if status is not None:
            filters.append(w.c.status == status)
        if state == "active":
            filters.append(w.c.active)
        elif state == "retired":
            filters += [~w.c.active, w.c.retired_at.is_not(None)]
        elif state == "removed":
            filters += [~w.c.active, w.c.retired_at.is_(None)]
        if after is not None:
            filters.append(w.c.order_id > after)
        if q:
            found = _search(q, filters, limit, backend=self._engine.dialect.name)
            filters = [w.c.order_id.in_(found)]
        query = select(w).where(*filters).order_by(w.c.order_id).limit(limit)
        async with self._engine.connect() as conn:
            rows = await conn.execute(query)
            return [_watched(row) for row in rows]

    # -- polling ----------------------------------------------------------------------------

    async def claim_due(
        self,
        *,
        now: datetime,
        limit: int,
        lease_until: datetime,
        until: datetime | None = None,
        keyed: bool | None = None,
    ) -> list[Claim]:
        """Take up to ``limit`` due orders, oldest due first, hiding them until ``lease_until``.

        With ``until``, orders that come due by then are taken too (each claim says when).
        ``keyed`` takes only orders whose customer is known (a list sweep can find them), or
        with ``False`` only those whose customer is not.
        """
        due = (
            select(*_CLAIM_COLUMNS)
            .where(
                w.c.active,
                w.c.next_poll_at <= (until or now),
                or_(w.c.leased_until.is_(None), w.c.leased_until <= now),
                *_keyed(keyed),
            )
            .order_by(w.c.next_poll_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return await self._claim(due, lease_until)

    async def claim_listed(
        self, order_ids: Sequence[str], *, now: datetime, until: datetime, lease_until: datetime
    ) -> list[Claim]:
        """Take those of ``order_ids`` (one list page's) that are watched, due by ``until``
        and not claimed by another poll: a discovery sweep learns them from the page."""
        listed = (
            select(*_CLAIM_COLUMNS)
            .where(
                w.c.order_id.in_(order_ids),
                w.c.active,
                w.c.next_poll_at <= until,
                or_(w.c.leased_until.is_(None), w.c.leased_until <= now),
            )
            .with_for_update(skip_locked=True)
        )
        return await self._claim(listed, lease_until)

    async def unkeyed_due(self, *, now: datetime, limit: int) -> int:
        """How many due orders (``limit`` at most) have no known customer: never answered."""
        due = (
            select(w.c.order_id)
            .where(
                w.c.active,
                w.c.customer.is_(None),
                w.c.next_poll_at <= now,
                or_(w.c.leased_until.is_(None), w.c.leased_until <= now),
            )
            .limit(limit)
            .subquery()
        )
        async with self._engine.connect() as conn:
            return int(await conn.scalar(select(func.count()).select_from(due)) or 0)

    async def claim(self, order_ids: Sequence[str], *, lease_until: datetime) -> list[Claim]:
        """Take the given watched orders now, due or not (``tracker poll``)."""
        chosen = select(*_CLAIM_COLUMNS).where(w.c.order_id.in_(order_ids), w.c.active)
        return await self._claim(chosen, lease_until)

    async def claim_all(self, *, lease_until: datetime) -> list[Claim]:
        """Take every active order (``tracker poll --all``)."""
        return await self._claim(select(*_CLAIM_COLUMNS).where(w.c.active), lease_until)

    async def _claim(self, query: Any, lease_until: datetime) -> list[Claim]:
        async with self._engine.begin() as conn:
            claims = [_claim(row) for row in await conn.execute(query)]
            for chunk in _chunks([c.order_id for c in claims]):
                await conn.execute(
                    update(w)
                    .where(w.c.order_id.in_(chunk))
                    .values(leased_until=lease_until, leased_by=self.owner)
                )
        return claims

    async def release(self, order_ids: Sequence[str]) -> None:
        """Hand claimed orders back unpolled; their schedule is unchanged."""
        async with self._engine.begin() as conn:
            for chunk in _chunks(order_ids):
                await conn.execute(
                    update(w)
                    .where(w.c.order_id.in_(chunk), w.c.leased_by == self.owner)
                    .values(leased_until=None, leased_by=None)
                )

    async def extend_leases(self, order_ids: Sequence[str], *, lease_until: datetime) -> None:
        """Keep claims alive that are still queued or being polled (however long they wait)."""
        await self._extend(w.c.order_id, order_ids, lease_until)

    async def _extend(self, key: Column[Any], keys: Sequence[Any], lease_until: datetime) -> None:
        """Push the leases this store still holds on the rows of ``keys`` to ``lease_until``."""
        table = key.table
        async with self._engine.begin() as conn:
            for chunk in _chunks(keys):
                await conn.execute(
                    update(table)
                    .where(key.in_(chunk), table.c.leased_by == self.owner)
                    .values(leased_until=lease_until)
                )

    async def release_all(self) -> int:
        """Drop every lease: a starting daemon takes over what a crashed one had claimed."""
        async with self._engine.begin() as conn:
            taken = 0
            for table in (w, deliveries):
                result = await conn.execute(
                    update(table)
                    .where(table.c.leased_until.is_not(None))
                    .values(leased_until=None, leased_by=None)
                )
                taken += result.rowcount
        return taken

    async def record(self, outcomes: Sequence[PollOutcome]) -> list[Transition]:
        """Write poll outcomes in one transaction; returns the transitions stored."""
        quiet: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        stored: list[Transition] = []
        mine = {"b_owner": self.owner}
        async with self._engine.begin() as conn:
            for outcome in outcomes:
                if outcome.decision is not None and outcome.decision.store_snapshot:
                    landed, changes = await _record_change(conn, outcome, self.owner)
                    stored += changes
                elif outcome.alerts:  # written alone, to know whether its claim held
                    statement, params = (
                        (_FAILED, _failed_params(outcome))
                        if outcome.error_kind is not None
                        else (_QUIET, _quiet_params(outcome))
                    )
                    landed = (await conn.execute(statement, [params | mine])).rowcount == 1
                elif outcome.error_kind is not None:
                    failed.append(_failed_params(outcome) | mine)
                    continue
                else:
                    quiet.append(_quiet_params(outcome) | mine)
                    continue
                if landed and outcome.alerts:
                    await _raise(conn, outcome.alerts)
            if quiet:
                await conn.execute(_QUIET, quiet)
            if failed:
                await conn.execute(_FAILED, failed)
            await self._settle_hints(conn, outcomes)
        return stored

    # -- alerts -----------------------------------------------------------------------------

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
                rows = await conn.execute(
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
                stays += [Stay(order_id=r[0], status=r[1], since=r[2]) for r in rows]
        return stays

    async def raise_events(self, raised: Sequence[Event]) -> list[Event]:
        """Store events with their outbox rows in one transaction; returns the new ones (an
        event whose ``key`` is stored already, raised by another daemon, is left out)."""
        async with self._engine.begin() as conn:
            return await _raise(conn, raised)

    async def report_stuck(self, reports: Sequence[tuple[Stay, Event]]) -> list[Event]:
        """Mark each stay reported and raise its event, once: a stay another daemon reported,
        or that ended meanwhile, is left out. A few statements per chunk of stays, not per
        stay, so that a first start with thousands of stuck orders holds no lock for long."""
        raised: list[Event] = []
        async with self._engine.begin() as conn:
            for chunk in _chunks(reports):
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
                raised += await _raise(
                    conn, [e for stay, e in chunk if (stay.order_id, stay.since) in mine]
                )
        return raised

    # -- the outbox -------------------------------------------------------------------------

    async def claim_deliveries(
        self, *, sink: str, now: datetime, limit: int, lease_until: datetime
    ) -> list[DueDelivery]:
        """Take up to ``limit`` due pending deliveries of one sink, oldest due first."""
        d = deliveries
        async with self._engine.begin() as conn:
            rows = (
                await conn.execute(
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
            ).all()
            if rows:
                await conn.execute(
                    update(d)
                    .where(d.c.id.in_([row.id for row in rows]))
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
            for row in rows
        ]

    async def record_attempts(self, attempts: Sequence[Attempt]) -> None:
        """Write finished attempts in one transaction."""
        if not attempts:
            return
        d = deliveries
        statement = (
            update(d)
            .where(d.c.id == bindparam("b_id"), d.c.leased_by == self.owner)
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
        params = [
            {
                "b_id": a.delivery_id,
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
            await conn.execute(statement, params)

    async def release_deliveries(self, delivery_ids: Sequence[int]) -> None:
        """Hand claimed deliveries back unattempted."""
        async with self._engine.begin() as conn:
            for chunk in _chunks(delivery_ids):
                await conn.execute(
                    update(deliveries)
                    .where(deliveries.c.id.in_(chunk), deliveries.c.leased_by == self.owner)
                    .values(leased_until=None, leased_by=None)
                )

    async def extend_delivery_leases(
        self, delivery_ids: Sequence[int], *, lease_until: datetime
    ) -> None:
        """Keep claimed deliveries hidden while they wait to be sent or recorded."""
        await self._extend(deliveries.c.id, delivery_ids, lease_until)

    async def retry_deliveries(
        self, *, event_ids: Sequence[str] = (), all_dead: bool = False, now: datetime
    ) -> int:
        """Make dead (or the given events') undelivered deliveries pending again, due now."""
        d = deliveries
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
        query = _DELIVERY_ROWS.order_by(deliveries.c.id)
        if state is not None:
            query = query.where(deliveries.c.state == state)
        if sink is not None:
            query = query.where(deliveries.c.sink == sink)
        async with self._engine.connect() as conn:
            result = await conn.stream(query.execution_options(yield_per=BATCH))
            async for row in result:
                yield _delivery(row)

    async def deliveries_page(
        self,
        *,
        state: str | None = None,
        sink: str | None = None,
        after_id: int | None = None,
        limit: int,
    ) -> list[tuple[int, Delivery]]:
        """Up to ``limit`` deliveries with their ids, oldest first, after ``after_id``."""
        query = (
            _DELIVERY_ROWS.add_columns(deliveries.c.id.label("delivery_id"))
            .order_by(deliveries.c.id)
            .limit(limit)
        )
        if state is not None:
            query = query.where(deliveries.c.state == state)
        if sink is not None:
            query = query.where(deliveries.c.sink == sink)
        if after_id is not None:
            query = query.where(deliveries.c.id > after_id)
        async with self._engine.connect() as conn:
            rows = await conn.execute(query)
            return [(row.delivery_id, _delivery(row)) for row in rows]

    # -- daemons ----------------------------------------------------------------------------

    @property
    def shared(self) -> bool:
        """Whether several daemons may run on this database (PostgreSQL, not SQLite)."""
        return self._engine.dialect.name != "sqlite"

    async def join(self, me: DaemonRecord, *, stale_before: datetime) -> Joined:
        """Register a starting daemon; on SQLite only when no other live daemon is registered.

        Daemons whose heartbeat is older than ``stale_before`` are gone: their claims are
        released and their rows removed first. On SQLite the first statement takes the write
        lock, so two daemons starting at once cannot both find the file free.
        """
        async with self._engine.begin() as conn:
            if self.shared:  # daemons starting at once join one after the other
                await conn.execute(select(func.pg_advisory_xact_lock(JOIN_LOCK)))
            stale = (daemons.c.heartbeat_at < stale_before,)
            await _forget(conn, select(daemons.c.id).where(*stale).scalar_subquery())
            await conn.execute(delete(daemons).where(*stale))
            rows = await conn.execute(select(daemons).order_by(daemons.c.started_at))
            others = tuple(_daemon(row) for row in rows)
            if others and not self.shared:
                return Joined(joined=False, others=others)
            await conn.execute(insert(daemons).values(**_daemon_values(me)))
        return Joined(joined=True, others=others)

    async def heartbeat(self, me: DaemonRecord, *, now: datetime) -> bool:
        """Mark ``me`` alive at ``now``; registers it again (returns False) if it was removed."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(daemons).where(daemons.c.id == me.id).values(heartbeat_at=now)
            )
            if result.rowcount:
                return True
            await conn.execute(
                insert(daemons).values(**(_daemon_values(me) | {"heartbeat_at": now}))
            )
        return False

    async def forget_daemons(self, ids: Sequence[str]) -> Taken:
        """Remove daemons that left or are gone, releasing what they still had claimed."""
        if not ids:
            return Taken(orders=0, deliveries=0)
        async with self._engine.begin() as conn:
            taken = await _forget(conn, ids)
            await conn.execute(delete(daemons).where(daemons.c.id.in_(ids)))
        return taken

    async def daemons(self, *, stale_before: datetime | None = None) -> list[DaemonRecord]:
        """The daemons whose heartbeat is not older than ``stale_before`` (or all), oldest first."""
        query = select(daemons).order_by(daemons.c.started_at)
        if stale_before is not None:
            query = query.where(daemons.c.heartbeat_at >= stale_before)
        async with self._engine.connect() as conn:
            return [_daemon(row) for row in await conn.execute(query)]

    async def pause_all(self, until: datetime) -> None:
        """Hold every daemon's requests back until ``until`` (a longer pause already set stays)."""
        async with self._engine.begin() as conn:
            await conn.execute(
                update(fleet)
                .where(
                    fleet.c.id == 1,
                    or_(fleet.c.paused_until.is_(None), fleet.c.paused_until < until),
                )
                .values(paused_until=until)
            )

    async def paused_until(self) -> datetime | None:
        """Until when every daemon's requests are held back, if ever set."""
        async with self._engine.connect() as conn:
            paused: datetime | None = (
                await conn.execute(select(fleet.c.paused_until).where(fleet.c.id == 1))
            ).scalar()
            return paused

    async def ping(self) -> None:
        """Ask the database the most trivial question; raises when it does not answer."""
        async with self._engine.connect() as conn:
            await conn.execute(select(literal(1)))

    async def overview(self, *, stale_before: datetime) -> Overview:
        """Daemons, orders by status and state, deliveries by sink and state, last success."""
        state = case(
            (w.c.active, literal("active")),
            (w.c.retired_at.is_not(None), literal("retired")),
            else_=literal("removed"),
        ).label("state")
        d = deliveries
        oldest = func.min(case((d.c.state == DeliveryState.PENDING, d.c.created_at)))
        live = await self.daemons(stale_before=stale_before)
        async with self._engine.connect() as conn:
            orders = await conn.execute(
                select(w.c.status, state, func.count())
                .group_by(w.c.status, state)
                .order_by(w.c.status, state)
            )
            sent = await conn.execute(
                select(d.c.sink, d.c.state, func.count(), oldest.label("oldest"))
                .group_by(d.c.sink, d.c.state)
                .order_by(d.c.sink, d.c.state)
            )
            last = (await conn.execute(select(func.max(w.c.last_success_at)))).scalar()
            return Overview(
                daemons=tuple(live),
                orders=tuple((row[0], row[1], row[2]) for row in orders),
                deliveries=tuple((row[0], row[1], row[2], row.oldest) for row in sent),
                # min() and max() keep their column's type, so these are aware datetimes.
                last_success_at=last,
            )

    # -- reading history --------------------------------------------------------------------

    async def history(self, order_id: str) -> History | None:
        """The order's snapshots and transitions, oldest first; ``None`` if never watched."""
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(w).where(w.c.order_id == order_id))).first()
            if row is None:
                return None
            snaps = await conn.execute(
                select(snapshots).where(snapshots.c.order_id == order_id).order_by(snapshots.c.id)
            )
            moves = await conn.execute(
                select(transitions)
                .where(transitions.c.order_id == order_id)
                .order_by(transitions.c.id)
            )
            sent = await conn.execute(
                _DELIVERY_ROWS.where(transitions.c.order_id == order_id).order_by(deliveries.c.id)
            )
            by_event: dict[str, list[Delivery]] = {}
            for delivery in sent:
                by_event.setdefault(delivery.event_id, []).append(_delivery(delivery))
            return History(
                order=_watched(row),
                snapshots=tuple(_snapshot(s) for s in snaps),
                transitions=tuple(_transition(t) for t in moves),
                deliveries={event: tuple(items) for event, items in by_event.items()},
            )

    async def counts(self) -> dict[str, int]:
        """How many watched orders, snapshots and transitions are stored."""
        async with self._engine.connect() as conn:
            return {
                table.name: (
                    await conn.execute(select(func.count()).select_from(table))
                ).scalar_one()
                for table in (watched_orders, snapshots, transitions)
            }

    # -- digests ----------------------------------------------------------------------------

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

    async def transitions_between(
        self, start: datetime, end: datetime
    ) -> AsyncIterator[Transition]:
        """The transitions detected from ``start`` up to ``end`` (excluded), by order and then
        by time, streamed: the index on ``detected_at`` finds them, a day of a busy supplier
        never sits in memory at once."""
        t = transitions
        # Typed loosely (like ``_claim``'s): its rows are read by name, as ``_transition`` does.
        query: Any = (
            select(*_TRANSITION_COLUMNS)
            .where(t.c.detected_at >= start, t.c.detected_at < end)
            .order_by(t.c.order_id, t.c.detected_at, t.c.id)
        )
        async with self._engine.connect() as conn:
            result = await conn.stream(query.execution_options(yield_per=BATCH))
            async for row in result:
                yield _transition(row)

    async def stuck_now(self, *, limit: int) -> tuple[int, list[Stay]]:
        """The active orders whose current stay was reported stuck: how many, and the first
        ``limit`` of them, longest stay first."""
        now_stuck = (w.c.active, w.c.stuck_at.is_not(None))
        async with self._engine.connect() as conn:
            count = await conn.execute(select(func.count()).select_from(w).where(*now_stuck))
            rows = await conn.execute(
                select(w.c.order_id, w.c.status, w.c.status_since)
                .where(*now_stuck)
                .order_by(w.c.status_since, w.c.order_id)
                .limit(limit)
            )
            stays = [Stay(order_id=r[0], status=r[1], since=r[2]) for r in rows]
            return count.scalar_one(), stays

    async def failing_now(self, *, at_least: int, limit: int) -> tuple[int, list[WatchedOrder]]:
        """The active orders whose last ``at_least`` polls (or more) failed in a row: how many,
        and the first ``limit`` of them, longest streak first."""
        failing = (w.c.active, w.c.consecutive_failures >= at_least)
        async with self._engine.connect() as conn:
            count = await conn.execute(select(func.count()).select_from(w).where(*failing))
            rows = await conn.execute(
                select(w)
                .where(*failing)
                .order_by(w.c.consecutive_failures.desc(), w.c.order_id)
                .limit(limit)
            )
            orders = [_watched(row) for row in rows]
            return count.scalar_one(), orders

    # Support pages

    async def latest_transitions(self, *, limit: int) -> list[Transition]:
        """The ``limit`` transitions detected last, latest first (the board's list): the index
        on ``detected_at`` is walked backwards, so the cost follows ``limit``, not the table."""
        t = transitions
        query: Any = (
            select(*_TRANSITION_COLUMNS)
            .order_by(t.c.detected_at.desc(), t.c.id.desc())
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            return [_transition(row) for row in await conn.execute(query)]

    # Push hints

    #: How long a hint's event id is remembered: the provider redelivers within hours, and a
    #: replay older than this costs one extra poll, nothing more.
    HINT_RETENTION = timedelta(days=1)
    #: Old hints one arriving hint prunes at most: each hint's write stays small and bounded,
    #: and the table still shrinks faster than hints arrive.
    HINT_PRUNE = 100

    async def hint(
        self, *, event_id: str, order_id: str, now: datetime
    ) -> Literal["due", "in_flight", "already_due", "ignored", "replayed"]:
        """Take the provider's hint that ``order_id`` changed; says what it did.

        ``due``: the watched order was made due now. ``in_flight``: a poll of it holds a claim,
        and that poll's answer may predate the change; the hint is kept pending and the poll's
        record makes the order due again (``_settle_hints``). ``already_due``: it will be
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
                                and_(_unclaimed(now), w.c.next_poll_at > now),
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
                row is not None
                and row.leased_by is not None
                and row.leased_until is not None
                and row.leased_until > now
            )
            taken = await conn.execute(
                _insert_new(conn, hints)
                .values(event_id=event_id, order_id=order_id, received_at=now, pending=in_flight)
                .returning(hints.c.id)
            )
            if taken.first() is None:
                await tx.rollback()  # a replay changes nothing, the order's row included
                return "replayed"
        await self._prune_hints(now)
        if in_flight:
            return "in_flight"
        return "due" if row.next_poll_at == now else "already_due"

    async def _prune_hints(self, now: datetime) -> None:
        """Forget up to ``HINT_PRUNE`` hints older than ``HINT_RETENTION``, oldest first."""
        old = (
            select(hints.c.id)
            .where(hints.c.received_at < now - self.HINT_RETENTION)
            .order_by(hints.c.received_at)
            .limit(self.HINT_PRUNE)
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

    @staticmethod
    async def _settle_hints(conn: AsyncConnection, outcomes: Sequence[PollOutcome]) -> None:
        """Within ``record``'s transaction: make due again the recorded orders about which a
        hint arrived while they were polled, and clear those hints.

        It runs after the outcomes' writes, which hold their orders' rows until the commit:
        a hint that came first is visible here (its pending mark committed before this
        statement began); one that comes later waits for the row and finds no claim, so it
        makes the order due itself. An order whose claim another process now holds is left
        to that process's record, its hints pending.
        """
        if not outcomes:
            return
        at = min(outcome.polled_at for outcome in outcomes)
        for chunk in _chunks([outcome.claim.order_id for outcome in outcomes]):
            pending = select(hints.c.order_id).where(hints.c.pending, hints.c.order_id.in_(chunk))
            settled = await conn.execute(
                update(w)
                .where(w.c.order_id.in_(pending), _unclaimed(at))
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


_DELIVERY_ROWS = (
    select(
        deliveries.c.event_id,
        func.coalesce(transitions.c.order_id, events.c.order_id, "").label("order_id"),
        deliveries.c.sink,
        deliveries.c.state,
        deliveries.c.attempts,
        deliveries.c.next_attempt_at,
        deliveries.c.last_attempt_at,
        deliveries.c.last_status,
        deliveries.c.last_error,
        deliveries.c.delivered_at,
    )
    .outerjoin(transitions, transitions.c.event_id == deliveries.c.event_id)
    .outerjoin(events, events.c.event_id == deliveries.c.event_id)
)


def _search(q: str, filters: Sequence[ColumnElement[bool]], limit: int, *, backend: str) -> Any:
    """The ids of the first ``limit`` orders ``q`` matches (``watched_page``), a subquery.

    One branch per way to match, each walking its own index in id order and stopping after
    ``limit`` rows; a single ``OR`` would let the planner scan the whole table in id order,
    or fetch every match and sort it.
    """
    by_id: ColumnElement[bool]
    if backend == "postgresql":
        # LIKE with a constant prefix: ix_watched_orders_order_id_pattern serves it under
        # any collation (the primary key's index only under C).
        by_id = w.c.order_id.startswith(q, autoescape=True)
    elif q[-1] == "\U0010ffff":  # the last code point has no successor (no id holds it)
        by_id = and_(w.c.order_id >= q, func.substr(w.c.order_id, 1, len(q)) == q)
    else:
        # SQLite's LIKE ignores case, so no index of a BINARY column serves it; the range of
        # ids from ``q`` up to ``q`` with its last character's successor is the same set
        # (byte order), read from the primary key's index.
        by_id = and_(w.c.order_id >= q, w.c.order_id < q[:-1] + chr(ord(q[-1]) + 1))
    branches = [
        select(w.c.order_id).where(match, *filters).order_by(w.c.order_id).limit(limit).subquery()
        for match in (by_id, w.c.customer == q, w.c.subscription == q)
    ]
    return union(*(select(branch.c.order_id) for branch in branches))


_CLAIM_COLUMNS = (
    w.c.order_id,
    w.c.status,
    w.c.fingerprint,
    w.c.final_since,
    w.c.consecutive_failures,
    w.c.next_poll_at,
    w.c.customer,
    w.c.subscription,
)


async def _record_change(
    conn: AsyncConnection, outcome: PollOutcome, owner: str
) -> tuple[bool, list[Transition]]:
    """Store a changed order's snapshot (and transition); ``False`` when its claim was lost."""
    order, decision, claim = outcome.order, outcome.decision, outcome.claim
    assert order is not None  # noqa: S101 - record() checked
    assert decision is not None  # noqa: S101 - record() checked
    # Only the poll that saw the previous fingerprint may write: a concurrent poll of the
    # same order (the daemon and `tracker poll`) must not store the same transition twice.
    same_base: ColumnElement[bool] = (
        w.c.fingerprint.is_(None)
        if claim.fingerprint is None
        else w.c.fingerprint == claim.fingerprint
    )
    new_status = w.c.status.is_distinct_from(order.status)
    updated = await conn.execute(
        update(w)
        .where(w.c.order_id == claim.order_id, w.c.leased_by == owner, same_base)
        .values(
            # A new status starts a new stay: its start, and not reported stuck yet.
            status_since=case(
                (new_status, literal(outcome.polled_at, UTCDateTime())), else_=w.c.status_since
            ),
            stuck_at=case((new_status, null()), else_=w.c.stuck_at),
            status=order.status,
            fingerprint=order.fingerprint,
            final_since=outcome.final_since,
            last_change_at=outcome.polled_at,
            # What ``q`` finds the order by, always the latest snapshot's.
            customer=_searchable(order.customer),
            subscription=_searchable(order.subscription),
            **_quiet_values(outcome),
        )
    )
    if updated.rowcount == 0:
        return False, []
    snapshot_id = (
        await conn.execute(
            insert(snapshots)
            .values(
                order_id=order.id,
                observed_at=outcome.polled_at,
                body=pack_body(order.raw),
            )
            .returning(snapshots.c.id)
        )
    ).scalar_one()
    change = decision.change
    if change is None or outcome.event_id is None:
        return True, []
    return True, [await _record_transition(conn, outcome, change, outcome.event_id, snapshot_id)]


async def _record_transition(
    conn: AsyncConnection,
    outcome: PollOutcome,
    change: StatusChange,
    event_id: str,
    snapshot_id: int,
) -> Transition:
    """The transition a stored snapshot revealed, with its outbox rows, in the same transaction."""
    transition = Transition(
        event_id=event_id,
        order_id=outcome.claim.order_id,
        from_status=change.from_status,
        to_status=change.to_status,
        kind=change.classification.kind.value,
        skipped=tuple(change.classification.skipped),
        detected_at=outcome.polled_at,
        snapshot_id=snapshot_id,
    )
    await conn.execute(
        insert(transitions).values(
            event_id=transition.event_id,
            order_id=transition.order_id,
            from_status=transition.from_status,
            to_status=transition.to_status,
            kind=transition.kind,
            skipped=",".join(transition.skipped),
            detected_at=transition.detected_at,
            snapshot_id=snapshot_id,
            payload=outcome.payload,
        )
    )
    if outcome.sinks:
        # The outbox rows land in the same transaction as the transition: none can be lost.
        await conn.execute(
            insert(deliveries),
            [
                {
                    "event_id": transition.event_id,
                    "sink": sink,
                    "state": DeliveryState.PENDING,
                    "attempts": 0,
                    "created_at": outcome.polled_at,
                    "next_attempt_at": outcome.polled_at,
                }
                for sink in outcome.sinks
            ],
        )
    return transition


def _searchable(value: str) -> str | None:
    """``value`` if its column holds it whole, else ``None``: never cut, as a cut id could
    equal another's."""
    return value if len(value) <= SEARCH_WIDTH else None


def _quiet_values(outcome: PollOutcome) -> dict[str, Any]:
    return {
        "next_poll_at": outcome.next_poll_at,
        "leased_until": None,
        "leased_by": None,
        "last_polled_at": outcome.polled_at,
        "last_success_at": outcome.polled_at,
        "consecutive_failures": 0,
        "last_error_kind": None,
        "last_error": None,
        "active": and_(w.c.active, literal(not outcome.retire)),
        "retired_at": outcome.polled_at if outcome.retire else None,
    }


def _quiet_params(outcome: PollOutcome) -> dict[str, Any]:
    return {
        "b_id": outcome.claim.order_id,
        "b_next": outcome.next_poll_at,
        "b_at": outcome.polled_at,
        "b_keep": not outcome.retire,
        "b_retired": outcome.polled_at if outcome.retire else None,
    }


def _failed_params(outcome: PollOutcome) -> dict[str, Any]:
    return {
        "b_id": outcome.claim.order_id,
        "b_next": outcome.next_poll_at,
        "b_at": outcome.polled_at,
        "b_failures": outcome.claim.consecutive_failures + 1,
        "b_kind": outcome.error_kind,
        "b_error": outcome.error,
    }


def _chunks(items: Sequence[T]) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), BATCH):
        yield items[start : start + BATCH]


def _unclaimed(now: datetime) -> Any:
    """No live claim on the order: none taken, or its lease ran out (a killed process's)."""
    return or_(w.c.leased_by.is_(None), w.c.leased_until <= now)


def _keyed(keyed: bool | None) -> list[Any]:
    """The condition of :meth:`Store.claim_due`'s ``keyed``."""
    if keyed is None:
        return []
    return [w.c.customer.is_not(None) if keyed else w.c.customer.is_(None)]


def _claim(row: Row[Any]) -> Claim:
    return Claim(
        order_id=row.order_id,
        status=row.status,
        fingerprint=row.fingerprint,
        final_since=row.final_since,
        consecutive_failures=row.consecutive_failures,
        due_at=row.next_poll_at,
        customer=row.customer,
        subscription=row.subscription,
    )


def _watched(row: Row[Any]) -> WatchedOrder:
    return WatchedOrder(
        order_id=row.order_id,
        active=row.active,
        source=row.source,
        status=row.status,
        added_at=row.added_at,
        next_poll_at=row.next_poll_at,
        last_polled_at=row.last_polled_at,
        last_change_at=row.last_change_at,
        consecutive_failures=row.consecutive_failures,
        last_error_kind=row.last_error_kind,
        last_error=row.last_error,
        retired_at=row.retired_at,
        removed_at=row.removed_at,
        customer=row.customer,
        subscription=row.subscription,
    )


def _snapshot(row: Row[Any]) -> Snapshot:
    raw = unpack_body(row.body)
    # The body was parsed and checked before it was stored: these fields are strings.
    fields = json.loads(raw)
    return Snapshot(
        id=row.id,
        order_id=row.order_id,
        status=fields["status"],
        provider=fields["provider"],
        observed_at=row.observed_at,
        raw=raw,
    )


def _delivery(row: Row[*tuple[Any, ...]]) -> Delivery:
    return Delivery(
        event_id=row.event_id,
        order_id=row.order_id,
        sink=row.sink,
        state=DeliveryState(row.state),
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        last_attempt_at=row.last_attempt_at,
        last_status=row.last_status,
        last_error=row.last_error,
        delivered_at=row.delivered_at,
    )


#: What :func:`_transition` reads.
_TRANSITION_COLUMNS = (
    transitions.c.event_id,
    transitions.c.order_id,
    transitions.c.from_status,
    transitions.c.to_status,
    transitions.c.kind,
    transitions.c.skipped,
    transitions.c.detected_at,
    transitions.c.snapshot_id,
)


def _transition(row: Row[Any]) -> Transition:
    return Transition(
        event_id=row.event_id,
        order_id=row.order_id,
        from_status=row.from_status,
        to_status=row.to_status,
        kind=row.kind,
        skipped=tuple(s for s in row.skipped.split(",") if s),
        detected_at=row.detected_at,
        snapshot_id=row.snapshot_id,
    )


def _daemon(row: Row[Any]) -> DaemonRecord:
    return DaemonRecord(
        id=row.id,
        host=row.host,
        pid=row.pid,
        version=row.version,
        started_at=row.started_at,
        heartbeat_at=row.heartbeat_at,
    )


def _daemon_values(me: DaemonRecord) -> dict[str, Any]:
    return {
        "id": me.id,
        "host": me.host,
        "pid": me.pid,
        "version": me.version,
        "started_at": me.started_at,
        "heartbeat_at": me.heartbeat_at,
    }


def where(url: URL) -> str:
    """Where ``url`` points, without its password: ``host:port/database`` or the file."""
    if url.get_backend_name() == "sqlite":
        return f"the SQLite file {url.database}"
    return f"{url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"


async def _forget(conn: AsyncConnection, owners: Sequence[str] | Any) -> Taken:
    """Release the claims held by ``owners`` (ids, or a subquery of them)."""
    counts = []
    for table in (w, deliveries):
        result = await conn.execute(
            update(table)
            .where(table.c.leased_by.in_(owners))
            .values(leased_until=None, leased_by=None)
        )
        counts.append(result.rowcount)
    return Taken(orders=counts[0], deliveries=counts[1])


async def _raise(conn: AsyncConnection, raised: Sequence[Event]) -> list[Event]:
    """Insert events with their outbox rows, three statements for the whole batch; one whose
    key is stored already (raised by another daemon) is left out, and so are its rows."""
    if not raised:
        return []
    await conn.execute(
        _insert_new(conn, events),
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


def _insert_new(conn: AsyncConnection, table: Table) -> Any:
    """``INSERT … ON CONFLICT DO NOTHING`` in the connection's dialect."""
    # Each dialect's module loads only where it is used: reading commands stay light.
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql  # noqa: PLC0415

        return postgresql.insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects import sqlite  # noqa: PLC0415

    return sqlite.insert(table).on_conflict_do_nothing()
