"""The poll queue: claiming due orders, queueing them, the workers, and recording outcomes.

Each tick claims the due orders (``next_poll_at``) that fit into the in-memory queue, hiding
them behind a lease so a later tick does not take them again; the lease is renewed for as long
as the claim is queued, polled or waiting to be written, so no pause outlives it. Workers poll
within the upstream's pace (or sweep a batch from list pages) and hand outcomes to one writer,
which records them in batches. A crash loses at most unwritten outcomes; their leases expire
and the orders are polled again, so no transition is lost or stored twice.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import structlog

from tracker.batching import BatchWriter, WriteFailures
from tracker.clock import Clock
from tracker.config import Settings
from tracker.discovery import Discovery, claim_key
from tracker.errors import clip, first_line
from tracker.model import Claim, Transition
from tracker.outage import Outage
from tracker.poller import INTERNAL, Poller, log_transitions
from tracker.store import PollOutcome, Store, unreachable
from tracker.supervision import HeldClaims, guarded, supervised
from tracker.sweep import Batch, SweepPlanner
from tracker.telemetry import Telemetry

if TYPE_CHECKING:
    from apscheduler.job import Job

log = structlog.get_logger("tracker.poll_queue")

TransitionListener = Callable[[Transition], None]
#: Work for the pollers: an order to poll by id, a batch to sweep, or ``None``: stop.
Work = Claim | Batch | None
#: Seconds without a tick after which the daemon is unready: ten missed ticks of one second
#: mean a claim is stuck (the database locked or gone), not that a tick ran late.
TICK_STALE = 10.0
#: The most a sweep refreshes an order ahead of its due time.
LOOKAHEAD_CAP = timedelta(minutes=5)
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


class Recorder:
    """Records outcomes in batches; while the database is gone they wait and are written when
    it returns. A batch the database refuses is written again an order at a time, and an
    order it refuses alone is recorded as a failed poll instead."""

    def __init__(
        self,
        *,
        store: Store,
        poller: Poller,
        claims: HeldClaims[str],
        outage: Outage,
        stop: asyncio.Event,
        telemetry: Telemetry,
        on_transition: TransitionListener | None,
        raised: Callable[[], None],
    ) -> None:
        self._store = store
        self._poller = poller
        self._claims = claims
        self._outage = outage
        self._stop = stop
        self._telemetry = telemetry
        self._on_transition = on_transition
        #: Told when deliveries or alerts were stored: the outbox sends them now.
        self._raised = raised
        # A batch the database refused (not one it could not be reached for) is written again
        # an order at a time: one order's result it refuses must not drop the others'.
        self._writer: BatchWriter[PollOutcome] = BatchWriter(
            self._record, name="polls", split=lambda exc: not unreachable(exc)
        )
        self._failures = WriteFailures(limit=UNRECORDABLE_AFTER)
        #: When a poll was last recorded (monotonic).
        self.progress_at = time.monotonic()
        #: Outcomes handed over to be recorded.
        self.polls = 0
        #: Shown every batch written (``tracker.organisation.Organisation.judge``).
        self.judge: Callable[[Sequence[PollOutcome]], None] | None = None

    def start(self) -> None:
        """Start the writer."""
        self._writer.start()

    def put(self, outcome: PollOutcome) -> None:
        """Record ``outcome`` with the next batch."""
        self._writer.put(outcome)
        self.polls += 1

    async def close(self) -> None:
        """Write what is handed over, then stop."""
        await self._writer.close()

    def describe(self) -> str | None:
        """Why no result can be recorded (see :data:`UNRECORDABLE_AFTER`); else ``None``."""
        return self._failures.describe()

    async def _record(self, batch: list[PollOutcome]) -> None:
        """Write a batch; a batch the database refuses is raised, and the writer hands its
        outcomes back one at a time; one refused alone is recorded as a failed poll instead."""
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
        self.progress_at = time.monotonic()
        if self.judge is not None:
            self.judge(batch)
        log_transitions(transitions)
        for transition in transitions:
            self._telemetry.transitioned(transition.from_status, transition.to_status)
        if self._on_transition is not None:
            for transition in transitions:
                self._on_transition(transition)
        if any(outcome.sinks or outcome.alerts for outcome in batch):
            self._raised()

    async def _write(self, outcomes: list[PollOutcome]) -> list[Transition]:
        """Record ``outcomes`` (waiting out an outage), counting the writes that fail."""
        try:
            transitions = await self._outage.retrying(
                functools.partial(self._store.polls.record, outcomes),
                doing="recording polls",
                stop=self._stop,
            )
        except Exception as exc:
            if not unreachable(exc):
                self._failures.failed(exc)
            raise
        self._failures.succeeded()
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
                self._failures.exhausted()
            log.warning(
                "poll_unrecorded", order_id=outcome.claim.order_id, error=clip(first_line(again))
            )
            return
        self.progress_at = time.monotonic()
        if failed.alerts:
            self._raised()


class Workers:
    """Workers taking work from the queue: a poll by id, or a batch swept from list pages.

    Supervised: one whose loop fails is logged and restarted.
    """

    def __init__(
        self,
        *,
        count: int,
        queue: asyncio.Queue[Work],
        poller: Poller,
        planner: SweepPlanner,
        claims: HeldClaims[str],
        recorder: Recorder,
        taken: Callable[[], None],
        stop: asyncio.Event,
    ) -> None:
        self.count = count
        self._queue = queue
        self._poller = poller
        self._planner = planner
        self._claims = claims
        self._recorder = recorder
        #: Told when a worker takes work: the queue may want refilling.
        self._taken = taken
        self._stop = stop
        self._tasks: list[asyncio.Task[None]] = []
        #: The orders being polled (and, once stopping, a sweep's leftovers).
        self._in_flight: set[str] = set()
        #: List pages read by sweeps.
        self.pages = 0

    def start(self) -> None:
        """Start ``count`` supervised workers."""
        self._tasks = [
            asyncio.create_task(supervised(f"poller-{number}", self._work))
            for number in range(self.count)
        ]

    async def stop(self, grace: float) -> list[str]:
        """Let polls in flight finish within ``grace``; the orders of those abandoned."""
        for _ in self._tasks:
            self._queue.put_nowait(None)
        _done, late = await asyncio.wait(self._tasks, timeout=grace)
        abandoned = list(self._in_flight)
        for task in late:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        return abandoned

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
        self._taken()
        ids = [claim.order_id for claim in batch.claims]
        self._in_flight.update(ids)
        try:
            swept = await self._poller.sweep(batch, self._planner)
        finally:
            self._in_flight.difference_update(ids)
        for outcome in swept.outcomes:
            self._recorder.put(outcome)
        self.pages += swept.pages
        if self._stop.is_set():  # handed back with the polls in flight
            self._in_flight.update(claim.order_id for claim in swept.leftovers)
        else:
            for claim in swept.leftovers:  # claimed still: every worker may take one
                self._queue.put_nowait(claim)

    async def _poll(self, claim: Claim) -> None:
        self._taken()
        self._in_flight.add(claim.order_id)
        try:
            outcome = await self._poller.poll(claim)
        finally:
            self._in_flight.discard(claim.order_id)
        self._recorder.put(outcome)


class PollQueue:
    """Each tick claims the orders due by the next and queues each at its own due time.

    So a poll starts within a fraction of a tick of when it is due, not up to a whole tick
    late, and the orders due within one second are spread over it. While list sweeps are on,
    the due orders whose customer is known go to sweeps, a page's worth per request.
    """

    def __init__(
        self,
        *,
        store: Store,
        poller: Poller,
        clock: Clock,
        outage: Outage,
        stop: asyncio.Event,
        claims: HeldClaims[str],
        planner: SweepPlanner,
        discovery: Discovery,
        capacity: int,
        workers: int,
        tick: float,
    ) -> None:
        self._store = store
        self._poller = poller
        self._clock = clock
        self._outage = outage
        self._stop = stop
        self._claims = claims
        self._planner = planner
        self._discovery = discovery
        self._capacity = capacity
        self._workers = workers
        self._tick_seconds = tick
        #: Unbounded: what is claimed is bounded by :meth:`depth` (a batch counts as one).
        self.queue: asyncio.Queue[Work] = asyncio.Queue()
        #: Claims taken ahead of their due time, each with the timer that queues it then.
        self._timed: dict[str, tuple[Claim, asyncio.TimerHandle]] = {}
        self._more_due = False
        self._ticked_at = 0.0
        self._tick_error: str | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        #: The scheduled job that runs :meth:`tick`, once the daemon scheduled it.
        self.job: Job | None = None

    async def tick(self) -> None:
        """Claim what is due (see the class); a database outage is waited out."""
        if self._stop.is_set():
            return
        self._ticked_at = time.monotonic()
        await guarded(self._outage, self._claim, doing="claiming due orders", failed=self._failed)

    async def _claim(self) -> None:
        self._idle.clear()
        try:
            await self._claim_due()
            self._tick_error = None
        finally:
            self._idle.set()

    def _failed(self, exc: Exception) -> None:
        self._tick_error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        log.error("tick_failed", exc_info=exc)

    async def idle(self) -> None:
        """Wait until no claim is in progress (it lands before the hand-back)."""
        await self._idle.wait()

    def depth(self) -> int:
        """How many claims to queue: about two seconds of this daemon's share, so that a
        daemon that dies holds little, and what it held waits little behind the others'."""
        return min(self._capacity, 2 * math.ceil(self._poller.pacer.rate) + self._workers)

    async def _claim_due(self) -> None:
        room = self.depth() - self.queue.qsize() - len(self._timed)
        if room <= 0:
            return
        now = self._clock()
        soon = now + timedelta(seconds=self._tick_seconds)
        lease_until = self._claims.lease_until()
        if not self._planner.sweeps:
            claims = await self._store.polls.claim_due(
                now=now, limit=room, lease_until=lease_until, until=soon
            )
            self._more_due = len(claims) == room
            self._queue_by_id(self._claims.take_fresh(claims, claim_key), now)
            return
        keyed = await self._claim_keyed(now, room)
        unkeyed: list[Claim] = []
        if not await self._discovery.running(now):
            unkeyed = await self._store.polls.claim_due(
                now=now, limit=room, lease_until=lease_until, until=soon, keyed=False
            )
        # A full claim of unknown customers is a backlog: worth a look for a discovery sweep.
        self._discovery.backlog = len(unkeyed) == room
        self._more_due = (
            self._discovery.backlog or len(keyed) >= room * self._planner.values_per_page()
        )
        batches, by_id = self._planner.plan(self._claims.take_fresh(keyed + unkeyed, claim_key))
        for batch in batches:
            self.queue.put_nowait(batch)
        self._queue_by_id(by_id, now)

    async def _claim_keyed(self, now: datetime, room: int) -> list[Claim]:
        """The due orders a sweep can find: up to ``room`` pages' worth, the last page filled
        with orders due within the jitter. Those are refreshed early by less than their
        jitter, and the pages of a pass hold a hundred orders each, not the few due in one
        second."""
        per_page = self._planner.values_per_page()
        lease_until = self._claims.lease_until()
        keyed = await self._store.polls.claim_due(
            now=now,
            limit=room * per_page,
            lease_until=lease_until,
            until=now + timedelta(seconds=self._tick_seconds),
            keyed=True,
        )
        if keyed and (short := -len(keyed) % per_page):
            keyed += await self._store.polls.claim_due(
                now=now,
                limit=short,
                lease_until=lease_until,
                until=now + self._discovery.lookahead,
                keyed=True,
            )
        return keyed

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
                self.queue.put_nowait(claim)

    def _queue_timed(self, order_id: str) -> None:
        """An order claimed ahead of its due time is due now: queue it for a worker (once the
        daemon stops, it stays to be handed back)."""
        if not self._stop.is_set() and (timed := self._timed.pop(order_id, None)) is not None:
            self.queue.put_nowait(timed[0])

    def refill_soon(self) -> None:
        """Run the tick now rather than at its next interval when more orders are due."""
        if (
            self._more_due
            and self._idle.is_set()
            and self.job is not None
            and self.queue.qsize() <= self.depth() // 2
        ):
            self._more_due = False
            self.job.modify(next_run_time=datetime.now(UTC))

    def unqueue(self) -> list[str]:
        """Take back every claim not yet given to a worker: timed and queued."""
        waiting = list(self._timed)
        for _claim, timer in self._timed.values():
            timer.cancel()
        self._timed.clear()
        while not self.queue.empty():
            work = self.queue.get_nowait()
            if isinstance(work, Batch):
                waiting.extend(claim.order_id for claim in work.claims)
            elif work is not None:
                waiting.append(work.order_id)
        return waiting

    async def hand_back(self, waiting: list[str], abandoned: list[str]) -> None:
        """Release the claims not polled, or polled and not written, for any daemon to take."""
        if not waiting and not abandoned:
            return
        self._claims.drop(waiting + abandoned)
        try:
            await self._store.polls.release(waiting + abandoned)
        except Exception as exc:  # their leases expire instead
            if not self._outage.failed(exc, doing="handing polls back"):
                raise
        else:
            log.info("polls_handed_back", waiting=len(waiting), abandoned=len(abandoned))

    def trouble(self) -> str | None:
        """Why claiming is not working: the last tick failed, or none ran for a while."""
        if self._tick_error is not None:
            return f"claiming due orders failed: {self._tick_error}"
        since_tick = time.monotonic() - self._ticked_at
        if self._ticked_at and since_tick > TICK_STALE:
            return f"the scheduler has not ticked for {since_tick:.0f} s"
        return None
