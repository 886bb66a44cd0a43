"""What every repository shares: batching, dialect-aware inserts, claims' conditions, the engine."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

from sqlalchemy import Column, Table, or_, select, update
from sqlalchemy.engine import URL

from tracker.store.tables import watched_orders as w

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from tracker.store.plain import PlainConnection, PlainEngine

    #: What the repositories run on: an async engine (the daemon, the listener, writing
    #: commands) or a plain one (the reading commands, ``tracker.store.plain``).
    Database: TypeAlias = AsyncEngine | PlainEngine
    #: A connection of either.
    Conn: TypeAlias = AsyncConnection | PlainConnection

#: How many rows one statement writes or one fetch reads at most.
BATCH = 500
T = TypeVar("T")


class Owner:
    """Whose claims a store's repositories take, renew, release and record (one per store).

    Every claim a store takes carries ``name``, and only a claim that still does is renewed,
    released or recorded. Another process (or a daemon that took over an expired lease) holds
    another owner, so it never finds its work undone or overwritten by one that lost its claim.
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


class Repository:
    """A concern's reads and writes over the store's engine (and its claims' owner)."""

    def __init__(self, engine: Database, owner: Owner) -> None:
        self._engine = engine
        self._owner = owner

    @property
    def owner(self) -> str:
        """Whose claims this store takes (see :class:`Owner`)."""
        return self._owner.name

    async def _extend(self, key: Column[Any], keys: Sequence[Any], lease_until: datetime) -> None:
        """Push the leases this store still holds on the rows of ``keys`` to ``lease_until``."""
        table = key.table
        keys = sorted(keys)
        async with self._engine.begin() as conn:
            await lock_in_order(conn, key, keys)
            for chunk in chunks(keys):
                await conn.execute(
                    update(table)
                    .where(key.in_(chunk), table.c.leased_by == self.owner)
                    .values(leased_until=lease_until)
                )


async def lock_in_order(conn: Conn, key: Column[Any], keys: Sequence[Any]) -> None:
    """On PostgreSQL, lock the rows of ``keys`` (sorted) in key order before writing any.

    Two transactions that lock the same rows in different orders deadlock, and PostgreSQL
    fails one of them. An ``UPDATE … WHERE key IN (…)`` locks in whatever order its plan
    visits the rows (a bitmap scan: their place in the table), so the writes of several named
    orders (recording, renewing and releasing claims, reporting stuck stays, watching and
    unwatching) take their locks here first. Claims of due orders skip locked rows instead.
    Python's sort of the chunks and the database's within one agree because order ids are
    ``prdo_`` and lowercase letters and digits (``model.ORDER_ID``). SQLite has one writer at
    a time.
    """
    if conn.dialect.name != "postgresql":
        return
    for chunk in chunks(keys):
        await conn.execute(select(key).where(key.in_(chunk)).order_by(key).with_for_update())


def chunks(items: Sequence[T]) -> Iterable[Sequence[T]]:
    """``items`` in slices of :data:`BATCH`: no statement grows with the input."""
    for start in range(0, len(items), BATCH):
        yield items[start : start + BATCH]


def unclaimed(now: datetime) -> Any:
    """No live claim on the order: none taken, or its lease ran out (a killed process's)."""
    return or_(w.c.leased_by.is_(None), w.c.leased_until <= now)


def insert_new(conn: Conn, table: Table) -> Any:
    """``INSERT … ON CONFLICT DO NOTHING`` in the connection's dialect."""
    # Each dialect's module loads only where it is used: reading commands stay light.
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql  # noqa: PLC0415

        return postgresql.insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects import sqlite  # noqa: PLC0415

    return sqlite.insert(table).on_conflict_do_nothing()


def where(url: URL) -> str:
    """Where ``url`` points, without its password: ``host:port/database`` or the file."""
    if url.get_backend_name() == "sqlite":
        return f"the SQLite file {url.database}"
    return f"{url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"
