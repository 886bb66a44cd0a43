"""The outbox dispatcher: claims due deliveries, sends them, records each attempt."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta

import structlog

from tracker.batching import BatchWriter
from tracker.model import DeliveryState, DueDelivery, SendResult
from tracker.schedule import plan_delivery
from tracker.sinks import Sink
from tracker.store import Attempt, Store

log = structlog.get_logger("tracker.outbox")


class Dispatcher:
    """Delivers pending deliveries, each sink on its own so one slow sink delays no other.

    Each tick claims, per sink, as many due deliveries as that sink has free slots (hiding them
    behind a lease), and starts one task per delivery. Attempts are recorded in batches; the
    next attempt follows ``backoff`` (a longer ``Retry-After`` wins) and the last failed one
    dead-letters the delivery. A crash before an attempt is recorded repeats it after the
    lease: at least once, always under the same event id.
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
    ) -> None:
        self._store = store
        self._sinks = dict(sinks)
        self._backoff = tuple(backoff)
        self._clock = clock
        self._concurrency = concurrency
        self._lease = lease
        self._in_flight: dict[str, dict[int, asyncio.Task[None]]] = {name: {} for name in sinks}
        self._writer: BatchWriter[Attempt] = BatchWriter(
            self._store.record_attempts, name="deliveries"
        )
        self.attempted = 0

    @property
    def sinks(self) -> Mapping[str, Sink]:
        """The configured sinks by name."""
        return self._sinks

    def start(self) -> None:
        """Start recording attempts."""
        self._writer.start()

    async def tick(self) -> None:
        """Claim due deliveries for every sink with free slots and start sending them."""
        for name, sink in self._sinks.items():
            flying = self._in_flight[name]
            room = self._concurrency - len(flying)
            if room <= 0:
                continue
            now = self._clock()
            due = await self._store.claim_deliveries(
                sink=name, now=now, limit=room, lease_until=now + self._lease
            )
            for delivery in due:
                flying[delivery.id] = asyncio.create_task(self._attempt(sink, delivery))

    async def stop(self, grace: float) -> None:
        """Let in-flight sends finish within ``grace``; hand the rest back unattempted."""
        tasks = [task for flying in self._in_flight.values() for task in flying.values()]
        if tasks:
            _done, late = await asyncio.wait(tasks, timeout=grace)
            abandoned = [i for flying in self._in_flight.values() for i in flying]
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
            if abandoned:
                await self._store.release_deliveries(abandoned)
                log.info("deliveries_handed_back", deliveries=len(abandoned))
        await self._writer.close()

    async def deliver(self, deliveries: Sequence[DueDelivery]) -> list[Attempt]:
        """Attempt the given deliveries now and record them (``tracker deliveries retry``)."""
        attempts = await asyncio.gather(
            *(self._send(self._sinks[d.sink], d) for d in deliveries if d.sink in self._sinks)
        )
        await self._store.record_attempts(attempts)
        return list(attempts)

    async def _attempt(self, sink: Sink, delivery: DueDelivery) -> None:
        try:
            self._writer.put(await self._send(sink, delivery))
        finally:
            self._in_flight[sink.name].pop(delivery.id, None)

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
        return Attempt(
            delivery_id=delivery.id,
            at=now,
            attempts=number,
            state=plan.state,
            next_attempt_at=plan.next_attempt_at,
            status=result.status,
            error=result.error,
        )


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
