"""Long-running worker tasks that outlive their own bugs, and leases kept alive while held."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any, Generic, Protocol, TypeVar

import structlog

from tracker.outage import Outage

log = structlog.get_logger("tracker.supervision")

K = TypeVar("K")
C = TypeVar("C")
K_contra = TypeVar("K_contra", contravariant=True)
#: Seconds between two restarts of a worker body that keeps failing: its log stays readable
#: and the loop stays free, and a second is short next to any poll or delivery interval.
RESTART_PAUSE = 1.0


class Extend(Protocol[K_contra]):
    """Pushes the leases of the given claims to ``lease_until`` (a store method)."""

    async def __call__(self, keys: Sequence[K_contra], /, *, lease_until: datetime) -> None:
        """Extend the leases that are still taken."""


async def supervised(name: str, body: Callable[[], Awaitable[None]]) -> None:
    """Run ``body`` until it returns; an unexpected exception is logged and ``body`` restarts.

    A worker that died silently would leave the daemon running with fewer workers than
    configured, looking ready and doing less (or nothing). Cancellation still ends it.
    """
    while True:
        try:
            await body()
        except Exception:
            log.exception("worker_crashed", worker=name)
            await asyncio.sleep(RESTART_PAUSE)
        else:
            return


class HeldClaims(Generic[K]):
    """The claims this process holds, from claim until recorded, with their leases kept alive.

    A claim's lease is what hides its order (or delivery) from every other claim. A claim
    can wait longer than any fixed lease (a long ``Retry-After``, a pause after refused
    credentials, a slow receiver), so :meth:`renew` pushes the lease of every held claim
    ahead again; it runs every third of a lease, so a held claim never expires.
    """

    def __init__(
        self,
        *,
        name: str,
        lease: timedelta,
        clock: Callable[[], datetime],
        extend: Extend[K],
        outage: Outage | None = None,
    ) -> None:
        self._name = name
        self._outage = outage
        self._lease = lease
        self._clock = clock
        self._extend = extend
        self._held: set[K] = set()

    @property
    def lease(self) -> timedelta:
        """How long a claim stays hidden without renewal."""
        return self._lease

    def __len__(self) -> int:
        return len(self._held)

    def lease_until(self) -> datetime:
        """The end of a lease taken now."""
        return self._clock() + self._lease

    def take(self, keys: Collection[K]) -> None:
        """Claims were taken: hold them until :meth:`drop`."""
        self._held.update(keys)

    def take_fresh(self, claims: Iterable[C], key: Callable[[C], K]) -> list[C]:
        """Hold the claims not held yet and return them.

        A claim still held here (its renewal failed, another claim took it again) is left out,
        so that it is never worked twice at once.
        """
        fresh = [claim for claim in claims if key(claim) not in self._held]
        self._held.update(key(claim) for claim in fresh)
        return fresh

    def drop(self, keys: Collection[K]) -> None:
        """Claims were recorded or handed back: stop renewing them."""
        self._held.difference_update(keys)

    async def renew(self) -> None:
        """Push every held lease one lease ahead of now."""
        if not self._held:
            return
        if self._outage is not None and not self._outage.due():
            return
        try:
            await self._extend(list(self._held), lease_until=self.lease_until())
        except Exception as exc:
            if self._outage is None or not self._outage.failed(exc, doing="renewing leases"):
                log.exception("lease_renewal_failed", claims=self._name, held=len(self._held))


@asynccontextmanager
async def renewing(claims: HeldClaims[Any]) -> AsyncIterator[None]:
    """Renew ``claims`` every third of their lease while the block runs."""

    async def renew() -> None:
        while True:
            await asyncio.sleep(claims.lease.total_seconds() / 3)
            await claims.renew()

    task = asyncio.create_task(renew())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def guarded(
    outage: Outage,
    job: Callable[[], Awaitable[object]],
    *,
    doing: str,
    failed: Callable[[Exception], None],
) -> None:
    """Run one round of a periodic ``job`` that waits out a database outage.

    While the database is gone the round is skipped until the outage's backoff allows a retry;
    a failure that says the database is unreachable is the outage's to tell (once), any other
    is handed to ``failed`` (called inside the ``except``, so it may log the traceback); a round
    that ends well ends the outage.
    """
    if not outage.due():
        return
    try:
        await job()
    except Exception as exc:
        if not outage.failed(exc, doing=doing):
            failed(exc)
    else:
        outage.succeeded()
