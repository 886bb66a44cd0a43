"""The organisation's sweeps: their kept state, orders found by rule, and full passes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import or_, select, update

from tracker.model import Claim
from tracker.store.sql import Repository, chunks, insert_new
from tracker.store.tables import sweep_state
from tracker.store.tables import watched_orders as w


class Sweeps(Repository):
    """What the organisation's sweeps read and write beside the polls' claims and outcomes."""

    async def load(self, name: str) -> str | None:
        """The state kept under ``name`` (JSON), or ``None`` before the first save."""
        async with self._engine.connect() as conn:
            found = await conn.scalar(select(sweep_state.c.value).where(sweep_state.c.name == name))
        return None if found is None else str(found)

    async def save(self, name: str, value: str, *, now: datetime) -> None:
        """Keep ``value`` under ``name``, replacing what was there."""
        async with self._engine.begin() as conn:
            changed = await conn.execute(
                update(sweep_state)
                .where(sweep_state.c.name == name)
                .values(value=value, updated_at=now)
            )
            if changed.rowcount == 0:
                await conn.execute(
                    insert_new(conn, sweep_state).values(name=name, value=value, updated_at=now)
                )

    async def watch_new(
        self, order_ids: Sequence[str], *, now: datetime, lease_until: datetime
    ) -> list[Claim]:
        """Watch, by rule, those of ``order_ids`` never watched before, claimed already (a
        sweep's item is their first snapshot); their claims.

        An order removed by hand, or retired after its final status, is not watched again.
        """
        added: list[str] = []
        async with self._engine.begin() as conn:
            for chunk in chunks(list(dict.fromkeys(order_ids))):
                known = set(
                    (
                        await conn.execute(select(w.c.order_id).where(w.c.order_id.in_(chunk)))
                    ).scalars()
                )
                fresh = [order_id for order_id in chunk if order_id not in known]
                if fresh:  # RETURNING says which were new (another daemon may insert too)
                    inserted = await conn.execute(
                        insert_new(conn, w)
                        .values(
                            [
                                {
                                    "order_id": order_id,
                                    "active": True,
                                    "source": "rule",
                                    "added_at": now,
                                    "next_poll_at": now,
                                    "leased_until": lease_until,
                                    "leased_by": self.owner,
                                    "consecutive_failures": 0,
                                }
                                for order_id in fresh
                            ]
                        )
                        .returning(w.c.order_id)
                    )
                    added += inserted.scalars()
        return [
            Claim(
                order_id=order_id,
                status=None,
                fingerprint=None,
                final_since=None,
                consecutive_failures=0,
                due_at=now,
            )
            for order_id in added
        ]

    async def pass_done(self, since: datetime) -> bool:
        """Whether every active order was polled by the schedule (answered or not) at
        ``since`` or later: a full pass."""
        behind = (
            select(w.c.order_id)
            .where(w.c.active, or_(w.c.passed_at.is_(None), w.c.passed_at < since))
            .limit(1)
        )
        async with self._engine.connect() as conn:
            return (await conn.scalar(behind)) is None

    async def hurry(self, *, now: datetime, beyond: datetime) -> int:
        """Make the active orders due later than ``beyond`` due ``now``: full passes go back to
        the per-status intervals. How many were."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(w).where(w.c.active, w.c.next_poll_at > beyond).values(next_poll_at=now)
            )
        return int(result.rowcount)
