"""The daemon: an APScheduler tick claims due orders; workers poll them; a writer records."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import os
import signal
import socket
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from apscheduler.job import Job
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from tracker import alerts
from tracker.batching import BatchWriter, WriteFailures
from tracker.config import Settings
from tracker.digest import raise_due_digests
from tracker.errors import ConfigError, UpstreamError, clip, first_line
from tracker.model import HEARTBEAT, STALE_AFTER, Claim, DaemonRecord, Transition
from tracker.outage import Outage, unreachable
from tracker.outbox import Dispatcher
from tracker.poller import INTERNAL, LIST_REFUSED, Clock, Poller, log_transitions
from tracker.sinks.registry import Sink
from tracker.store import PollOutcome, Store
from tracker.supervision import HeldClaims, renewing, supervised
from tracker.sweep import Batch, SweepPlanner
from tracker.telemetry import SILENT, Telemetry
from tracker.upstream import ListPage

log = structlog.get_logger("tracker.daemon")

TransitionListener = Callable[[Transition], None]
#: A shared pause is written again only when it ends this much later than the one written.
PAUSE_SLACK = timedelta(seconds=0.5)
#: Seconds without a tick after which the daemon is unready: ten missed ticks of one second
#: mean a claim is stuck (the database locked or gone), not that a tick ran late.
TICK_STALE = 10.0
#: Seconds between two stuck checks: a stay is reported within this of crossing its threshold.
STUCK_CHECK = 10.0
#: Stays reported per round: one query per status, one transaction in all.
STUCK_BATCH = 1000
#: The most a sweep refreshes an order ahead of its due time.
LOOKAHEAD_CAP = timedelta(minutes=5)
#: Due orders of unknown customer that make reading the organisation's whole list worth it.
DISCOVERY_MIN = 200
#: Pages a discovery sweep reads between two looks at its yield.
DISCOVERY_TRIAL = 10
#: After a discovery sweep found too few watched orders per page, polls by id for this long.
DISCOVERY_PAUSE = timedelta(hours=1)
#: After a discovery sweep read the whole list, the next one waits this long: watched orders
#: it did not show (unknown to the upstream, or of another organisation) are polled by id.
DISCOVERY_AGAIN = timedelta(minutes=10)
#: After a discovery sweep failed on the upstream, the next one waits this long.
DISCOVERY_RETRY = timedelta(minutes=1)
#: Seconds between two looks for a due digest (one key lookup per digest sink).
DIGEST_CHECK = 60.0
#: Writes of results failing in a row that make the daemon unready. One order's result that
#: the database refuses fails twice (in its batch, then alone) before its failure or the
#: others land; a third failure with nothing landing in between means no result can be
#: recorded. So does an order whose failure, written instead of its result, fails too.
UNRECORDABLE_AFTER = 3


def lookahead(settings: Settings | None) -> timedelta:
    """How early a sweep may refresh an order to fill its page: within the jitter, as a poll
    may fall, and at most :data:`LOOKAHEAD_CAP` (a day's interval has a jitter of hours)."""
    if settings is None:
        return timedelta(0)
    return min(settings.polling.policy().jitter, LOOKAHEAD_CAP)


def _order_id(claim: Claim) -> str:
    return claim.order_id


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


class Daemon:
    """Polls every watched order on its schedule until asked to stop.

    The database is the schedule: each tick claims the due orders (``next_poll_at``) that fit
    into the in-memory queue, hiding them behind a lease so a later tick does not take them
    again. The lease is renewed for as long as the claim is queued, polled or waiting to be
    written, so no pause outlives it. Workers poll within the upstream's pace and hand
    outcomes to one writer, which records them in batches. A crash loses at most unwritten
    outcomes; their leases expire and the orders are polled again, so no transition is lost
    or stored twice. Workers are supervised: one whose loop fails is logged and restarted.
    """

    def __init__(
        self,
        *,
        store: Store,
        poller: Poller,
        clock: Clock,
        workers: int,
        capacity: int,
        lease: timedelta,
        stop_grace: float,
        stall_after: float,
        tick: float = 1.0,
        on_transition: TransitionListener | None = None,
        dispatcher: Dispatcher | None = None,
        outage: Outage | None = None,
        settings: Settings | None = None,
        telemetry: Telemetry = SILENT,
    ) -> None:
        self._store = store
        self._telemetry = telemetry
        self._outage = outage or Outage(store.where)
        #: The configuration in force: alerts and digests read it. None: neither.
        self._settings = settings
        self._stuck: dict[str, timedelta] = dict(settings.alerts.stuck) if settings else {}
        self._routes: Mapping[str, Sequence[str]] = settings.routes() if settings else {}
        self._poller = poller
        self._clock = clock
        self._workers = workers
        self._capacity = capacity
        self._claims: HeldClaims[str] = HeldClaims(
            name="orders",
            lease=lease,
            clock=clock,
            extend=store.extend_leases,
            outage=self._outage,
        )
        self._stop_grace = stop_grace
        self._stall_after = stall_after
        self._tick_seconds = tick
        self._on_transition = on_transition
        #: Work for the pollers: an order to poll by id, or a batch to sweep.
        #: Unbounded: what is claimed is bounded by :meth:`_depth` (a batch counts as one).
        self._queue: asyncio.Queue[Claim | Batch | None] = asyncio.Queue()
        self._planner = SweepPlanner(mode=settings.polling.sweep if settings else "ids")
        self._discovery: asyncio.Task[None] | None = None
        #: Whether the last tick found as many due orders of unknown customer as it could take
        #: (at the start: maybe); only then is the count that may start a discovery read.
        self._unkeyed_backlog = True
        self._discover_after = datetime.min.replace(tzinfo=UTC)
        #: How early a sweep may refresh an order (see :func:`lookahead`).
        self._lookahead = lookahead(settings)
        #: Claims taken ahead of their due time, each with the timer that queues it then.
        self._timed: dict[str, tuple[Claim, asyncio.TimerHandle]] = {}
        # A batch the database refused (not one it could not be reached for) is written again
        # an order at a time: one order's result it refuses must not drop the others'.
        self._writer: BatchWriter[PollOutcome] = BatchWriter(
            self._record, name="polls", split=lambda exc: not unreachable(exc)
        )
        self._write_failures = WriteFailures(limit=UNRECORDABLE_AFTER)
        self._dispatcher = dispatcher
        self._dispatch_job: Job | None = None
        self._in_flight: set[str] = set()
        self._stopping = False
        self._stop = asyncio.Event()
        self._progress_at = time.monotonic()
        self._ticked_at = 0.0
        self._tick_error: str | None = None
        self._stalled: str | None = None
        self._tick_idle = asyncio.Event()
        self._tick_idle.set()
        self._dispatch_idle = asyncio.Event()
        self._dispatch_idle.set()
        self._dispatch_again = False
        self._more_due = False
        self._job: Job | None = None
        self._members = 1
        self._share = (1, 0)
        self._shared_pause: datetime | None = None
        self.polls = 0
        #: List pages read by sweeps.
        self.pages = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then finish or hand back what is in flight.

        Refuses to start (:class:`ConfigError`) on SQLite while another daemon runs there.
        """
        me = await self._join()
        try:
            await self._run(me, stop)
        finally:
            try:
                await self._store.forget_daemons([me.id])
            except Exception as exc:
                if not self._outage.failed(exc, doing="leaving"):
                    raise
                # Its row goes stale and the others (or its next start) remove it.

    async def _join(self) -> DaemonRecord:
        """Register this daemon; alone, it takes over every lease a crashed one left behind."""
        # The daemon's id is its store's claim owner: the leases it holds carry the same name.
        me = identity(self._store.owner, self._clock())
        stale_before = me.started_at - STALE_AFTER
        registered = await self._store.daemons(stale_before=stale_before)
        await self._store.forget_daemons([d.id for d in registered if gone_from_this_host(d)])
        joined = await self._store.join(me, stale_before=stale_before)
        if not joined.joined:
            other = joined.others[0]
            raise ConfigError(
                f"another daemon runs on this SQLite database (host {other.host}, pid "
                f"{other.pid}, since {other.started_at:%Y-%m-%d %H:%M:%S} UTC); stop it first, "
                "or use PostgreSQL to run several"
            )
        # With others alive, their claims are live: an abandoned one is taken when its lease ends.
        if not joined.others and (taken_over := await self._store.release_all()):
            log.info("leases_taken_over", orders=taken_over)
        self._share_budget(1 + len(joined.others), rank=len(joined.others))
        return me

    def _share_budget(self, members: int, rank: int) -> None:
        """Poll within this daemon's share of the budget: live daemons split it in whole
        requests, the oldest ``budget mod members`` of them one more each (``rank``: this
        daemon's place among the live ones by start)."""
        if (members, rank) != self._share:
            self._share = (members, rank)
            self._members = members
            pacer = self._poller.pacer
            pacer.share(members, rank)
            log.info("budget_shared", daemons=members, rate=round(pacer.rate, 3))

    async def _beat(self, me: DaemonRecord) -> None:
        """Tell the others this daemon lives, and take over the claims of those that are gone.

        A daemon is gone when its pid no longer runs on this host, or when its heartbeat is
        stale. Right after an outage of the database every heartbeat is stale, so for one
        stale period only dead pids count.
        """
        if not self._outage.due():
            return
        try:
            now = self._clock()
            if not await self._store.heartbeat(me, now=now):
                log.warning("daemon_registered_again", daemon=me.id)
            if self._store.shared:
                registered = await self._store.daemons()  # oldest first
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
            self._outage.succeeded()
        except Exception as exc:
            if not self._outage.failed(exc, doing="heartbeat"):
                log.warning("heartbeat_failed", daemon=me.id, error=clip(str(exc)))

    async def _take_over(self, gone: list[DaemonRecord]) -> None:
        """Release the claims of gone daemons: the next tick takes their due orders."""
        taken = await self._store.forget_daemons([d.id for d in gone])
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

    async def _share_pause(self) -> None:
        """A 429 (or refused credentials) met by one daemon pauses all, within one tick.

        This daemon's pause is written to the database; a longer one written by another is
        taken over. Clocks of different hosts should agree to within a fraction of a second.
        """
        if not self._outage.due():
            return
        try:
            now = self._clock()
            mine = self._poller.pacer.paused_for()
            if mine > 0:
                until = now + timedelta(seconds=mine)
                if self._shared_pause is None or until > self._shared_pause + PAUSE_SLACK:
                    await self._store.pause_all(until)
                    self._shared_pause = until
            theirs = await self._store.paused_until()
            if theirs is not None and theirs > now + PAUSE_SLACK:
                if self._shared_pause is None or theirs > self._shared_pause:
                    log.info("pause_shared", until=theirs.isoformat())
                    self._shared_pause = theirs
                self._poller.pacer.pause((theirs - now).total_seconds())
            self._outage.succeeded()
        except Exception as exc:
            if not self._outage.failed(exc, doing="sharing a pause"):
                log.warning("pause_sharing_failed", error=clip(str(exc)))

    async def _run(self, me: DaemonRecord, stop: asyncio.Event) -> None:
        scheduler = AsyncIOScheduler(timezone=UTC)
        # Beside live daemons, polling starts once each has beaten and taken its smaller share.
        settle = HEARTBEAT.total_seconds() + 1 if self._members > 1 else 0.0
        self._job = self._every(scheduler, self._tick, self._tick_seconds, start_in=settle)
        self._every(scheduler, self._watch_progress, self._tick_seconds)
        self._every(scheduler, functools.partial(self._beat, me), HEARTBEAT.total_seconds())
        if self._store.shared:  # on SQLite this daemon is the only one
            self._every(scheduler, self._share_pause, self._tick_seconds)
        self._every(scheduler, self._check_stuck, STUCK_CHECK)
        self._every(scheduler, self._send_digests, DIGEST_CHECK)
        async with contextlib.AsyncExitStack() as leases:
            await leases.enter_async_context(renewing(self._claims))
            if self._dispatcher is not None:
                await leases.enter_async_context(renewing(self._dispatcher.claims))
                self._dispatcher.start()
                self._dispatch_job = self._every(scheduler, self._dispatch, self._tick_seconds)
            workers = [
                asyncio.create_task(supervised(f"poller-{number}", self._work))
                for number in range(self._workers)
            ]
            self._writer.start()
            scheduler.start()
            log.info(
                "daemon_started",
                daemon=me.id,
                host=me.host,
                pid=me.pid,
                workers=self._workers,
                capacity=self._capacity,
            )
            try:
                await stop.wait()
            finally:
                self._stopping = True
                self._stop.set()
                scheduler.pause()
                await self._tick_idle.wait()  # a claim in progress lands before hand-back
                await self._dispatch_idle.wait()
                scheduler.shutdown(wait=False)
                await self._shut_down(workers)
        log.info("daemon_stopped", polls=self.polls)

    def readiness(self) -> str | None:
        """``None`` while polling makes progress; else why not (for ``/readyz`` and the log).

        Unready: the last tick failed or is long past (a claim hanging on a locked database), or
        orders wait (queued, polled or unwritten) and no poll has been recorded for
        ``stall_after`` seconds, as when every worker hangs, every request is paused or every
        write fails; or the last writes of results all failed (see :data:`UNRECORDABLE_AFTER`).
        """
        if (outage := self._outage.describe()) is not None:
            return outage
        if (unrecordable := self._write_failures.describe()) is not None:
            return unrecordable
        if self._tick_error is not None:
            return f"claiming due orders failed: {self._tick_error}"
        since_tick = time.monotonic() - self._ticked_at
        if self._ticked_at and since_tick > TICK_STALE:
            return f"the scheduler has not ticked for {since_tick:.0f} s"
        waiting = len(self._claims)
        idle = time.monotonic() - self._progress_at
        if waiting and idle > self._stall_after:
            return f"no poll recorded for {idle:.0f} s while {waiting} claimed orders wait"
        return None

    def _every(
        self,
        scheduler: AsyncIOScheduler,
        job: Callable[[], Coroutine[Any, Any, None]],
        seconds: float,
        *,
        start_in: float = 0.0,
    ) -> Job:
        """One APScheduler job running ``job`` now and every ``seconds``, never twice at once."""
        return scheduler.add_job(
            job,
            "interval",
            seconds=seconds,
            next_run_time=datetime.now(UTC) + timedelta(seconds=start_in),
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )

    async def _tick(self) -> None:
        if self._stopping:
            return
        self._ticked_at = time.monotonic()
        if not self._outage.due():
            return
        self._tick_idle.clear()
        try:
            await self._claim_due()
            self._tick_error = None
            self._outage.succeeded()
        except Exception as exc:
            if not self._outage.failed(exc, doing="claiming due orders"):
                self._tick_error = f"{type(exc).__name__}: {exc}".splitlines()[0]
                log.exception("tick_failed")
        finally:
            self._tick_idle.set()

    def _depth(self) -> int:
        """How many claims to queue: about two seconds of this daemon's share, so that a
        daemon that dies holds little, and what it held waits little behind the others'."""
        return min(self._capacity, 2 * math.ceil(self._poller.pacer.rate) + self._workers)

    async def _claim_due(self) -> None:
        """Claim the orders due by the next tick; each is queued at its own due time.

        So a poll starts within a fraction of a tick of when it is due, not up to a whole tick
        late, and the orders due within one second are spread over it. While list sweeps are
        on, the due orders whose customer is known go to sweeps, a page's worth per request
        (see :meth:`_claim_keyed`).
        """
        room = self._depth() - self._queue.qsize() - len(self._timed)
        if room <= 0:
            return
        now = self._clock()
        soon = now + timedelta(seconds=self._tick_seconds)
        lease_until = self._claims.lease_until()
        if not self._planner.sweeps:
            claims = await self._store.claim_due(
                now=now, limit=room, lease_until=lease_until, until=soon
            )
            self._more_due = len(claims) == room
            self._queue_by_id(self._claims.take_fresh(claims, _order_id), now)
            return
        keyed = await self._claim_keyed(now, room)
        unkeyed: list[Claim] = []
        if not await self._discovering(now):
            unkeyed = await self._store.claim_due(
                now=now, limit=room, lease_until=lease_until, until=soon, keyed=False
            )
        # A full claim of unknown customers is a backlog: worth a look for a discovery sweep.
        self._unkeyed_backlog = len(unkeyed) == room
        self._more_due = (
            self._unkeyed_backlog or len(keyed) >= room * self._planner.values_per_page()
        )
        batches, by_id = self._planner.plan(self._claims.take_fresh(keyed + unkeyed, _order_id))
        for batch in batches:
            self._queue.put_nowait(batch)
        self._queue_by_id(by_id, now)

    async def _claim_keyed(self, now: datetime, room: int) -> list[Claim]:
        """The due orders a sweep can find: up to ``room`` pages' worth, the last page filled
        with orders due within the jitter. Those are refreshed early by less than their
        jitter, and the pages of a pass hold a hundred orders each, not the few due in one
        second."""
        per_page = self._planner.values_per_page()
        lease_until = self._claims.lease_until()
        keyed = await self._store.claim_due(
            now=now,
            limit=room * per_page,
            lease_until=lease_until,
            until=now + timedelta(seconds=self._tick_seconds),
            keyed=True,
        )
        if keyed and (short := -len(keyed) % per_page):
            keyed += await self._store.claim_due(
                now=now,
                limit=short,
                lease_until=lease_until,
                until=now + self._lookahead,
                keyed=True,
            )
        return keyed

    async def _discovering(self, now: datetime) -> bool:
        """Whether a discovery sweep runs (started now if it is worth it): then polls by id
        leave the orders whose customer is not known to it.

        Orders never answered cannot be swept by customer. When hundreds of them are due
        (after watching many at once), the organisation's whole list is read instead, newest
        first: a page of 100 can answer for up to 100 of them. One daemon of a fleet does it
        (the oldest); the others poll by id meanwhile, and a lease keeps each order to one.
        """
        if self._discovery is not None and not self._discovery.done():
            return True
        planner = self._planner
        if (
            planner.mode == "ids"
            or not planner.listing
            or self._share[1] != 0
            or now < self._discover_after
            or not self._unkeyed_backlog
            or await self._store.unkeyed_due(now=now, limit=DISCOVERY_MIN) < DISCOVERY_MIN
        ):
            return False
        self._discovery = asyncio.create_task(self._discover())
        return True

    async def _discover(self) -> None:
        """Read the organisation's list, applying each item whose order is watched and due
        (within the jitter) as a poll; stop early when pages hold too few watched orders."""
        read = found = 0
        cursor: str | None = None
        cursors: set[str] = set()
        log.info("discovery_started")
        try:
            while not self._stopping:
                page = await self._poller.page({}, cursor)
                read += 1
                found += await self._apply_listed(page)
                now = self._clock()
                if page.next_page is None:  # read to the end: what it did not show is polled by id
                    self._discover_after = now + DISCOVERY_AGAIN
                    break
                if page.next_page in cursors:
                    log.warning(
                        "list_page_malformed",
                        reason=f"list page {read} repeats an earlier cursor",
                        request_id=page.request_id,
                    )
                    break
                if read % DISCOVERY_TRIAL == 0:
                    if found < read:  # less than one watched order per page: ids cost less
                        self._discover_after = now + DISCOVERY_PAUSE
                        break
                    if not await self._store.unkeyed_due(now=now, limit=1):
                        break
                cursors.add(cursor := page.next_page)
        except LIST_REFUSED as exc:
            log.warning("list_unavailable", reason=exc.reason, request_id=exc.request_id)
            self._planner.unavailable()
        except UpstreamError as exc:
            log.warning("discovery_failed", reason=exc.reason, request_id=exc.request_id)
            self._discover_after = self._clock() + DISCOVERY_RETRY
        except Exception:
            log.exception("discovery_crashed")
            self._discover_after = self._clock() + DISCOVERY_PAUSE
        log.info("discovery_ended", pages=read, found=found)

    async def _apply_listed(self, page: ListPage) -> int:
        """Apply the page's items whose orders are watched and due; how many there were."""
        listed = {order.id: order for order in page.items}
        now = self._clock()
        claims = await self._store.claim_listed(
            list(listed),
            now=now,
            until=now + self._lookahead,
            lease_until=self._claims.lease_until(),
        )
        for claim in self._claims.take_fresh(claims, _order_id):
            outcome = self._poller.apply(claim, listed[claim.order_id])
            self._poller.count(outcome)
            self._writer.put(outcome)
            self.polls += 1
        self.pages += 1
        return len(claims)

    def _queue_by_id(self, claims: list[Claim], now: datetime) -> None:
        """Queue each claim for a poll by id at its due time."""
        loop = asyncio.get_running_loop()
        for claim in claims:
            wait = (claim.due_at - now).total_seconds() if claim.due_at is not None else 0.0
            if wait > 0:
                self._timed[claim.order_id] = (
                    claim,
                    loop.call_later(wait, self._queue_timed, claim.order_id),
                )
            else:
                self._queue.put_nowait(claim)

    def _queue_timed(self, order_id: str) -> None:
        """An order claimed ahead of its due time is due now: queue it for a worker (once the
        daemon stops, it stays to be handed back)."""
        if not self._stopping and (timed := self._timed.pop(order_id, None)) is not None:
            self._queue.put_nowait(timed[0])

    async def _watch_progress(self) -> None:
        """Log once when polling stalls and once when it resumes.

        A job of its own, not a step of the tick, so that a tick that hangs is noticed while
        it hangs.
        """
        reason = self.readiness()
        if reason is not None and self._stalled is None:
            log.error("polling_stalled", reason=reason)
        elif reason is None and self._stalled is not None:
            log.info("polling_resumed")
        self._stalled = reason

    async def reconfigure(self, settings: Settings, sinks: Mapping[str, Sink]) -> None:
        """Work under a reloaded configuration: polls and sends that already began finish as
        they began; everything that starts after this call uses the new settings."""
        routes = settings.routes()
        self._poller.reconfigure(
            policy=settings.polling.policy(),
            routes=routes,
            failing_after=settings.alerts.failing_after,
        )
        self._stuck, self._routes = dict(settings.alerts.stuck), routes
        self._planner.mode = settings.polling.sweep
        self._lookahead = lookahead(settings)
        self._settings = settings
        if self._dispatcher is not None:
            await self._dispatcher.replace(sinks, settings.delivery.backoff)

    async def _check_stuck(self) -> None:
        """Report every stay longer than its status's threshold, once (``meter_order.stuck``)."""
        if self._stopping or not self._stuck or not self._outage.due():
            return
        try:
            while not self._stopping:
                now = self._clock()
                stays = await self._store.stuck(self._stuck, now=now, limit=STUCK_BATCH)
                reports = [
                    (
                        stay,
                        alerts.stuck(
                            order_id=stay.order_id,
                            status=stay.status,
                            since=stay.since,
                            threshold=self._stuck[stay.status],
                            now=now,
                            routes=self._routes,
                        ),
                    )
                    for stay in stays
                ]
                raised = await self._store.report_stuck(reports)
                reported = {event.event_id for event in raised}
                for stay, event in reports:
                    if event.event_id in reported:
                        log.warning(
                            "order_stuck",
                            order_id=stay.order_id,
                            status=stay.status,
                            since=stay.since.isoformat(),
                            event_id=event.event_id,
                        )
                if any(event.sinks for event in raised):
                    self._dispatch_soon()
                if not raised:
                    break
            self._outage.succeeded()
        except Exception as exc:
            if not self._outage.failed(exc, doing="checking stuck orders"):
                log.exception("stuck_check_failed")

    async def _send_digests(self) -> None:
        """Raise each digest sink's due digest, once (a missed one when the daemon starts)."""
        if self._stopping or self._settings is None or not self._outage.due():
            return
        try:
            raised = await raise_due_digests(self._store, self._settings, now=self._clock())
            for event in raised:  # one with nothing to say goes to no sink
                log.info("digest_raised", key=event.key, sent_to=list(event.sinks))
            if any(event.sinks for event in raised):
                self._dispatch_soon()
            self._outage.succeeded()
        except Exception as exc:
            if not self._outage.failed(exc, doing="raising digests"):
                log.exception("digest_failed")

    async def _dispatch(self) -> None:
        if self._stopping or self._dispatcher is None or not self._outage.due():
            return
        self._dispatch_idle.clear()
        try:
            self._dispatch_again = True
            while self._dispatch_again and not self._stopping:
                self._dispatch_again = False
                await self._dispatcher.tick()
            self._outage.succeeded()
        except Exception as exc:
            if not self._outage.failed(exc, doing="claiming deliveries"):
                log.exception("dispatch_failed")
        finally:
            self._dispatch_idle.set()

    def _dispatch_soon(self) -> None:
        """New deliveries were stored: send them now rather than at the next interval."""
        if self._dispatch_job is None or self._stopping:
            return
        if self._dispatch_idle.is_set():
            self._dispatch_job.modify(next_run_time=datetime.now(UTC))
        else:
            self._dispatch_again = True  # the running dispatch goes round once more

    def _refill_soon(self) -> None:
        """Run the tick now rather than at its next interval when more orders are due."""
        if (
            self._more_due
            and self._tick_idle.is_set()
            and self._job is not None
            and self._queue.qsize() <= self._depth() // 2
        ):
            self._more_due = False
            self._job.modify(next_run_time=datetime.now(UTC))

    async def _work(self) -> None:
        while (work := await self._queue.get()) is not None:
            claims = work.claims if isinstance(work, Batch) else (work,)
            try:
                if isinstance(work, Batch):
                    await self._sweep(work)
                else:
                    await self._poll(work)
            except BaseException:
                # Unrecorded: stop renewing the leases, so that they expire and the orders are
                # polled again.
                self._claims.drop([claim.order_id for claim in claims])
                raise

    async def _sweep(self, batch: Batch) -> None:
        """Learn a batch from list pages; poll by id what the pages did not show."""
        self._refill_soon()
        ids = [claim.order_id for claim in batch.claims]
        self._in_flight.update(ids)
        try:
            swept = await self._poller.sweep(batch, self._planner)
        finally:
            self._in_flight.difference_update(ids)
        for outcome in swept.outcomes:
            self._writer.put(outcome)
        self.polls += len(swept.outcomes)
        self.pages += swept.pages
        if self._stopping:  # handed back with the polls in flight
            self._in_flight.update(claim.order_id for claim in swept.leftovers)
        else:
            for claim in swept.leftovers:  # claimed still: every worker may take one
                self._queue.put_nowait(claim)

    async def _poll(self, claim: Claim) -> None:
        self._refill_soon()
        self._in_flight.add(claim.order_id)
        try:
            outcome = await self._poller.poll(claim)
        finally:
            self._in_flight.discard(claim.order_id)
        self._writer.put(outcome)
        self.polls += 1

    async def _record(self, batch: list[PollOutcome]) -> None:
        """Write a batch; while the database is gone it is kept and written when it returns.

        A batch the database refuses is raised, and the writer hands its outcomes back one at
        a time; one it refuses alone is recorded as a failed poll instead (:meth:`_unrecorded`).
        """
        try:
            transitions = await self._write(batch)
        except Exception as exc:
            if len(batch) > 1 or unreachable(exc):
                raise
            await self._unrecorded(batch[0], exc)
            return
        finally:
            # Written, or (on failure) left to expire and be polled again.
            self._claims.drop([outcome.claim.order_id for outcome in batch])
        self._progress_at = time.monotonic()
        log_transitions(transitions)
        for transition in transitions:
            self._telemetry.transitioned(transition.from_status, transition.to_status)
        if self._on_transition is not None:
            for transition in transitions:
                self._on_transition(transition)
        if any(outcome.sinks or outcome.alerts for outcome in batch):
            self._dispatch_soon()

    async def _write(self, outcomes: list[PollOutcome]) -> list[Transition]:
        """Record ``outcomes`` (waiting out an outage), counting the writes that fail."""
        try:
            transitions = await self._outage.retrying(
                functools.partial(self._store.record, outcomes),
                doing="recording polls",
                stop=self._stop,
            )
        except Exception as exc:
            if not unreachable(exc):
                self._write_failures.failed(exc)
            raise
        self._write_failures.succeeded()
        return transitions

    async def _unrecorded(self, outcome: PollOutcome, exc: Exception) -> None:
        """The database refused ``outcome`` even alone: record a failed poll of the order
        instead (kind ``internal``, logged ``poll_failed`` with the database's reason, counted
        and backed off like any), so that it shows failing and raises ``poll_failing``.

        If that is refused too, the order's lease expires and it is polled again.
        """
        failed = self._poller.failed(
            outcome.claim, INTERNAL, f"its result could not be recorded: {first_line(exc)}"
        )
        self._poller.count(failed)
        try:
            await self._write([failed])
        except Exception as again:
            if not unreachable(again):
                self._write_failures.exhausted()
            log.warning(
                "poll_unrecorded", order_id=outcome.claim.order_id, error=clip(first_line(again))
            )
            return
        self._progress_at = time.monotonic()
        if failed.alerts:
            self._dispatch_soon()

    def _unqueue(self) -> list[str]:
        """Take back every claim not yet given to a worker: timed and queued."""
        waiting = list(self._timed)
        for _claim, timer in self._timed.values():
            timer.cancel()
        self._timed.clear()
        while not self._queue.empty():
            work = self._queue.get_nowait()
            if isinstance(work, Batch):
                waiting.extend(claim.order_id for claim in work.claims)
            elif work is not None:
                waiting.append(work.order_id)
        return waiting

    async def _shut_down(self, workers: list[asyncio.Task[None]]) -> None:
        waiting = self._unqueue()
        if self._discovery is not None:
            self._discovery.cancel()
            await asyncio.gather(self._discovery, return_exceptions=True)
        for _ in workers:
            self._queue.put_nowait(None)
        # In-flight polls may finish within the grace; the rest are abandoned unwritten.
        _done, late = await asyncio.wait(workers, timeout=self._stop_grace)
        abandoned = list(self._in_flight)
        for task in late:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        await self._writer.close()
        if self._dispatcher is not None:
            await self._dispatcher.stop(self._stop_grace)
        if waiting or abandoned:
            self._claims.drop(waiting + abandoned)
            try:
                await self._store.release(waiting + abandoned)
            except Exception as exc:  # their leases expire instead
                if not self._outage.failed(exc, doing="handing polls back"):
                    raise
            else:
                log.info("polls_handed_back", waiting=len(waiting), abandoned=len(abandoned))


async def run_until_signalled(
    daemon: Daemon, reload: Callable[[], Coroutine[Any, Any, object]] | None = None
) -> None:
    """Run ``daemon`` until SIGTERM or SIGINT; SIGHUP runs ``reload`` (one at a time)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled = [signal.SIGTERM, signal.SIGINT]
    for sig in handled:
        loop.add_signal_handler(sig, stop.set)
    reloading: set[asyncio.Task[object]] = set()
    if reload is not None:
        lock = asyncio.Lock()

        async def one_reload() -> object:
            async with lock:
                return await reload()

        def on_hangup() -> None:
            task = asyncio.create_task(one_reload())
            reloading.add(task)
            task.add_done_callback(reloading.discard)

        loop.add_signal_handler(signal.SIGHUP, on_hangup)
        handled.append(signal.SIGHUP)
    try:
        await daemon.run(stop)
    finally:
        for sig in handled:
            with contextlib.suppress(RuntimeError):
                loop.remove_signal_handler(sig)
        for task in list(reloading):
            task.cancel()
