"""The fleet: daemons joining, beating, leaving (their claims released), and pausing together."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, insert, or_, select, update

from tracker.model import DaemonRecord
from tracker.store import rows
from tracker.store.sql import Repository
from tracker.store.tables import daemons, deliveries, fleet
from tracker.store.tables import watched_orders as w

if TYPE_CHECKING:
    from tracker.store.sql import Conn

#: The PostgreSQL advisory lock a joining daemon holds ("trk" + "join" in ASCII): two daemons
#: starting at the same moment each see the other, rather than both finding themselves alone.
JOIN_LOCK = 0x74726B_6A6F696E


@dataclass(frozen=True, slots=True, kw_only=True)
class Joined:
    """What a starting daemon found: the other live daemons, and whether it was let in."""

    joined: bool
    others: tuple[DaemonRecord, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Taken:
    """How many claims of gone daemons were released, to be taken by the live ones."""

    orders: int
    deliveries: int


class Fleet(Repository):
    """The daemons registered on this database, and the pause they share."""

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
            found = await conn.execute(select(daemons).order_by(daemons.c.started_at))
            others = tuple(rows.daemon(row) for row in found)
            if others and not self.shared:
                return Joined(joined=False, others=others)
            await conn.execute(insert(daemons).values(**rows.values(me)))
        return Joined(joined=True, others=others)

    async def heartbeat(self, me: DaemonRecord, *, now: datetime) -> bool:
        """Mark ``me`` alive at ``now``; registers it again (returns False) if it was removed."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(daemons).where(daemons.c.id == me.id).values(heartbeat_at=now)
            )
            if result.rowcount:
                return True
            await conn.execute(insert(daemons).values(**(rows.values(me) | {"heartbeat_at": now})))
        return False

    async def forget(self, ids: Sequence[str]) -> Taken:
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
            return [rows.daemon(row) for row in await conn.execute(query)]

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


async def _forget(conn: Conn, owners: Sequence[str] | Any) -> Taken:
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
