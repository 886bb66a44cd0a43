"""The active orders per status, as the database keeps them (``order_counts``, migration 0012).

Triggers on ``watched_orders`` add a row of +1 for the status an active order enters and -1 for
the one it leaves, whichever statement writes the order: the board reads a few rows instead of
walking every active order. Rows are only ever added, so concurrent writers (several daemons on
PostgreSQL) never wait on one another's counts; :meth:`Tally.fold` keeps them few.
"""

from __future__ import annotations

from collections import Counter
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

        One transaction deletes the rows and writes their sums: ``DELETE … RETURNING`` hands
        back exactly the rows it deleted, so a row another transaction adds meanwhile is left
        for the next fold, never lost or counted twice.
        """
        async with self._engine.begin() as conn:
            rows = await conn.scalar(select(func.count()).select_from(c))
            if not rows or rows <= FOLD_ABOVE:
                return 0
            sums: Counter[str | None] = Counter()
            folded = 0
            for status, n in await conn.execute(delete(c).returning(c.c.status, c.c.n)):
                sums[status] += n
                folded += 1
            kept = [{"status": status, "n": n} for status, n in sums.items() if n]
            if kept:
                await conn.execute(insert(c), kept)
            return folded
