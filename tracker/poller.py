"""One poll of one order: fetch, compare with the last snapshot, and say what to store."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import structlog

from tracker import alerts as alerts_
from tracker.clock import utc_now
from tracker.diff import decide
from tracker.errors import RateLimited, UpstreamError, clip
from tracker.model import Claim, Event, MeterOrder, StatusChange, Transition
from tracker.pacing import Pacer
from tracker.routing import route
from tracker.schedule import PollingPolicy
from tracker.sinks.render import event_body
from tracker.store import PollOutcome, Store
from tracker.supervision import HeldClaims, renewing
from tracker.telemetry import SILENT, PollResult, Telemetry
from tracker.upstream import NomosClient

log = structlog.get_logger("tracker.poller")


Clock = Callable[[], datetime]
#: ``last_error_kind`` of a poll the tracker itself failed on.
INTERNAL = "internal"
#: ``poll_now`` polls and records this many orders at a time.
WINDOW = 256


class Poller:
    """Turns a claimed order into a :class:`PollOutcome`; it writes nothing itself."""

    def __init__(
        self,
        *,
        client: NomosClient,
        policy: PollingPolicy,
        clock: Clock,
        rng: random.Random,
        routes: Mapping[str, Sequence[str]] | None = None,
        failing_after: int | None = None,
        telemetry: Telemetry = SILENT,
    ) -> None:
        self._client = client
        self._telemetry = telemetry
        self._failing_after = failing_after
        self._policy = policy
        self._clock = clock
        self._rng = rng
        self._routes = routes or {}

    def reconfigure(
        self,
        *,
        policy: PollingPolicy,
        routes: Mapping[str, Sequence[str]],
        failing_after: int | None,
    ) -> None:
        """Poll under new settings from the next poll on; a poll in flight keeps the old."""
        self._policy, self._routes, self._failing_after = policy, routes, failing_after

    @property
    def pacer(self) -> Pacer:
        """The upstream client's pace: daemons share its budget and its pauses."""
        return self._client.pacer

    async def poll(self, claim: Claim) -> PollOutcome:
        """Fetch the order and decide; never raises.

        An upstream failure becomes a failed outcome; so does a bug met on this order
        (``poll_crashed``, with the traceback), recorded as kind ``internal`` and backed off,
        so that neither the order nor the worker polling it is lost.
        """
        with structlog.contextvars.bound_contextvars(order_id=claim.order_id):
            try:
                outcome = await self._poll(claim)
            except Exception as exc:
                log.exception("poll_crashed", order_id=claim.order_id)
                outcome = self._failed(
                    claim, INTERNAL, f"internal error: {type(exc).__name__}: {exc}"
                )
        if outcome.error_kind is not None:
            self._telemetry.polled(PollResult.FAILED)
        elif outcome.decision is not None and outcome.decision.store_snapshot:
            self._telemetry.polled(PollResult.CHANGED)
        else:
            self._telemetry.polled(PollResult.UNCHANGED)
        return outcome

    async def _poll(self, claim: Claim) -> PollOutcome:
        try:
            order = await self._client.fetch(claim.order_id)
        except UpstreamError as exc:
            retry_after = exc.retry_after if isinstance(exc, RateLimited) else None
            return self._failed(claim, exc.kind, exc.reason, exc.request_id, retry_after)
        now = self._clock()
        decision = decide(claim.status, claim.fingerprint, order)
        if decision.store_snapshot and not order.status_known:
            log.warning("unknown_status", status=order.status)
        if decision.store_snapshot and not order.provider_known:
            log.warning("unknown_provider", provider=order.provider)
        final_since = self._policy.final_since(claim.final_since, order.status, now)
        event: dict[str, Any] = {}
        if decision.change is not None:
            event = self._event(order, decision.change, now)
        alerts: tuple[Event, ...] = ()
        if self._failing_after and claim.consecutive_failures >= self._failing_after:
            recovered = alerts_.poll_recovered(
                order_id=claim.order_id,
                status=order.status,
                failures=claim.consecutive_failures,
                now=now,
                routes=self._routes,
            )
            alerts = (recovered,)
        return PollOutcome(
            claim=claim,
            polled_at=now,
            next_poll_at=self._policy.next_poll(now, order.status, self._rng),
            order=order,
            decision=decision,
            final_since=final_since,
            retire=decision.change is None and self._policy.should_retire(final_since, now),
            alerts=alerts,
            **event,
        )

    def _event(self, order: MeterOrder, change: StatusChange, now: datetime) -> dict[str, Any]:
        """A fresh event id, the body every sink gets, and the sinks whose patterns match."""
        event_id = alerts_.new_event_id()
        payload = event_body(
            event_id=event_id,
            order_id=order.id,
            from_status=change.from_status,
            to_status=change.to_status,
            detected_at=now,
            order_raw=order.raw,
        )
        sinks = route(self._routes, change.from_status, change.to_status)
        return {"event_id": event_id, "payload": payload, "sinks": sinks}

    def _failed(
        self,
        claim: Claim,
        kind: str,
        reason: str,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> PollOutcome:
        now = self._clock()
        failures = claim.consecutive_failures + 1
        next_poll_at = self._policy.retry_at(
            now, kind, failures, claim.status, self._rng, retry_after
        )
        log.warning(
            "poll_failed",
            kind=kind,
            reason=reason,
            request_id=request_id,
            failures=failures,
            retry_at=next_poll_at.isoformat(),
        )
        alerts: tuple[Event, ...] = ()
        if failures == self._failing_after:
            failing = alerts_.poll_failing(
                order_id=claim.order_id,
                status=claim.status,
                failures=failures,
                error_kind=kind,
                error=clip(reason),
                now=now,
                routes=self._routes,
            )
            alerts = (failing,)
        return PollOutcome(
            claim=claim,
            polled_at=now,
            next_poll_at=next_poll_at,
            error_kind=kind,
            error=clip(reason),
            alerts=alerts,
        )


def log_transitions(transitions: Sequence[Transition]) -> None:
    """One ``transition_detected`` line per stored transition."""
    for t in transitions:
        log.info(
            "transition_detected",
            order_id=t.order_id,
            event_id=t.event_id,
            from_status=t.from_status,
            to_status=t.to_status,
            kind=t.kind,
        )


async def poll_now(
    store: Store, poller: Poller, claims: Sequence[Claim], *, lease: timedelta | None = None
) -> AsyncIterator[tuple[list[PollOutcome], list[Transition]]]:
    """Poll the claimed orders concurrently (within the pace), ``WINDOW`` at a time.

    Each window's outcomes are recorded before they are yielded: memory stays flat however many
    orders are polled, and an interruption loses at most one window of polls. With ``lease``,
    the claims not yet recorded are renewed, however long polling them all takes.
    """
    held: HeldClaims[str] = HeldClaims(
        name="orders", lease=lease or timedelta(0), clock=utc_now, extend=store.extend_leases
    )
    held.take([claim.order_id for claim in claims])
    async with renewing(held) if lease is not None else contextlib.nullcontext():
        for start in range(0, len(claims), WINDOW):
            window = claims[start : start + WINDOW]
            outcomes = await asyncio.gather(*(poller.poll(claim) for claim in window))
            transitions = await store.record(outcomes)
            held.drop([claim.order_id for claim in window])
            log_transitions(transitions)
            yield outcomes, transitions
