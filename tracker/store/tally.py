"""The active orders per status, as the database keeps them (``order_counts``, migration 0012).

Triggers on ``watched_orders`` add a row of +1 for the status an active order enters and -1 for
the one it leaves, whichever statement writes the order: the board reads a few rows instead of
walking every active order. Rows are only ever added, so concurrent writers (several daemons on
PostgreSQL) never wait on one another's counts; :meth:`Tally.fold` keeps them few.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import delete, func, insert, select

from tracker.store.sql import Repository
from tracker.store.tables import order_counts as c

if TYPE_CHECKING:
    from tracker.store.sql import Conn

#: Rows of ``order_counts`` beyond which :meth:`Tally.fold` folds them (below, it leaves them).
FOLD_ABOVE = 200


async def active_counts(conn: Conn) -> dict[str | None, int]:
    """The active orders per status (``None``: never answered yet), statuses with none left
    out."""
    total = func.sum(c.c.n)
    found = await conn.execute(select(c.c.status, total).group_by(c.c.status).having(total != 0))
    return {status: int(n) for status, n in found}


class Tally(Repository):
    """Keeps the rows of ``order_counts`` few (they are read by :func:`active_counts`)."""

    async def fold(self) -> int:
        """Fold the rows into one per status, when there are more than :data:`FOLD_ABOVE`; how
        many rows were folded (0 if none).

        One transaction deletes the rows and writes their sums, summed by the database (a
        million rows after a bulk watch cost no memory here). On PostgreSQL ``DELETE …
        RETURNING`` sums exactly the rows it deleted, so a row another transaction adds
        meanwhile is left for the next fold, never lost or counted twice; SQLite has one
        writer at a time, so its sum, delete and insert see the same rows.
        """
        async with self._engine.begin() as conn:
            rows = await conn.scalar(select(func.count()).select_from(c))
            if not rows or rows <= FOLD_ABOVE:
                return 0
            if conn.dialect.name == "postgresql":
                gone = delete(c).returning(c.c.status, c.c.n).cte("gone")
                summed = select(gone.c.status, func.sum(gone.c.n), func.count())
                sums = (await conn.execute(summed.group_by(gone.c.status))).all()
            else:
                summed = select(c.c.status, func.sum(c.c.n), func.count())
                sums = (await conn.execute(summed.group_by(c.c.status))).all()
            kept = [{"status": status, "n": int(n)} for status, n, _rows in sums if n]
            if conn.dialect.name != "postgresql":
                await conn.execute(delete(c))
            if kept:
                await conn.execute(insert(c), kept)
            return sum(int(folded) for _status, _n, folded in sums)
