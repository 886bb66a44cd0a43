"""Fleet membership: joining, heartbeats, budget and pause sharing, takeover of gone daemons."""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta

import structlog

from tracker.clock import Clock
from tracker.errors import ConfigError, clip
from tracker.model import STALE_AFTER, DaemonRecord
from tracker.outage import Outage
from tracker.pacing import Pacer
from tracker.store import Store
from tracker.supervision import guarded

log = structlog.get_logger("tracker.fleet")

#: A shared pause is written again only when it ends this much later than the one written.
PAUSE_SLACK = timedelta(seconds=0.5)


def identity(daemon_id: str, now: datetime) -> DaemonRecord:
    """This process as a daemon: its id, the host, the pid and the tracker's version."""
    from importlib import metadata  # noqa: PLC0415 - read once, when a daemon starts

    return DaemonRecord(
        id=daemon_id,
        host=socket.gethostname(),
        pid=os.getpid(),
        version=metadata.version("meter-order-tracker"),
        started_at=now,
        heartbeat_at=now,
    )


def gone_from_this_host(other: DaemonRecord) -> bool:
    """Whether ``other`` ran on this host in a process that no longer exists (kill -9).

    Another process can reuse a dead daemon's pid; then the heartbeat's age decides.
    """
    if other.host != socket.gethostname():
        return False
    if other.pid == os.getpid():  # our own pid: a container restarted with the same pid 1
        return True
    try:
        os.kill(other.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, under another user
        return False
    return False


class Fleet:
    """This daemon among the others on one database: it joins, beats, shares the budget and
    the pauses, takes over the claims of the gone, and leaves.

    The daemon's id is its store's claim owner: the leases it holds carry the same name.
    """

    def __init__(self, *, store: Store, pacer: Pacer, clock: Clock, outage: Outage) -> None:
        self._store = store
        self._pacer = pacer
        self._clock = clock
        self._outage = outage
        self._me: DaemonRecord | None = None
        #: Live daemons, and this one's place among them by start (0: the oldest).
        self._share = (1, 0)
        self._shared_pause: datetime | None = None

    @property
    def me(self) -> DaemonRecord:
        """This daemon's record (once joined)."""
        assert self._me is not None, "join first"  # noqa: S101 - a wiring mistake
        return self._me

    @property
    def members(self) -> int:
        """How many daemons live, as far as the last heartbeat knew."""
        return self._share[0]

    @property
    def oldest(self) -> bool:
        """Whether this daemon is the longest running of the live ones."""
        return self._share[1] == 0

    async def join(self) -> DaemonRecord:
        """Register this daemon; alone, it takes over every lease a crashed one left behind.

        Refuses (:class:`ConfigError`) on SQLite while another daemon runs there.
        """
        me = identity(self._store.owner, self._clock())
        stale_before = me.started_at - STALE_AFTER
        registered = await self._store.fleet.daemons(stale_before=stale_before)
        await self._store.fleet.forget([d.id for d in registered if gone_from_this_host(d)])
        joined = await self._store.fleet.join(me, stale_before=stale_before)
        if not joined.joined:
            other = joined.others[0]
            raise ConfigError(
                f"another daemon runs on this SQLite database (host {other.host}, pid "
                f"{other.pid}, since {other.started_at:%Y-%m-%d %H:%M:%S} UTC); stop it first, "
                "or use PostgreSQL to run several"
            )
        # With others alive, their claims are live: an abandoned one is taken when its lease ends.
        if not joined.others and (taken_over := await self._store.polls.release_all()):
            log.info("leases_taken_over", orders=taken_over)
        self._share_budget(1 + len(joined.others), rank=len(joined.others))
        self._me = me
        return me

    async def leave(self) -> None:
        """Leave the registry; while the database is gone its row goes stale instead, and the
        others (or its next start) remove it."""
        try:
            await self._store.fleet.forget([self.me.id])
        except Exception as exc:
            if not self._outage.failed(exc, doing="leaving"):
                raise

    def _share_budget(self, members: int, rank: int) -> None:
        """Poll within this daemon's share of the budget: live daemons split it in whole
        requests, the oldest ``budget mod members`` of them one more each (``rank``: this
        daemon's place among the live ones by start)."""
        if (members, rank) != self._share:
            self._share = (members, rank)
            self._pacer.share(members, rank)
            log.info("budget_shared", daemons=members, rate=round(self._pacer.rate, 3))

    async def beat(self) -> None:
        """Tell the others this daemon lives, and take over the claims of those that are gone.

        A daemon is gone when its pid no longer runs on this host, or when its heartbeat is
        stale. Right after an outage of the database every heartbeat is stale, so for one
        stale period only dead pids count.
        """
        await guarded(self._outage, self._beat, doing="heartbeat", failed=self._beat_failed)

    def _beat_failed(self, exc: Exception) -> None:
        log.warning("heartbeat_failed", daemon=self.me.id, error=clip(str(exc)))

    async def _beat(self) -> None:
        me, now = self.me, self._clock()
        if not await self._store.fleet.heartbeat(me, now=now):
            log.warning("daemon_registered_again", daemon=me.id)
        if not self._store.fleet.shared:
            return
        registered = await self._store.fleet.daemons()  # oldest first
        stale = now - STALE_AFTER if self._outage.calm_for(STALE_AFTER) else None
        gone = [
            d
            for d in registered
            if d.id != me.id
            and (gone_from_this_host(d) or (stale is not None and d.heartbeat_at < stale))
        ]
        if gone:
            await self._take_over(gone)
        live = [d.id for d in registered if d not in gone]
        rank = live.index(me.id) if me.id in live else len(live)
        self._share_budget(max(len(live), rank + 1), rank)

    async def _take_over(self, gone: list[DaemonRecord]) -> None:
        """Release the claims of gone daemons: the next tick takes their due orders."""
        taken = await self._store.fleet.forget([d.id for d in gone])
        for daemon in gone:
            log.warning(
                "daemon_gone",
                daemon=daemon.id,
                host=daemon.host,
                pid=daemon.pid,
                heartbeat_at=daemon.heartbeat_at.isoformat(),
            )
        if taken.orders or taken.deliveries:  # another live daemon may have been first
            log.info("claims_taken_over", orders=taken.orders, deliveries=taken.deliveries)

    async def share_pause(self) -> None:
        """A 429 (or refused credentials) met by one daemon pauses all, within one tick.

        This daemon's pause is written to the database; a longer one written by another is
        taken over. Clocks of different hosts should agree to within a fraction of a second.
        """
        await guarded(
            self._outage,
            self._share_pause,
            doing="sharing a pause",
            failed=lambda exc: log.warning("pause_sharing_failed", error=clip(str(exc))),
        )

    async def _share_pause(self) -> None:
        now = self._clock()
        mine = self._pacer.paused_for()
        if mine > 0:
            until = now + timedelta(seconds=mine)
            if self._shared_pause is None or until > self._shared_pause + PAUSE_SLACK:
                await self._store.fleet.pause_all(until)
                self._shared_pause = until
        theirs = await self._store.fleet.paused_until()
        now = self._clock()  # after the read: a slow database must not lengthen the pause
        if theirs is not None and theirs > now + PAUSE_SLACK:
            if self._shared_pause is None or theirs > self._shared_pause:
                log.info("pause_shared", until=theirs.isoformat())
                self._shared_pause = theirs
            self._pacer.pause((theirs - now).total_seconds())
