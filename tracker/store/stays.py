"""Stays: how long each order spent in each status, kept as transitions are recorded.

A stay begins with the transition into a status (``started_at``) and ends with the transition
out of it (``ended_at``). The first status an order is seen in began before watching did: its
start is unknown (null), never zero, and it has no length. :func:`begin_first` and
:func:`move` write them in the transaction that stores the snapshot (``Polls.record``); the
migration ``0009`` built them for the history stored before.

:class:`Stays` reads them for the reports (``tracker.insight``): percentiles are ranked in SQL
(the same window functions on SQLite and PostgreSQL) and only the rows at the ranks that
matter come back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import BigInteger, and_, case, exists, func, insert, or_, select, update
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from tracker.journey import Visit
from tracker.store.sql import Repository
from tracker.store.tables import MICROSECOND, stays, transitions

if TYPE_CHECKING:
    from sqlalchemy import ColumnElement

    from tracker.store.sql import Conn

#: The provider column's width (``String(64)``): a longer value is not kept (never cut).
PROVIDER_WIDTH = 64
#: Percentiles the reports rank, as (numerator, denominator) of the fraction: exact integers,
#: so the ranks are found by integer division on both databases.
PERCENTILES: tuple[tuple[int, int], ...] = ((1, 2), (9, 10))
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


@dataclass(frozen=True, slots=True, kw_only=True)
class Ranked:
    """A group's count and the lengths (microseconds) at the ranks its percentiles need.

    ``at`` maps a 0-based rank (in ascending length) to the length there; it holds the two
    ranks around each of :data:`PERCENTILES`' positions ``(count - 1) * p``.
    """

    status: str | None
    provider: str | None
    count: int
    at: Mapping[int, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class LeadTime:
    """One order's lead time: its first entry into ``ordered`` and into ``activated``."""

    order_id: str
    provider: str | None
    ordered_at: datetime
    activated_at: datetime


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


class Stays(Repository):
    """The reports' reads over the stays: lengths, lead times, the flow, weekly entries."""

    async def ranked(
        self, *, since: datetime, until: datetime, by_provider: bool, overall: bool = False
    ) -> list[Ranked]:
        """Finished stays of known length that ended in ``[since, until)``: per status (and
        provider, with ``by_provider``; or all statuses together with ``overall``), how many
        and the lengths at the ranks of :data:`PERCENTILES`."""
        s = stays
        keys: list[ColumnElement[Any]] = [] if overall else [s.c.status]
        if by_provider:
            keys.append(s.c.provider)
        window: dict[str, Any] = {"partition_by": keys} if keys else {}
        inner = (
            select(
                *keys,
                s.c.micros,
                func.row_number().over(order_by=s.c.micros, **window).label("rn"),
                func.count().over(**window).label("n"),
            )
            .where(s.c.ended_at >= since, s.c.ended_at < until, s.c.micros.is_not(None))
            .subquery()
        )
        rank = inner.c.rn - 1
        wanted = []
        for numerator, denominator in PERCENTILES:
            low = (inner.c.n - 1) * numerator // denominator
            wanted += [rank == low, rank == low + 1]
        query = select(inner).where(or_(*wanted))
        groups: dict[tuple[str | None, str | None], tuple[int, dict[int, int]]] = {}
        async with self._engine.connect() as conn:
            for row in await conn.execute(query):
                status = None if overall else row.status
                provider = row.provider if by_provider else None
                _count, at = groups.setdefault((status, provider), (row.n, {}))
                at[row.rn - 1] = row.micros
        return [
            Ranked(status=status, provider=provider, count=count, at=at)
            for (status, provider), (count, at) in sorted(groups.items(), key=_group_key)
        ]

    async def lead_times(self, *, since: datetime, until: datetime) -> list[LeadTime]:
        """Orders whose first transition into ``activated`` was in ``[since, until)`` and that
        entered ``ordered`` (by a transition) before it: both times of each."""
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
        first = ~exists().where(
            earlier.c.order_id == a.c.order_id,
            earlier.c.status == "activated",
            earlier.c.started_at < a.c.started_at,
        )
        inner = (
            select(
                a.c.order_id,
                a.c.provider,
                a.c.started_at.label("activated_at"),
                ordered_at.label("ordered_at"),
            )
            .where(a.c.status == "activated", a.c.started_at >= since, a.c.started_at < until)
            .where(first)
            .subquery()
        )
        query = (
            select(inner)
            .where(inner.c.ordered_at.is_not(None))
            .order_by(inner.c.activated_at, inner.c.order_id)
        )
        async with self._engine.connect() as conn:
            return [
                LeadTime(
                    order_id=row.order_id,
                    provider=row.provider,
                    # min() keeps its column's type: an aware datetime on both databases.
                    ordered_at=row.ordered_at,
                    activated_at=row.activated_at,
                )
                for row in await conn.execute(query)
            ]

    async def flow(
        self, *, since: datetime, until: datetime, by_provider: bool = False
    ) -> list[tuple[str, str, str | None, int]]:
        """How many stays that ended in ``[since, until)`` led from each status to each other
        (the transitions of the period), as ``(from, to, provider, count)``, most first."""
        s = stays
        keys: list[ColumnElement[Any]] = [s.c.status, s.c.next_status]
        if by_provider:
            keys.append(s.c.provider)
        count = func.count().label("n")
        query = (
            select(*keys, count)
            .where(s.c.ended_at >= since, s.c.ended_at < until)
            .group_by(*keys)
            .order_by(count.desc(), *keys)
        )
        async with self._engine.connect() as conn:
            return [
                (row.status, row.next_status, row.provider if by_provider else None, row.n)
                for row in await conn.execute(query)
            ]

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

    async def over_target(
        self, targets: Mapping[str, timedelta], *, since: datetime, until: datetime
    ) -> list[tuple[str, str | None, int, int]]:
        """For the statuses of ``targets``: finished stays of known length that ended in
        ``[since, until)``, per status and provider, as ``(status, provider, count, over)``,
        ``over`` counting those longer than the status's target."""
        if not targets:
            return []
        s = stays
        over = func.sum(
            case(
                *[
                    (and_(s.c.status == status, s.c.micros > target // MICROSECOND), 1)
                    for status, target in targets.items()
                ],
                else_=0,
            )
        ).label("over")
        query = (
            select(s.c.status, s.c.provider, func.count().label("n"), over)
            .where(
                s.c.ended_at >= since,
                s.c.ended_at < until,
                s.c.micros.is_not(None),
                s.c.status.in_(list(targets)),
            )
            .group_by(s.c.status, s.c.provider)
            .order_by(s.c.status, s.c.provider)
        )
        async with self._engine.connect() as conn:
            return [
                (row.status, row.provider, row.n, int(row.over or 0))
                for row in await conn.execute(query)
            ]

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


def _group_key(
    item: tuple[tuple[str | None, str | None], tuple[int, dict[int, int]]],
) -> tuple[str, str]:
    (status, provider), _ = item
    return (status or "", provider or "")
