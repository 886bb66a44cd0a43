"""A database that is gone for a while: told once, retried with backoff, resumed without loss."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

import structlog

from tracker.errors import clip, first_line
from tracker.store import unreachable

__all__ = ["FIRST", "LONGEST", "Outage"]

log = structlog.get_logger("tracker.outage")

T = TypeVar("T")
#: Seconds before the first retry; each failed retry doubles it, up to :data:`LONGEST`.
FIRST = 1.0
#: The longest wait between two retries: short next to the stale-daemon time, so that a daemon
#: is back within a few heartbeats of the database.
LONGEST = 10.0


class Outage:
    """Whether the database is reachable, as every part of one daemon sees it.

    The first failure that says the database is unreachable logs ``database_unavailable`` once
    for the whole outage, naming where the database is (never its password); until it
    returns, callers retry no sooner than the backoff allows (1 s, doubling, at most 10 s),
    and the first success logs ``database_available`` with how long it was gone.
    """

    def __init__(self, where: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._where = where
        self._clock = clock
        self._since: float | None = None
        self._wait = FIRST
        self._retry_at = 0.0
        self._ended_at: float | None = None

    @property
    def down(self) -> bool:
        """Whether an outage is going on."""
        return self._since is not None

    def describe(self) -> str | None:
        """Why the daemon is unready, while the database is gone."""
        if self._since is None:
            return None
        return f"the database ({self._where}) has been unreachable for {self._gone_for():.0f} s"

    def calm_for(self, period: timedelta) -> bool:
        """Whether the database has been reachable for at least ``period``, as far as known."""
        if self._since is not None:
            return False
        return self._ended_at is None or self._clock() - self._ended_at >= period.total_seconds()

    def due(self) -> bool:
        """Whether a caller may try the database now (always, unless in a backoff)."""
        return self._since is None or self._clock() >= self._retry_at

    def failed(self, exc: BaseException, *, doing: str) -> bool:
        """Take note of a failure; ``True`` when it is an outage (logged once per outage)."""
        if not unreachable(exc):
            return False
        now = self._clock()
        if self._since is None:
            self._since, self._wait = now, FIRST
            log.error(
                "database_unavailable",
                database=self._where,
                doing=doing,
                error=clip(first_line(exc)),
                retry_in=self._wait,
            )
        elif now >= self._retry_at:  # a retry failed: the next waits longer
            self._wait = min(self._wait * 2, LONGEST)
        self._retry_at = now + self._wait
        return True

    def succeeded(self) -> None:
        """The database answered: an outage, if any, is over."""
        if self._since is not None:
            log.info("database_available", database=self._where, down_for=self._gone_for())
            self._since, self._ended_at = None, self._clock()

    async def retrying(
        self, write: Callable[[], Awaitable[T]], *, doing: str, stop: asyncio.Event
    ) -> T:
        """Run ``write`` until it succeeds, waiting out the backoff while the database is gone.

        Any other failure, or one met once ``stop`` is set, is raised: what was not written is
        then done again after its lease, as after a crash.
        """
        while True:
            try:
                result = await write()
            except Exception as exc:
                if not self.failed(exc, doing=doing) or stop.is_set():
                    raise
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(self._retry_at - self._clock(), 0))
                continue
            self.succeeded()
            return result

    def _gone_for(self) -> float:
        return round(self._clock() - (self._since or self._clock()), 1)
