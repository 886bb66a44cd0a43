"""The daemon: builds its parts, schedules their jobs, stops them in order, and says whether
it is ready.

Each long-running concern is a part of its own: :class:`~tracker.fleet.Fleet` (joining,
heartbeats, budget and pause sharing, takeover), :class:`~tracker.poll_queue.PollQueue` with its
:class:`~tracker.poll_queue.Workers` and :class:`~tracker.poll_queue.Recorder` (claiming,
polling, recording), :class:`~tracker.discovery.Discovery` (reading the organisation's list),
:class:`~tracker.alerts.StuckCheck`, the daily digests, and the outbox's
:class:`~tracker.outbox.Rounds`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from apscheduler.job import Job
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from tracker.alerts import STUCK_CHECK, StuckCheck
from tracker.clock import Clock
from tracker.config import Settings
from tracker.digest import raise_due_digests
from tracker.discovery import Discovery
from tracker.fleet import Fleet
from tracker.model import HEARTBEAT
from tracker.organisation import Organisation
from tracker.outage import Outage
from tracker.outbox import Dispatcher, Rounds
from tracker.poll_queue import PollQueue, Recorder, TransitionListener, Workers, lookahead
from tracker.poller import Poller
from tracker.sinks.registry import Sink
from tracker.store import Store
from tracker.supervision import HeldClaims, guarded, renewing
from tracker.sweep import SweepPlanner
from tracker.telemetry import SILENT, Telemetry

__all__ = ["DIGEST_CHECK", "Daemon", "TransitionListener", "run_until_signalled"]

log = structlog.get_logger("tracker.daemon")

#: Seconds between two looks for a due digest (one key lookup per digest sink).
DIGEST_CHECK = 60.0
#: Seconds between folds of the active orders' counts per status (``Tally.fold``).
COUNTS_FOLD = 60.0


class Daemon:
    """Polls every watched order on its schedule until asked to stop.

    The database is the schedule (see :mod:`tracker.poll_queue`): a crash loses at most
    unwritten outcomes, whose leases expire and whose orders are polled again, so no
    transition is lost or stored twice.
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
        self._poller = poller
        self._clock = clock
        #: The configuration in force: alerts and digests read it. None: neither.
        self._settings = settings
        self._outage = outage = outage or Outage(store.where)
        self._stop = stop = asyncio.Event()
        self._tick_seconds = tick
        self._stop_grace = stop_grace
        self._stall_after = stall_after
        self._capacity = capacity
        self._stalled: str | None = None
        self._dispatcher = dispatcher
        self._outbox = None if dispatcher is None else Rounds(dispatcher, outage=outage, stop=stop)
        self._fleet = Fleet(store=store, pacer=poller.pacer, clock=clock, outage=outage)
        self._claims: HeldClaims[str] = HeldClaims(
            name="orders", lease=lease, clock=clock, extend=store.polls.extend_leases, outage=outage
        )
        self._planner = SweepPlanner(mode=settings.polling.sweep if settings else "ids")
        self._recorder = Recorder(
            store=store,
            poller=poller,
            claims=self._claims,
            outage=outage,
            stop=stop,
            telemetry=telemetry,
            on_transition=on_transition,
            raised=self._raised,
        )
        self._queue, self._discovery, self._workers = self._polling(
            workers=workers, capacity=capacity, lookahead=lookahead(settings)
        )
        self._organisation = Organisation(
            poller=poller,
            store=store,
            claims=self._claims,
            record=self._recorder.put,
            settings=settings,
            clock=clock,
            oldest=lambda: self._fleet.oldest,
            stop=stop.is_set,
        )
        self._recorder.judge = self._organisation.judge
        self._organisation_job: Job | None = None
        self._stuck = StuckCheck(
            store=store,
            clock=clock,
            outage=outage,
            stop=stop,
            thresholds=settings.alerts.stuck if settings else {},
            routes=settings.routes() if settings else {},
            raised=self._raised,
        )

    def _polling(
        self, *, workers: int, capacity: int, lookahead: timedelta
    ) -> tuple[PollQueue, Discovery, Workers]:
        """The poll queue, the discovery it may start, and the workers taking from it."""
        stop, claims, planner = self._stop, self._claims, self._planner
        discovery = Discovery(
            lister=self._poller,
            store=self._store,
            claims=claims,
            record=self._recorder.put,
            planner=planner,
            clock=self._clock,
            oldest=lambda: self._fleet.oldest,
            stop=stop,
            lookahead=lookahead,
        )
        queue = PollQueue(
            store=self._store,
            poller=self._poller,
            clock=self._clock,
            outage=self._outage,
            stop=stop,
            claims=claims,
            planner=planner,
            discovery=discovery,
            capacity=capacity,
            workers=workers,
            tick=self._tick_seconds,
        )
        pollers = Workers(
            count=workers,
            queue=queue.queue,
            poller=self._poller,
            planner=planner,
            claims=claims,
            recorder=self._recorder,
            taken=queue.refill_soon,
            stop=stop,
        )
        return queue, discovery, pollers

    @property
    def polls(self) -> int:
        """Outcomes handed over to be recorded: polls by id and orders found on list pages."""
        return self._recorder.polls

    @property
    def pages(self) -> int:
        """List pages read by sweeps and discovery."""
        return self._workers.pages + self._discovery.pages + self._organisation.pages

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then finish or hand back what is in flight.

        Refuses to start (:class:`~tracker.errors.ConfigError`) on SQLite while another daemon
        runs there.
        """
        await self._fleet.join()
        try:
            await self._run(stop)
        finally:
            await self._fleet.leave()

    async def _run(self, stop: asyncio.Event) -> None:
        scheduler = AsyncIOScheduler(timezone=UTC)
        self._schedule(scheduler)
        async with contextlib.AsyncExitStack() as leases:
            await leases.enter_async_context(renewing(self._claims))
            if self._dispatcher is not None and self._outbox is not None:
                await leases.enter_async_context(renewing(self._dispatcher.claims))
                self._dispatcher.start()
                self._outbox.job = self._every(scheduler, self._outbox.run, self._tick_seconds)
            self._workers.start()
            self._recorder.start()
            scheduler.start()
            me = self._fleet.me
            log.info(
                "daemon_started",
                daemon=me.id,
                host=me.host,
                pid=me.pid,
                workers=self._workers.count,
                capacity=self._capacity,
            )
            try:
                await stop.wait()
            finally:
                self._stop.set()
                scheduler.pause()
                await self._queue.idle()  # a claim in progress lands before hand-back
                await self._organisation.idle()  # it stops after its page; that is recorded
                if self._outbox is not None:
                    await self._outbox.idle()
                scheduler.shutdown(wait=False)
                await self._shut_down()
        log.info("daemon_stopped", polls=self.polls)

    def _schedule(self, scheduler: AsyncIOScheduler) -> None:
        """Every part's periodic jobs but the outbox's (started with its workers)."""
        seconds = self._tick_seconds
        # Beside live daemons, polling starts once each has beaten and taken its smaller share.
        settle = HEARTBEAT.total_seconds() + 1 if self._fleet.members > 1 else 0.0
        self._queue.job = self._every(scheduler, self._queue.tick, seconds, start_in=settle)
        self._every(scheduler, self._watch_progress, seconds)
        self._every(scheduler, self._fleet.beat, HEARTBEAT.total_seconds())
        if self._store.fleet.shared:  # on SQLite this daemon is the only one
            self._every(scheduler, self._fleet.share_pause, seconds)
        self._every(scheduler, self._stuck.run, STUCK_CHECK)
        sweep = self._guarded(
            self._organisation.run,
            doing="sweeping the organisation",
            failed="organisation_sweep_failed",
        )
        every = self._organisation.every.total_seconds()
        self._organisation_job = self._every(scheduler, sweep, every)
        digests = self._guarded(
            self._raise_digests, doing="raising digests", failed="digest_failed"
        )
        self._every(scheduler, digests, DIGEST_CHECK)
        fold = self._guarded(
            self._store.tally.fold, doing="folding the order counts", failed="counts_fold_failed"
        )
        self._every(scheduler, fold, COUNTS_FOLD)

    async def _shut_down(self) -> None:
        """Stop in the reverse order of starting; hand back every claim not recorded."""
        waiting = self._queue.unqueue()
        await self._discovery.cancel()
        # In-flight polls may finish within the grace; the rest are abandoned unwritten.
        abandoned = await self._workers.stop(self._stop_grace)
        await self._recorder.close()
        if self._dispatcher is not None:
            await self._dispatcher.stop(self._stop_grace)
        await self._queue.hand_back(waiting, abandoned)

    def readiness(self) -> str | None:
        """``None`` while polling makes progress; else why not (for ``/readyz`` and the log).

        Unready: the database is gone; the last writes of results all failed (see
        :data:`~tracker.poll_queue.UNRECORDABLE_AFTER`); the last tick failed or is long past (a
        claim hanging on a locked database); or orders wait (queued, polled or unwritten) and
        no poll has been recorded for ``stall_after`` seconds, as when every worker hangs,
        every request is paused or every write fails.
        """
        for reason in (self._outage.describe(), self._recorder.describe(), self._queue.trouble()):
            if reason is not None:
                return reason
        waiting = len(self._claims)
        idle = time.monotonic() - self._recorder.progress_at
        if waiting and idle > self._stall_after:
            return f"no poll recorded for {idle:.0f} s while {waiting} claimed orders wait"
        return None

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
        self._stuck.reconfigure(settings.alerts.stuck, routes)
        self._planner.mode = settings.polling.sweep
        self._organisation.reconfigure(settings)
        if self._organisation_job is not None:
            self._organisation_job.reschedule(
                "interval", seconds=self._organisation.every.total_seconds()
            )
        self._discovery.lookahead = lookahead(settings)
        self._settings = settings
        if self._dispatcher is not None:
            await self._dispatcher.replace(sinks, settings.delivery.backoff)

    def _guarded(
        self, job: Callable[[], Awaitable[object]], *, doing: str, failed: str
    ) -> Callable[[], Coroutine[Any, Any, None]]:
        """A periodic job's round that waits out a database outage (``supervision.guarded``)
        and logs any other failure as the event ``failed``, with its traceback."""

        async def round_() -> None:
            await guarded(
                self._outage,
                job,
                doing=doing,
                failed=lambda exc: log.error(failed, exc_info=exc),
            )

        return round_

    def _raised(self) -> None:
        """Deliveries, alerts or digests were stored: the outbox sends them now."""
        if self._outbox is not None:
            self._outbox.soon()

    async def _raise_digests(self) -> None:
        """Raise each digest sink's due digest, once (a missed one when the daemon starts)."""
        if self._stop.is_set() or self._settings is None:
            return
        raised = await raise_due_digests(self._store, self._settings, now=self._clock())
        for event in raised:  # one with nothing to say goes to no sink
            log.info("digest_raised", key=event.key, sent_to=list(event.sinks))
        if any(event.sinks for event in raised):
            self._raised()

    @staticmethod
    def _every(
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
