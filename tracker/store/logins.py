"""The support pages' logins: which session cookies are honoured, across processes."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import delete, insert, select

from tracker.store.tables import sessions

if TYPE_CHECKING:
    from tracker.store.sql import Database

#: Expired rows removed per login, at most: pruning never turns one login into a long write.
PRUNE = 100


class Logins:
    """One row per session ``/login`` issued, keyed by a digest of the cookie's random id."""

    def __init__(self, engine: Database) -> None:
        self._engine = engine

    async def open(self, *, digest: str, user: str, expires: datetime, now: datetime) -> None:
        """Remember a new session of ``user`` until ``expires``; prune some expired ones."""
        old = select(sessions.c.id).where(sessions.c.expires_at <= now).limit(PRUNE)
        async with self._engine.begin() as conn:
            await conn.execute(delete(sessions).where(sessions.c.id.in_(old)))
            await conn.execute(
                insert(sessions).values(id=digest, user_name=user, expires_at=expires)
            )

    async def holder(self, digest: str, now: datetime) -> str | None:
        """The user whose unexpired session ``digest`` is, or ``None``."""
        query = select(sessions.c.user_name).where(
            sessions.c.id == digest, sessions.c.expires_at > now
        )
        async with self._engine.connect() as conn:
            return (await conn.execute(query)).scalar()

    async def end(self, digest: str) -> None:
        """End one session: every copy of its cookie is refused from now on."""
        async with self._engine.begin() as conn:
            await conn.execute(delete(sessions).where(sessions.c.id == digest))

    async def end_users(self, names: Iterable[str]) -> int:
        """End every session of these users; how many there were."""
        wanted = list(names)
        if not wanted:
            return 0
        async with self._engine.begin() as conn:
            result = await conn.execute(delete(sessions).where(sessions.c.user_name.in_(wanted)))
        return result.rowcount
