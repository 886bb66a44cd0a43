"""The outbox: claims due deliveries, sends them, records each attempt, and runs again at once
when new deliveries are stored."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING

import structlog

from tracker.batching import BatchWriter
from tracker.config import Settings
from tracker.model import DeliveryState, DueDelivery, SendResult
from tracker.outage import Outage
from tracker.schedule import plan_delivery
from tracker.sinks.registry import Sink
from tracker.store import Attempt, Store
from tracker.supervision import HeldClaims, guarded, renewing, supervised
from tracker.telemetry import SILENT, Telemetry

if TYPE_CHECKING:  # only a daemon schedules the outbox; `deliveries retry` loads no scheduler
    from apscheduler.job import Job

log = structlog.get_logger("tracker.outbox")


#: An attempt's ``result`` in telemetry, by the state it leaves the delivery in.
_RESULTS: dict[str, str] = {
    DeliveryState.DELIVERED: "delivered",
    DeliveryState.PENDING: "failed",  # retried after the backoff
    DeliveryState.DEAD: "dead",
}


def window(concurrency: int) -> int:
    """How many deliveries one sink claims ahead: a few rounds of sends per claim."""
    return 8 * concurrency


@dataclass(eq=False)
class _Lane:
    """One sink's claimed deliveries and the workers that send them."""

    sink: Sink
    #: The sink left the configuration: its workers finish their sends and stop.
    closed: bool = False
    waiting: deque[DueDelivery] = field(default_factory=deque)
    sending: dict[int, DueDelivery] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    claiming: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: The last claim was full, so more deliveries may be due.
    more: bool = False
    workers: list[asyncio.Task[None]] = field(default_factory=list)


class Dispatcher:
    """Delivers pending deliveries, each sink on its own so one slow sink delays no other.

    Every sink has a lane: ``concurrency`` workers sending from a queue of claimed deliveries
    (hidden from other claims behind a lease, renewed while the delivery is held here). A
    tick, or a worker that sees its queue half empty, claims more. Attempts are recorded in
    batches; the next attempt follows ``backoff`` (a longer ``Retry-After`` wins) and the last
    failed one dead-letters the delivery. A crash before an attempt is recorded repeats it
    after the lease: at least once, always under the same event id.
    """

    def __init__(
        self,
        *,
        store: Store,
        sinks: Mapping[str, Sink],
        backoff: Sequence[timedelta],
        clock: Callable[[], datetime],
        concurrency: int,
        lease: timedelta,
        outage: Outage | None = None,
        build: Callable[[Settings], Mapping[str, Sink]] | None = None,
        telemetry: Telemetry = SILENT,
    ) -> None:
        self._store = store
        self._telemetry = telemetry
        #: Builds the sinks of a configuration (a reload); a broken one raises ConfigError.
        self.build = build
        #: In a daemon: a database outage is waited out, not logged per delivery.
        self._outage = outage
        self._sinks = dict(sinks)
        self._backoff = tuple(backoff)
        self._clock = clock
        self._concurrency = concurrency
        self._claims: HeldClaims[int] = HeldClaims(
            name="deliveries",
            lease=lease,
            clock=clock,
            extend=store.outbox.extend_leases,
            outage=outage,
        )
        self._window = window(concurrency)
        self._lanes = {name: _Lane(sink) for name, sink in sinks.items()}
        self._stopping = False
        self._started = False
        self._stop = asyncio.Event()
        # Attempts finish one by one; lingering lets a few hundred share a transaction. A crash
        # in between only repeats those attempts, which at-least-once allows.
        self._writer: BatchWriter[Attempt] = BatchWriter(
            self._record, name="deliveries", linger=0.2
        )
        self.attempted = 0

    @property
    def sinks(self) -> Mapping[str, Sink]:
        """The configured sinks by name."""
        return self._sinks

    def start(self) -> None:
        """Start each sink's workers and the recording of attempts."""
        self._writer.start()
        self._started = True
        for lane in self._lanes.values():
            self._start_lane(lane)

    def _start_lane(self, lane: _Lane) -> None:
        lane.workers = [
            asyncio.create_task(supervised(f"sink-{lane.sink.name}-{n}", partial(self._work, lane)))
            for n in range(self._concurrency)
        ]

    async def replace(self, sinks: Mapping[str, Sink], backoff: Sequence[timedelta]) -> None:
        """Deliver to ``sinks`` from now on (a reload): sends in flight finish as they began.

        A sink that stays is swapped in for its next send; a new one gets a lane; a removed
        one's workers stop after their current send and its claimed deliveries are handed
        back, pending, until the sink returns (``orphaned`` meanwhile).
        """
        self._sinks, self._backoff = dict(sinks), tuple(backoff)
        removed = [lane for name, lane in self._lanes.items() if name not in sinks]
        for name, sink in sinks.items():
            if (lane := self._lanes.get(name)) is not None:
                lane.sink = sink
            else:
                self._lanes[name] = lane = _Lane(sink)
                if self._started and not self._stopping:
                    self._start_lane(lane)
        handed_back: list[int] = []
        for lane in removed:
            del self._lanes[lane.sink.name]
            lane.closed = True
            lane.wake.set()
            handed_back += [delivery.id for delivery in lane.waiting]
            lane.waiting.clear()
        if handed_back:
            self._claims.drop(handed_back)
            await self._store.outbox.release(handed_back)
        for lane in removed:
            await asyncio.gather(*lane.workers, return_exceptions=True)

    @property
    def claims(self) -> HeldClaims[int]:
        """The deliveries claimed here and not yet recorded, whose leases must be renewed."""
        return self._claims

    async def _record(self, attempts: list[Attempt]) -> None:
        """Write attempts; in a daemon, kept while the database is gone and written after."""
        write = partial(self._store.outbox.record, attempts)
        try:
            if self._outage is None:
                await write()
            else:
                await self._outage.retrying(write, doing="recording deliveries", stop=self._stop)
        finally:
            self._claims.drop([attempt.delivery_id for attempt in attempts])

    async def tick(self) -> None:
        """Claim due deliveries for every sink with room in its queue."""
        for lane in self._lanes.values():
            await self._fill(lane)

    async def stop(self, grace: float) -> None:
        """Let in-flight sends finish within ``grace``; hand the rest back unattempted."""
        self._stopping = True
        self._stop.set()
        workers = [task for lane in self._lanes.values() for task in lane.workers]
        for lane in self._lanes.values():
            lane.wake.set()
        if workers:
            _done, late = await asyncio.wait(workers, timeout=grace)
            abandoned = [
                delivery.id
                for lane in self._lanes.values()
                for delivery in (*lane.waiting, *lane.sending.values())
            ]
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
            if abandoned:
                self._claims.drop(abandoned)
                await self._store.outbox.release(abandoned)
                log.info("deliveries_handed_back", deliveries=len(abandoned))
        await self._writer.close()

    async def deliver(self, deliveries: Sequence[DueDelivery]) -> list[Attempt]:
        """Attempt the given deliveries now and record them (``tracker deliveries retry``).

        Their leases are renewed until the attempts are written, however long that takes.
        """
        gate = asyncio.Semaphore(self._concurrency)

        async def one(delivery: DueDelivery) -> Attempt:
            async with gate:
                return await self._send(self._sinks[delivery.sink], delivery)

        chosen = [d for d in deliveries if d.sink in self._sinks]
        self._claims.take([d.id for d in chosen])
        async with renewing(self._claims):
            attempts = await asyncio.gather(*(one(d) for d in chosen))
            await self._record(attempts)
        return list(attempts)

    async def _fill(self, lane: _Lane) -> None:
        async with lane.claiming:
            room = self._window - len(lane.waiting) - len(lane.sending)
            if room <= 0 or self._stopping or lane.closed:
                return
            due = await self._store.outbox.claim(
                sink=lane.sink.name,
                now=self._clock(),
                limit=room,
                lease_until=self._claims.lease_until(),
            )
            lane.more = len(due) == room
            fresh = self._claims.take_fresh(due, lambda delivery: delivery.id)
            if fresh:
                lane.waiting.extend(fresh)
                lane.wake.set()

    async def _work(self, lane: _Lane) -> None:
        while not self._stopping and not lane.closed:
            if not lane.waiting:
                lane.wake.clear()
                await lane.wake.wait()
                continue
            delivery = lane.waiting.popleft()
            lane.sending[delivery.id] = delivery
            try:
                attempt = await self._send(lane.sink, delivery)
            except BaseException:
                self._claims.drop([delivery.id])  # unrecorded: its lease expires, it is retried
                raise
            finally:
                lane.sending.pop(delivery.id, None)
            self._writer.put(attempt)
            if lane.more and len(lane.waiting) <= self._window // 2:
                lane.more = False
                try:
                    await self._fill(lane)
                except Exception as exc:  # the next tick claims again
                    if self._outage is None or not self._outage.failed(exc, doing="claiming"):
                        raise

    async def _send(self, sink: Sink, delivery: DueDelivery) -> Attempt:
        try:
            result = await sink.send(delivery)
        except Exception as exc:  # a sink's own bug must not stop the others
            log.exception("sink_crashed", sink=sink.name, event_id=delivery.event_id)
            result = SendResult(ok=False, error=f"sink failed: {type(exc).__name__}")
        self.attempted += 1
        now = self._clock()
        number = delivery.attempts + 1
        plan = plan_delivery(
            self._backoff,
            number,
            now,
            ok=result.ok,
            gone=result.gone,
            retry_after=result.retry_after,
        )
        _log_attempt(delivery, number, plan.state, plan.next_attempt_at, result)
        self._telemetry.delivered(delivery.sink, _RESULTS[plan.state])
        return Attempt(
            delivery_id=delivery.id,
            at=now,
            attempts=number,
            state=plan.state,
            next_attempt_at=plan.next_attempt_at,
            status=result.status,
            error=result.error,
        )


class Rounds:
    """The outbox's job in a daemon: each round claims due deliveries for every sink.

    Deliveries stored meanwhile (a transition, an alert, a digest) are sent now rather than at
    the next interval (:meth:`soon`): the round that runs goes round once more, or the next one
    starts at once.
    """

    def __init__(self, dispatcher: Dispatcher, *, outage: Outage, stop: asyncio.Event) -> None:
        self._dispatcher = dispatcher
        self._outage = outage
        self._stop = stop
        self._idle = asyncio.Event()
        self._idle.set()
        self._again = False
        #: The scheduled job that runs :meth:`run`, once the daemon scheduled it.
        self.job: Job | None = None

    async def run(self) -> None:
        """One round, and another while new deliveries were stored during it."""
        if self._stop.is_set():
            return
        await guarded(
            self._outage,
            self._rounds,
            doing="claiming deliveries",
            failed=lambda exc: log.error("dispatch_failed", exc_info=exc),
        )

    async def _rounds(self) -> None:
        self._idle.clear()
        try:
            self._again = True
            while self._again and not self._stop.is_set():
                self._again = False
                await self._dispatcher.tick()
        finally:
            self._idle.set()

    def soon(self) -> None:
        """New deliveries were stored: send them now rather than at the next interval."""
        if self.job is None or self._stop.is_set():
            return
        if self._idle.is_set():
            self.job.modify(next_run_time=datetime.now(UTC))
        else:
            self._again = True  # the running round goes round once more

    async def idle(self) -> None:
        """Wait until no round runs (a claim in progress lands before the hand-back)."""
        await self._idle.wait()


def _log_attempt(
    delivery: DueDelivery, number: int, state: str, next_at: datetime, result: SendResult
) -> None:
    fields = {
        "sink": delivery.sink,
        "event_id": delivery.event_id,
        "attempt": number,
        "status": result.status,
    }
    if state == DeliveryState.DELIVERED:
        log.info("delivery_succeeded", **fields)
    elif state == DeliveryState.DEAD:
        log.error("delivery_dead_lettered", error=result.error, gone=result.gone, **fields)
    else:
        log.warning(
            "delivery_failed", error=result.error, next_attempt_at=next_at.isoformat(), **fields
        )
