"""Which orders are watched: adding, removing, reading them one, a page or all at a time."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select, union, update

from tracker.model import WatchedOrder
from tracker.store import rows
from tracker.store.sql import BATCH, Repository, chunks, insert_new, lock_in_order
from tracker.store.tables import watched_orders as w


class Orders(Repository):
    """The watched orders: one row each, kept (with its history) after it stops being polled."""

    async def watch(self, order_ids: Iterable[str], *, source: str, now: datetime) -> list[str]:
        """Watch orders (again); returns the ids that were not watched before."""
        wanted = list(dict.fromkeys(order_ids))
        added: list[str] = []
        async with self._engine.begin() as conn:
            await lock_in_order(conn, w.c.order_id, sorted(wanted))
            for chunk in chunks(wanted):
                found = await conn.execute(
                    select(w.c.order_id, w.c.active).where(w.c.order_id.in_(chunk))
                )
                existing = {row.order_id: row.active for row in found}
                fresh = [i for i in chunk if i not in existing]
                revived = [i for i in chunk if existing.get(i) is False]
                if fresh:
                    # Another process (a daemon starting at the same moment) may insert the
                    # same new ids between the read and this insert: theirs stand.
                    await conn.execute(
                        insert_new(conn, w),
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
            for chunk in chunks(wanted):
                found = await conn.execute(select(w.c.order_id).where(w.c.order_id.in_(chunk)))
                known.update(found.scalars())
        return await self.watch([i for i in wanted if i not in known], source="config", now=now)

    async def unwatch(self, order_ids: Iterable[str], *, now: datetime) -> list[str]:
        """Stop polling orders, keeping their history; returns the ids that were active."""
        removed: list[str] = []
        wanted = list(dict.fromkeys(order_ids))
        async with self._engine.begin() as conn:
            await lock_in_order(conn, w.c.order_id, sorted(wanted))
            for chunk in chunks(wanted):
                found = await conn.execute(
                    update(w)
                    .where(w.c.order_id.in_(chunk), w.c.active)
                    .values(active=False, removed_at=now)
                    .returning(w.c.order_id)
                )
                removed += found.scalars().all()
        return removed

    async def watched(
        self, *, status: str | None = None, by_rule: bool | None = None
    ) -> AsyncIterator[WatchedOrder]:
        """Every watched order (retired and removed too), streamed in id order; with
        ``by_rule``, only those a ``[watch]`` rule added (``True``) or only the others."""
        query = select(w).order_by(w.c.order_id)
        if status is not None:
            query = query.where(w.c.status == status)
        if by_rule is not None:
            query = query.where((w.c.source == "rule") if by_rule else (w.c.source != "rule"))
        async with self._engine.connect() as conn:
            result = await conn.stream(query.execution_options(yield_per=BATCH))
            async for row in result:
                yield rows.watched(row)

    async def get(self, order_id: str) -> WatchedOrder | None:
        """One watched order, or ``None``."""
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(w).where(w.c.order_id == order_id))).first()
        return rows.watched(row) if row is not None else None

    async def page(
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
            return [rows.watched(row) for row in await conn.execute(query)]


def _search(q: str, filters: Sequence[ColumnElement[bool]], limit: int, *, backend: str) -> Any:
    """The ids of the first ``limit`` orders ``q`` matches (``page``), a subquery.

    One branch per way to match, each walking its own index in id order and stopping after
    ``limit`` rows; a single ``OR`` would let the planner scan the whole table in id order,
    or fetch every match and sort it.
    """
    by_id: ColumnElement[bool]
    if backend == "postgresql":
        # LIKE with a constant prefix: ix_watched_orders_order_id_pattern serves it under
        # any collation (the primary key's index only under C). ``>= q`` holds for every id
        # it matches (ids are ``prdo_`` and lowercase letters and digits, ``model.ORDER_ID``,
        # which every collation orders as their code points), and lets the planner start a
        # walk of the primary
        # key in id order there: without it, it walked from the first id and filtered (200 ms
        # for "prdo_a" at a million orders).
        by_id = and_(w.c.order_id.startswith(q, autoescape=True), w.c.order_id >= q)
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
