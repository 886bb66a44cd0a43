"""Stays: how long each order spent in each status, kept as transitions are recorded.

A stay begins with the transition into a status (``started_at``) and ends with the transition
out of it (``ended_at``). The first status an order is seen in began before watching did: its
start is unknown (null), never zero, and it has no length. :func:`begin_first` and
:func:`move` write them in the transaction that stores the snapshot (``Polls.record``); the
migration ``0009`` built them for the history stored before.

:class:`Stays` reads them for the reports (``tracker.insight``). The durations, the flow and the
SLA share of a period all come from one read of the finished stays (:meth:`Stays.finished`),
grouped by the database (PostgreSQL in one scan of a covering index, SQLite group by group
from another): a compact :class:`Finished` holds the moves' counts and each status and
provider's lengths, parsed and sorted into an integer array only when asked for, so that a page
asking for all three reads the period once, and the percentiles are exact on both databases.
"""

from __future__ import annotations

import json
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import (
    BigInteger,
    String,
    bindparam,
    func,
    insert,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from tracker.journey import Visit
from tracker.store.sql import Repository
from tracker.store.tables import MICROSECOND, UTCDateTime, stays, transitions

if TYPE_CHECKING:
    from tracker.store.sql import Conn

#: The provider column's width (``String(64)``): a longer value is not kept (never cut).
PROVIDER_WIDTH = 64
#: The statuses whose entries the weekly trend counts.
TREND_STATUSES = ("activated", "cancelled", "blocked", "blocked_wim")
#: Weeks start on Monday, 00:00 UTC: 1970-01-05 is the first Monday after the epoch.
_MONDAY_MICROS = 4 * 86_400 * 1_000_000
_WEEK_MICROS = 7 * 86_400 * 1_000_000


# -- writing, in the poll's transaction ------------------------------------------------------


def provider_of(value: str) -> str | None:
    """``value`` if the column holds it whole, else ``None``."""
    return value if len(value) <= PROVIDER_WIDTH else None


async def begin_first(
    conn: Conn, *, order_id: str, status: str, provider: str, at: datetime
) -> None:
    """The order's first snapshot: a stay whose start is unknown (watching began mid-stay)."""
    await conn.execute(
        insert(stays).values(
            order_id=order_id,
            status=status,
            provider=provider_of(provider),
            started_at=None,
            seen_at=at,
        )
    )


async def begin_firsts(conn: Conn, firsts: Sequence[tuple[str, str, str, datetime]]) -> None:
    """:func:`begin_first` for many orders at once: (order id, status, provider, seen at)."""
    await conn.execute(
        insert(stays),
        [
            {
                "order_id": order_id,
                "status": status,
                "provider": provider_of(provider),
                "started_at": None,
                "seen_at": at,
            }
            for order_id, status, provider, at in firsts
        ],
    )


async def move(conn: Conn, *, order_id: str, status: str, provider: str, at: datetime) -> None:
    """A transition to ``status`` at ``at``: the current stay ends, the next one begins."""
    current = (
        await conn.execute(
            select(stays.c.id, stays.c.started_at).where(
                stays.c.order_id == order_id, stays.c.ended_at.is_(None)
            )
        )
    ).all()
    for stay_id, started in current:
        await conn.execute(
            update(stays)
            .where(stays.c.id == stay_id)
            .values(
                ended_at=at,
                micros=None if started is None else (at - started) // MICROSECOND,
                next_status=status,
            )
        )
    await conn.execute(
        insert(stays).values(
            order_id=order_id,
            status=status,
            provider=provider_of(provider),
            started_at=at,
            seen_at=at,
        )
    )


# -- reading ---------------------------------------------------------------------------------


#: A group of finished stays: (status, provider).
Group = tuple[str, "str | None"]
#: A move between statuses: (from, to, provider).
Move = tuple[str, str, "str | None"]
#: One group of the read: status, provider, next status, how many stays, and the lengths of
#: those of known start in microseconds, as decimal text joined by commas (``None`` if none).
Grouped = tuple[str, "str | None", str, int, "str | None"]


@dataclass(slots=True)
class Finished:
    """The finished stays that ended in a period, as the reports need them.

    ``moves`` counts the stays per (status, next status, provider), which are the period's
    transitions. The lengths of the stays of known start arrive per (status, provider) as the
    database's comma-joined texts, and are parsed and sorted only when asked for
    (:meth:`lengths`), once: the flow needs none of them, the SLA share only its statuses'.
    """

    moves: Counter[Move] = field(default_factory=Counter)
    texts: dict[Group, list[str]] = field(default_factory=dict)
    parsed: dict[Group, array[int]] = field(default_factory=dict)

    def groups(self) -> list[Group]:
        """The (status, provider) pairs that have stays of known length."""
        return list(self.texts)

    def lengths(self, group: Group) -> array[int]:
        """The lengths in microseconds of ``group``'s stays of known start, shortest first."""
        found = self.parsed.get(group)
        if found is None:
            # The texts are decimal integers joined by commas: a JSON array once bracketed,
            # which the json module's C parser reads twice as fast as int() on each.
            values: list[int] = json.loads(f"[{','.join(self.texts[group])}]")
            values.sort()
            found = self.parsed[group] = array("q", values)
        return found

    def add(self, group: Grouped) -> None:
        """One (status, provider, next status) group of the scan (none if its count is 0)."""
        status, provider, next_status, count, joined = group
        if count:
            self.moves[(status, next_status, provider)] += count
        if joined:
            self.texts.setdefault((status, provider), []).append(joined)


#: One order's lead time: its provider, and the microseconds from its first entry into
#: ``ordered`` to its first entry into ``activated``.
Lead = tuple["str | None", int]


class WeekNumber(FunctionElement[int]):
    """Whole weeks (Monday 00:00 UTC to Monday) from 1970-01-05 to a stored time."""

    type = BigInteger()
    inherit_cache = True
    name = "week_number"


@compiles(WeekNumber, "sqlite")
def _week_sqlite(element: WeekNumber, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite keeps integer microseconds since the epoch (``UTCDateTime``); the times
    # reported are after 1970, so the integer division's truncation is a floor.
    micros = compiler.process(element.clauses, **kw)
    return f"(({micros} - {_MONDAY_MICROS}) / {_WEEK_MICROS})"


@compiles(WeekNumber, "postgresql")
def _week_postgresql(element: WeekNumber, compiler: SQLCompiler, **kw: Any) -> str:
    moment = compiler.process(element.clauses, **kw)
    return (
        f"CAST(floor((extract(epoch FROM {moment}) - {_MONDAY_MICROS // 1_000_000})"
        f" / {_WEEK_MICROS // 1_000_000}) AS BIGINT)"
    )


class MicrosBetween(FunctionElement[int]):
    """The microseconds from one stored time to another (``end - start``), exact."""

    type = BigInteger()
    inherit_cache = True
    name = "micros_between"


@compiles(MicrosBetween, "sqlite")
def _between_sqlite(element: MicrosBetween, compiler: SQLCompiler, **kw: Any) -> str:
    start, end = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"({end} - {start})"  # both integer microseconds already


@compiles(MicrosBetween, "postgresql")
def _between_postgresql(element: MicrosBetween, compiler: SQLCompiler, **kw: Any) -> str:
    # The difference of two timestamptz is an interval of days and microseconds (no months),
    # whose epoch is an exact numeric.
    start, end = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"CAST(extract(epoch FROM ({end} - {start})) * 1000000 AS BIGINT)"


#: :meth:`Stays.finished` on SQLite, which has no hash grouping: a GROUP BY sorts the period's
#: rows (50 ms for 60,000). Instead the (status, next status) pairs and then each pair's
#: providers are enumerated by seeks in ``ix_stays_status_next_status_provider_ended_at_micros``
#: (a few per pair: a loose index scan), and each (status, next status, provider) reads its
#: range of ``ended_at`` there. Groups without a stay in the period come back with a count of 0.
#: The NULL provider (a name longer than the column) is its own group, since ``min`` skips it.
_SQLITE_FINISHED = text(
    """
WITH RECURSIVE pairs(s, n) AS (
  SELECT s0, (SELECT min(next_status) FROM stays WHERE status = s0)
  FROM (SELECT min(status) AS s0 FROM stays)
  UNION ALL
  SELECT
    CASE WHEN (SELECT min(next_status) FROM stays WHERE status = pairs.s AND next_status > pairs.n)
      IS NOT NULL THEN pairs.s ELSE (SELECT min(status) FROM stays WHERE status > pairs.s) END,
    coalesce(
      (SELECT min(next_status) FROM stays WHERE status = pairs.s AND next_status > pairs.n),
      (SELECT min(next_status) FROM stays
       WHERE status = (SELECT min(status) FROM stays WHERE status > pairs.s)))
  FROM pairs WHERE pairs.s IS NOT NULL
),
providers(s, n, p) AS (
  SELECT s, n, (SELECT min(provider) FROM stays WHERE status = pairs.s AND next_status = pairs.n)
  FROM pairs WHERE n IS NOT NULL
  UNION ALL
  SELECT s, n, (SELECT min(provider) FROM stays
                WHERE status = providers.s AND next_status = providers.n AND provider > providers.p)
  FROM providers WHERE p IS NOT NULL
),
keys(s, n, p) AS (
  SELECT s, n, p FROM providers WHERE p IS NOT NULL
  UNION ALL
  SELECT s, n, NULL FROM pairs WHERE n IS NOT NULL
)
SELECT s, p, n,
  (SELECT count(*) FROM stays WHERE status = keys.s AND next_status = keys.n
   AND provider IS keys.p AND ended_at >= :since AND ended_at < :until),
  (SELECT group_concat(micros, ',') FROM stays WHERE status = keys.s AND next_status = keys.n
   AND provider IS keys.p AND ended_at >= :since AND ended_at < :until)
FROM keys
"""
).bindparams(bindparam("since", type_=UTCDateTime), bindparam("until", type_=UTCDateTime))


class Stays(Repository):
    """The reports' reads over the stays: lengths, lead times, the flow, weekly entries."""

    async def finished(self, *, since: datetime, until: datetime) -> Finished:
        """The stays that ended in ``[since, until)``: lengths by status and provider, and
        moves by (from, to, provider).

        The database groups the stays by (status, provider, next status) and hands each
        group's lengths over as one text: a few dozen rows cross to Python instead of one per
        stay, which cost about 3 µs each and most of the report page's time. SQLite would sort
        the period's rows to group them; it reads each group's range of the index on
        (status, next status, provider, ended_at) instead (:data:`_SQLITE_FINISHED`).
        """
        s = stays
        if self._engine.dialect.name == "sqlite":
            query: Any = _SQLITE_FINISHED.bindparams(since=since, until=until)
        else:
            lengths = func.aggregate_strings(s.c.micros.cast(String), ",")  # nulls left out
            query = (
                select(s.c.status, s.c.provider, s.c.next_status, func.count(), lengths)
                .where(s.c.ended_at >= since, s.c.ended_at < until)
                .group_by(s.c.status, s.c.provider, s.c.next_status)
            )
        async with self._engine.connect() as conn:
            groups = cast("Sequence[Grouped]", (await conn.execute(query)).all())
        found = Finished()
        for group in groups:
            found.add(group)
        return found

    async def lead_times(self, *, since: datetime, until: datetime) -> list[Lead]:
        """Orders whose first transition into ``activated`` was in ``[since, until)`` and that
        entered ``ordered`` (by a transition) before it: the provider and lead time of each,
        in no particular order."""
        a, earlier, o = stays.alias("a"), stays.alias("e"), stays.alias("o")
        ordered_at = (
            select(func.min(o.c.started_at))
            .where(
                o.c.order_id == a.c.order_id,
                o.c.status == "ordered",
                o.c.started_at < a.c.started_at,
            )
            .scalar_subquery()
        )
        first = ~(
            select(literal_column("1"))
            .where(
                earlier.c.order_id == a.c.order_id,
                earlier.c.status == "activated",
                earlier.c.started_at < a.c.started_at,
            )
            .exists()  # SELECT 1 rather than *: SQLite then reads the index alone
        )
        query = select(a.c.provider, MicrosBetween(ordered_at, a.c.started_at)).where(
            a.c.status == "activated", a.c.started_at >= since, a.c.started_at < until, first
        )
        async with self._engine.connect() as conn:
            found = cast(
                "Sequence[tuple[str | None, int | None]]", (await conn.execute(query)).all()
            )
        # Null when the order never entered ``ordered`` before: filtered here, since a
        # condition on the subquery would have the database compute it twice per order.
        return [(provider, micros) for provider, micros in found if micros is not None]

    async def weekly(self, *, since: datetime, until: datetime) -> list[tuple[int, str, int]]:
        """Entries into :data:`TREND_STATUSES` in ``[since, until)`` per week, as ``(week
        number since 1970-01-05, status, count)``."""
        s = stays
        week = WeekNumber(s.c.started_at).label("week")
        query = (
            select(week, s.c.status, func.count().label("n"))
            .where(s.c.status.in_(TREND_STATUSES), s.c.started_at >= since, s.c.started_at < until)
            .group_by(week, s.c.status)
            .order_by(week, s.c.status)
        )
        async with self._engine.connect() as conn:
            return [(int(row.week), row.status, row.n) for row in await conn.execute(query)]

    async def of_order(self, order_id: str) -> list[Visit]:
        """One order's stays, oldest first: its journey (``tracker.journey``)."""
        s = stays
        query = (
            select(s.c.status, s.c.started_at, s.c.seen_at, s.c.ended_at)
            .where(s.c.order_id == order_id)
            .order_by(s.c.seen_at, s.c.id)
        )
        async with self._engine.connect() as conn:
            return [
                Visit(
                    status=row.status,
                    started_at=row.started_at,
                    seen_at=row.seen_at,
                    ended_at=row.ended_at,
                )
                for row in await conn.execute(query)
            ]

    async def transition_count(self) -> int:
        """How many transitions are stored (for the benchmark's and the page's context)."""
        async with self._engine.connect() as conn:
            return int(await conn.scalar(select(func.count()).select_from(transitions)) or 0)
