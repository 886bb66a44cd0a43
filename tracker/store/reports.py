"""Read models: what the CLI, the pages, the API, the export and the digests show.

Nothing here writes. The export's rows are read here too, as one streamed query
(:func:`export_batches_on`) or as keyset chunks on connections given back in between
(:func:`export_chunks`); ``tracker.export`` shapes them into CSV or NDJSON.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Select, String, case, func, literal, or_, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from tracker.model import DaemonRecord, Delivery, DeliveryState, Snapshot, Transition, WatchedOrder
from tracker.store import rows
from tracker.store.events import Alert, Stay, order_alerts
from tracker.store.rows import DELIVERY_ROWS, TRANSITION_COLUMNS
from tracker.store.sql import BATCH, Repository, chunks
from tracker.store.tables import daemons, deliveries, events, snapshots, sweep_state, transitions
from tracker.store.tables import watched_orders as w
from tracker.store.tally import active_counts

if TYPE_CHECKING:
    from tracker.store.sql import Conn

#: Rows per fetch of an export: large enough that the round trips (a thread hop on SQLite, a
#: network one on PostgreSQL) cost little per row, small enough to keep memory flat.
EXPORT_BATCH = 2_000
#: One exported row: order id, from, to, kind, skipped, detected at (ISO 8601 text), event id,
#: and the deliveries' states aggregated (``sink:state sink:state``, or ``None``).
ExportRow = tuple[str, str, str, str, str, str, str, str | None]
#: What :func:`export_query` builds.
ExportQuery = Select[Any]
#: Opens a connection for one short read (``Store.reading``).
Reading = Callable[[], AbstractAsyncContextManager["Conn"]]


@dataclass(frozen=True, slots=True, kw_only=True)
class History:
    """An order's stored timeline."""

    order: WatchedOrder
    snapshots: tuple[Snapshot, ...]
    transitions: tuple[Transition, ...]
    #: Each transition's deliveries, by event id.
    deliveries: dict[str, tuple[Delivery, ...]]
    #: The alerts raised about the order (stuck, poll failing, recovered), oldest first.
    alerts: tuple[Alert, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Overview:
    """How the tracker stands, for ``tracker status``."""

    daemons: tuple[DaemonRecord, ...]
    #: (status, state, count), state being ``active``, ``retired`` or ``removed``.
    orders: tuple[tuple[str | None, str, int], ...]
    #: (sink, state, count, oldest ``created_at`` of the pending ones).
    deliveries: tuple[tuple[str, str, int, datetime | None], ...]
    last_success_at: datetime | None
    #: (status, count) of the active orders whose current stay was reported stuck.
    stuck: tuple[tuple[str | None, int], ...] = ()
    #: The organisation's sweeps' state as kept (``tracker.trust.SweepState``), if any.
    sweeps: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Board:
    """What the support board and ``/metrics`` count, each read from an index or from the
    counts the database keeps (``Reports.board``): never a walk over every order or delivery."""

    #: (status, count) of the active orders; ``None`` for those never answered yet.
    active: tuple[tuple[str | None, int], ...]
    #: (status, count) of the active orders whose current stay was reported stuck.
    stuck: tuple[tuple[str | None, int], ...]
    #: (sink, count, oldest ``created_at``) of the pending deliveries.
    pending_by_sink: tuple[tuple[str, int, datetime | None], ...]
    dead: int
    daemons: int
    last_success_at: datetime | None
    #: The organisation's sweeps' state as kept (``tracker.trust.SweepState``), if any.
    sweeps: str | None = None

    @property
    def pending(self) -> int:
        """How many deliveries are pending, every sink's."""
        return sum(count for _sink, count, _oldest in self.pending_by_sink)


class Reports(Repository):
    """Timelines, the overview, counts and the lists the pages and digests show."""

    async def board(self, *, stale_before: datetime) -> Board:
        """The board's counts, and ``/metrics``'s gauges: active and stuck orders per status,
        pending deliveries per sink (and the oldest), dead ones, live daemons, the last
        successful poll. Unlike :meth:`overview`, nothing here scans a table: the active
        orders per status are kept by the database (``tracker.store.tally``), each other
        count walks an index over what it counts."""
        d = deliveries
        pending = d.c.state == DeliveryState.PENDING
        async with self._engine.connect() as conn:
            active = await active_counts(conn)
            stuck = await conn.execute(
                select(w.c.status, func.count())
                .where(w.c.active, w.c.stuck_at.is_not(None))
                .group_by(w.c.status)
            )
            waiting = await conn.execute(
                select(d.c.sink, func.count(), func.min(d.c.created_at))
                .where(pending)
                .group_by(d.c.sink)
                .order_by(d.c.sink)
            )
            dead = await conn.scalar(
                select(func.count()).select_from(d).where(d.c.state == DeliveryState.DEAD)
            )
            live = await conn.scalar(
                select(func.count())
                .select_from(daemons)
                .where(daemons.c.heartbeat_at >= stale_before)
            )
            last = await conn.scalar(select(func.max(w.c.last_success_at)))
            kept = await conn.scalar(
                select(sweep_state.c.value).where(sweep_state.c.name == "organisation")
            )
            return Board(
                active=tuple(active.items()),
                stuck=tuple((row[0], row[1]) for row in stuck),
                pending_by_sink=tuple((row[0], row[1], row[2]) for row in waiting),
                dead=int(dead or 0),
                daemons=int(live or 0),
                # max() and min() keep their column's type, so these are aware datetimes.
                last_success_at=last,
                sweeps=kept,
            )

    async def overview(self, *, stale_before: datetime) -> Overview:
        """Daemons, orders by status and state (and how many stuck), deliveries by sink and
        state, last success."""
        state = case(
            (w.c.active, literal("active")),
            (w.c.retired_at.is_not(None), literal("retired")),
            else_=literal("removed"),
        ).label("state")
        d = deliveries
        oldest = func.min(case((d.c.state == DeliveryState.PENDING, d.c.created_at)))
        async with self._engine.connect() as conn:
            live = await conn.execute(
                select(daemons)
                .where(daemons.c.heartbeat_at >= stale_before)
                .order_by(daemons.c.started_at)
            )
            # count(stuck_at) counts the stays reported stuck, in the same one scan.
            orders = (
                await conn.execute(
                    select(w.c.status, state, func.count(), func.count(w.c.stuck_at))
                    .group_by(w.c.status, state)
                    .order_by(w.c.status, state)
                )
            ).all()
            sent = await conn.execute(
                select(d.c.sink, d.c.state, func.count(), oldest.label("oldest"))
                .group_by(d.c.sink, d.c.state)
                .order_by(d.c.sink, d.c.state)
            )
            last = (await conn.execute(select(func.max(w.c.last_success_at)))).scalar()
            kept = await conn.scalar(
                select(sweep_state.c.value).where(sweep_state.c.name == "organisation")
            )
            return Overview(
                sweeps=kept,
                daemons=tuple(rows.daemon(row) for row in live),
                orders=tuple((row[0], row[1], row[2]) for row in orders),
                stuck=tuple((row[0], row[3]) for row in orders if row[1] == "active" and row[3]),
                deliveries=tuple((row[0], row[1], row[2], row.oldest) for row in sent),
                # min() and max() keep their column's type, so these are aware datetimes.
                last_success_at=last,
            )

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
                DELIVERY_ROWS.where(transitions.c.order_id == order_id).order_by(deliveries.c.id)
            )
            by_event: dict[str, list[Delivery]] = {}
            for delivery in sent:
                by_event.setdefault(delivery.event_id, []).append(rows.delivery(delivery))
            return History(
                order=rows.watched(row),
                snapshots=tuple(rows.snapshot(s) for s in snaps),
                transitions=tuple(rows.transition(t) for t in moves),
                deliveries={event: tuple(items) for event, items in by_event.items()},
                alerts=tuple(await order_alerts(conn, order_id)),
            )

    async def counts(self) -> dict[str, int]:
        """How many watched orders, snapshots and transitions are stored."""
        async with self._engine.connect() as conn:
            return {
                table.name: (
                    await conn.execute(select(func.count()).select_from(table))
                ).scalar_one()
                for table in (w, snapshots, transitions)
            }

    async def transitions_between(
        self, start: datetime, end: datetime
    ) -> AsyncIterator[Transition]:
        """The transitions detected from ``start`` up to ``end`` (excluded), by order and then
        by time, streamed: the index on ``detected_at`` finds them, a day of a busy supplier
        never sits in memory at once."""
        t = transitions
        # Typed loosely: its rows are read by name, as ``rows.transition`` does.
        query: Any = (
            select(*TRANSITION_COLUMNS)
            .where(t.c.detected_at >= start, t.c.detected_at < end)
            .order_by(t.c.order_id, t.c.detected_at, t.c.id)
        )
        async with self._engine.connect() as conn:
            result = await conn.stream(query.execution_options(yield_per=BATCH))
            async for row in result:
                yield rows.transition(row)

    async def stuck_now(self, *, limit: int) -> tuple[int, list[Stay]]:
        """The active orders whose current stay was reported stuck: how many, and the first
        ``limit`` of them, longest stay first."""
        now_stuck = (w.c.active, w.c.stuck_at.is_not(None))
        async with self._engine.connect() as conn:
            count = await conn.execute(select(func.count()).select_from(w).where(*now_stuck))
            found = await conn.execute(
                select(w.c.order_id, w.c.status, w.c.status_since)
                .where(*now_stuck)
                .order_by(w.c.status_since, w.c.order_id)
                .limit(limit)
            )
            stays = [
                Stay(order_id=r.order_id, status=r.status, since=r.status_since) for r in found
            ]
            return count.scalar_one(), stays

    async def stuck_orders(
        self, *, limit: int, after: tuple[datetime, str] | None = None
    ) -> list[tuple[WatchedOrder, datetime]]:
        """The active orders whose current stay was reported stuck, each with the stay's
        start, longest stay first (as :meth:`stuck_now`), up to ``limit`` after the key
        ``after`` (a stay's start and order id: keyset paging)."""
        query = (
            select(w)
            .where(w.c.active, w.c.stuck_at.is_not(None))
            .order_by(w.c.status_since, w.c.order_id)
            .limit(limit)
        )
        if after is not None:
            since, order_id = after
            # The first condition alone lets an index on the stay's start bound the scan.
            query = query.where(
                w.c.status_since >= since,
                or_(w.c.status_since > since, w.c.order_id > order_id),
            )
        async with self._engine.connect() as conn:
            return [(rows.watched(row), row.status_since) for row in await conn.execute(query)]

    async def watched_ids(self, order_ids: Sequence[str]) -> set[str]:
        """Which of ``order_ids`` are watched or were (removed and retired ones too)."""
        found: set[str] = set()
        async with self._engine.connect() as conn:
            for chunk in chunks(list(dict.fromkeys(order_ids))):
                picked = await conn.execute(select(w.c.order_id).where(w.c.order_id.in_(chunk)))
                found.update(picked.scalars())
        return found

    async def deliveries_of(self, event_ids: Sequence[str]) -> list[Delivery]:
        """Every delivery of the given events (each event's order and sink), by id."""
        found: list[Delivery] = []
        async with self._engine.connect() as conn:
            for chunk in chunks(list(dict.fromkeys(event_ids))):
                picked = await conn.execute(
                    DELIVERY_ROWS.where(deliveries.c.event_id.in_(chunk)).order_by(deliveries.c.id)
                )
                found += [rows.delivery(row) for row in picked]
        return found

    async def failing_now(self, *, at_least: int, limit: int) -> tuple[int, list[WatchedOrder]]:
        """The active orders whose last ``at_least`` polls (or more) failed in a row: how many,
        and the first ``limit`` of them, longest streak first."""
        failing = (w.c.active, w.c.consecutive_failures >= at_least)
        async with self._engine.connect() as conn:
            count = await conn.execute(select(func.count()).select_from(w).where(*failing))
            found = await conn.execute(
                select(w)
                .where(*failing)
                .order_by(w.c.consecutive_failures.desc(), w.c.order_id)
                .limit(limit)
            )
            return count.scalar_one(), [rows.watched(row) for row in found]

    async def latest_transitions(self, *, limit: int) -> list[Transition]:
        """The ``limit`` transitions detected last, latest first (the board's list): the index
        on ``detected_at`` is walked backwards, so the cost follows ``limit``, not the table."""
        t = transitions
        query: Any = (
            select(*TRANSITION_COLUMNS).order_by(t.c.detected_at.desc(), t.c.id.desc()).limit(limit)
        )
        async with self._engine.connect() as conn:
            return [rows.transition(row) for row in await conn.execute(query)]

    async def event_kinds(self, event_ids: Sequence[str]) -> dict[str, str]:
        """What each event is: ``transition``, or an alert's kind (``stuck``, ``poll_failing``,
        ``poll_recovered``, ``digest``); an id stored nowhere is left out."""
        found: dict[str, str] = {}
        async with self._engine.connect() as conn:
            for chunk in chunks(list(dict.fromkeys(event_ids))):
                moved = await conn.execute(
                    select(transitions.c.event_id).where(transitions.c.event_id.in_(chunk))
                )
                found.update(dict.fromkeys(moved.scalars(), "transition"))
                raised = await conn.execute(
                    select(events.c.event_id, events.c.kind).where(events.c.event_id.in_(chunk))
                )
                found.update({row.event_id: row.kind for row in raised})
        return found

    async def changes(
        self,
        *,
        since: datetime,
        until: datetime | None = None,
        status: str | None = None,
        before: tuple[datetime, int] | None = None,
        limit: int,
    ) -> list[tuple[int, Transition]]:
        """The transitions detected in ``[since, until)`` (to ``status`` only), latest first,
        each with its row id, up to ``limit`` after the key ``before`` (keyset paging)."""
        t = transitions
        query: Any = (
            select(t.c.id.label("row_id"), *TRANSITION_COLUMNS)
            .where(t.c.detected_at >= since)
            .order_by(t.c.detected_at.desc(), t.c.id.desc())
            .limit(limit)
        )
        if until is not None:
            query = query.where(t.c.detected_at < until)
        if status is not None:
            query = query.where(t.c.to_status == status)
        if before is not None:
            at, row_id = before
            # The first condition alone lets the index on detected_at bound the scan.
            query = query.where(t.c.detected_at <= at, or_(t.c.detected_at < at, t.c.id < row_id))
        async with self._engine.connect() as conn:
            return [(row.row_id, rows.transition(row)) for row in await conn.execute(query)]


# -- the export ------------------------------------------------------------------------------


class UtcText(FunctionElement[str]):
    """A stored time as ISO 8601 text in UTC with microseconds and ``Z``, as in webhook bodies.

    The database formats it while it reads the row (on SQLite in its own thread), which leaves
    the Python side one step less per row.
    """

    type = String()
    inherit_cache = True
    name = "utc_text"


@compiles(UtcText, "sqlite")
def _utc_text_sqlite(element: UtcText, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite keeps integer microseconds since the epoch (``UTCDateTime``).
    micros = compiler.process(element.clauses, **kw)
    return (
        f"(strftime('%Y-%m-%dT%H:%M:%S', {micros} / 1000000, 'unixepoch')"
        f" || printf('.%06dZ', {micros} % 1000000))"
    )


@compiles(UtcText, "postgresql")
def _utc_text_postgresql(element: UtcText, compiler: SQLCompiler, **kw: Any) -> str:
    moment = compiler.process(element.clauses, **kw)
    return f"""to_char({moment} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""


def export_query(
    *, since: datetime, until: datetime | None = None, status: str | None = None
) -> Select[Any]:
    """Transitions detected in ``[since, until)`` (to ``status`` only, if given), oldest first,
    each with its deliveries' states."""
    t, d = transitions, deliveries
    # One short "sink:state sink:state" string per transition, read through the unique index
    # on (event_id, sink); sink names hold neither a space nor a colon (the configuration
    # refuses them), and states are fixed words.
    states = (
        select(func.aggregate_strings(d.c.sink + ":" + d.c.state, " "))
        .where(d.c.event_id == t.c.event_id)
        .scalar_subquery()
    )
    query = (
        select(
            t.c.order_id,
            t.c.from_status,
            t.c.to_status,
            t.c.kind,
            t.c.skipped,
            UtcText(t.c.detected_at),
            t.c.event_id,
            states,
        )
        .where(t.c.detected_at >= since)
        .order_by(t.c.detected_at, t.c.id)
    )
    if until is not None:
        query = query.where(t.c.detected_at < until)
    if status is not None:
        query = query.where(t.c.to_status == status)
    return query


async def export_batches_on(conn: Conn, query: Select[Any]) -> AsyncGenerator[Sequence[ExportRow]]:
    """The rows of ``query`` in batches from a server-side cursor, on ``conn`` until the last.

    The next batch is fetched while the caller writes the one it has: the database's thread
    (SQLite) or the server (PostgreSQL) works while Python formats.
    """
    result = await conn.stream(query.execution_options(yield_per=EXPORT_BATCH))
    partitions = result.partitions()
    ahead = asyncio.ensure_future(anext(partitions, None))
    try:
        while (batch := await ahead) is not None:
            ahead = asyncio.ensure_future(anext(partitions, None))
            await asyncio.sleep(0)  # let the fetch start before the batch is written
            yield cast("Sequence[ExportRow]", batch)  # rows unpack like these tuples
    finally:
        if not ahead.done():  # the caller stopped early (an error, a closed pipe)
            ahead.cancel()
            await asyncio.wait([ahead])


async def export_chunks(
    reading: Reading, query: Select[Any], size: int = EXPORT_BATCH
) -> AsyncGenerator[Sequence[ExportRow]]:
    """The rows of :func:`export_query`'s ``query`` in chunks of at most ``size``, in its order.

    Each chunk is one short query on a connection taken from ``reading`` and given back before
    the chunk is yielded: a caller that waits (a client that does not read) holds no
    connection. Chunks follow each other by keyset, after the last row's ``(detected_at,
    id)``, a unique key, so no row comes twice; the export ends at the highest transition id
    it saw at its start, so rows that existed then all come, and rows added while it runs
    cannot keep it going.
    """
    if size < 1:
        raise ValueError(f"size must be at least 1, not {size}")
    t = transitions
    # The key travels after the exported columns and is cut off before a chunk is yielded.
    keyed = query.add_columns(t.c.detected_at, t.c.id).limit(size)
    last: tuple[datetime, int] | None = None
    end: int | None = None
    while True:
        async with reading() as conn:
            if end is None:
                end = (await conn.execute(select(func.max(t.c.id)))).scalar()
                if end is None:  # no transitions at all
                    return
            page = keyed.where(t.c.id <= end)
            if last is not None:
                at, after = last
                # The first condition alone lets the index on detected_at bound the scan.
                page = page.where(t.c.detected_at >= at, or_(t.c.detected_at > at, t.c.id > after))
            found = (await conn.execute(page)).all()
        if not found:
            return
        last = (found[-1][-2], found[-1][-1])
        yield [cast("ExportRow", tuple(row[:-2])) for row in found]
        if len(found) < size:
            return
