"""One poll of one order: fetch, compare with the last snapshot, and say what to store."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog

from tracker import alerts as alerts_
from tracker.clock import Clock, utc_now
from tracker.diff import decide
from tracker.discovery import LIST_REFUSED, list_pages
from tracker.errors import MalformedAnswer, Paused, RateLimited, UpstreamError, clip
from tracker.model import Claim, Event, MeterOrder, StatusChange, Transition
from tracker.pacing import Pacer
from tracker.routing import route
from tracker.schedule import PollingPolicy
from tracker.sinks.render import event_body
from tracker.store import PollOutcome, Store
from tracker.supervision import HeldClaims, renewing
from tracker.sweep import Batch, SweepPlanner, strays
from tracker.telemetry import SILENT, PollResult, Telemetry
from tracker.text import printable
from tracker.upstream import ListPage, NomosClient

log = structlog.get_logger("tracker.poller")


#: ``last_error_kind`` of a poll the tracker itself failed on.
INTERNAL = "internal"
#: ``poll_now`` polls and records this many orders at a time.
WINDOW = 256
#: Pages one sweep may take: ten times what a full batch is expected to need.
MAX_PAGES = 50
#: Requests one poll sends into 429s (each after the pause the one before set) before it fails.
RATE_LIMITED_TRIES = 3


def _nothing() -> None:
    """A callback with nothing to do."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Swept:
    """What one sweep learned: outcomes to record, and claims left to poll by id."""

    outcomes: list[PollOutcome]
    leftovers: list[Claim]
    pages: int


@dataclass(slots=True)
class _Reading:
    """What a sweep's pages have shown so far."""

    pages: int = 0
    items: int = 0
    #: The batch's orders found, by id.
    found: dict[str, MeterOrder] = field(default_factory=dict)
    #: The batch's orders whose items were malformed (``ListPage.refused``), by id.
    refused: set[str] = field(default_factory=set)

    def covers(self, wanted: Mapping[str, Claim]) -> bool:
        """Whether every wanted order was found or refused: no page more can tell more."""
        return len(self.found.keys() | self.refused) >= len(wanted)


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
        self._routes, self._failing_after = routes, failing_after
        self._policy = dataclasses.replace(policy, reconcile=self._policy.reconcile)

    def reconcile(self, every: timedelta | None) -> None:
        """Schedule every order's next poll ``every`` (change sweeps are trusted), or by the
        per-status intervals again (``None``)."""
        self._policy = dataclasses.replace(self._policy, reconcile=every)

    @property
    def policy(self) -> PollingPolicy:
        """The schedule polls are given now."""
        return self._policy

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
                outcome = self.failed(
                    claim, INTERNAL, f"internal error: {type(exc).__name__}: {exc}"
                )
        self.count(outcome)
        return outcome

    def count(self, outcome: PollOutcome) -> None:
        """Report one outcome to telemetry as a poll (by id, or from a list page)."""
        if outcome.error_kind is not None:
            self._telemetry.polled(PollResult.FAILED)
        elif outcome.decision is not None and outcome.decision.store_snapshot:
            self._telemetry.polled(PollResult.CHANGED)
        else:
            self._telemetry.polled(PollResult.UNCHANGED)

    async def sweep(self, batch: Batch, planner: SweepPlanner) -> Swept:
        """Learn the batch's orders from list pages; never raises.

        Each order found is decided exactly as if it had been polled by id. The orders the
        pages did not show come back as ``leftovers``, to be polled by id: orders whose
        customer changed, an order whose item was malformed (polled by id, its malformed
        answer fails it alone, as any), and every order not found when the upstream ignored the
        filter, sent a page that is not a list of meter orders, or refused the list (a 4xx,
        refused credentials included: a token may be allowed orders by id but not the list).
        A page the upstream failed to answer (5xx, timeout) fails the orders not yet found, as
        a failed poll would; a 429 is waited out as for a poll.
        """
        wanted = {claim.order_id: claim for claim in batch.claims}
        read = _Reading()
        failed: list[PollOutcome] = []
        try:
            await self._read(batch, planner, wanted, read)
        except MalformedAnswer as exc:
            log.warning("list_page_malformed", reason=exc.reason, request_id=exc.request_id)
        except LIST_REFUSED as exc:
            log.warning("list_unavailable", reason=exc.reason, request_id=exc.request_id)
            planner.unavailable()
        except UpstreamError as exc:
            retry_after = exc.retry_after if isinstance(exc, RateLimited) else None
            failed = [
                self.failed(claim, exc.kind, exc.reason, exc.request_id, retry_after)
                for order_id, claim in wanted.items()
                if order_id not in read.found
            ]
        except Exception:
            log.exception("sweep_crashed", orders=len(wanted))
        if read.pages and not planner.ignores(batch.field):
            planner.learn(values=len(batch.values), items=read.items)
        outcomes = [self.apply(wanted[order_id], order) for order_id, order in read.found.items()]
        outcomes += failed
        for outcome in outcomes:
            self.count(outcome)
        done = set(read.found) | {outcome.claim.order_id for outcome in failed}
        leftovers = [claim for order_id, claim in wanted.items() if order_id not in done]
        log.debug("swept", pages=read.pages, items=read.items, leftovers=len(leftovers))
        return Swept(outcomes=outcomes, leftovers=leftovers, pages=read.pages)

    async def _read(
        self, batch: Batch, planner: SweepPlanner, wanted: Mapping[str, Claim], read: _Reading
    ) -> None:
        """Read the batch's pages into ``read``: until the last, until every wanted order was
        found, or up to one whose filter was ignored.

        A page that fails to parse, or whose cursor leads back to an earlier page, raises
        :class:`MalformedAnswer`, and nothing of it is in ``read``.
        """
        pages = list_pages(self.page, batch.filters(), max_pages=MAX_PAGES)
        async with contextlib.aclosing(pages):
            async for page in pages:
                read.pages += 1
                if strays(batch, page.items):
                    self._filter_ignored(batch, planner, page)
                read.found.update((o.id, o) for o in page.items if o.id in wanted)
                self._refused(page, wanted, read)
                read.items += len(page.items) + len(page.refused)
                if read.covers(wanted) or planner.ignores(batch.field):
                    return

    @staticmethod
    def _refused(page: ListPage, wanted: Mapping[str, Claim], read: _Reading) -> None:
        """Note the wanted orders whose items on ``page`` were malformed: polled by id."""
        for order_id, reason in page.refused.items():
            if order_id in wanted and order_id not in read.refused:
                read.refused.add(order_id)
                log.warning(
                    "list_item_malformed",
                    order_id=order_id,
                    reason=reason,
                    request_id=page.request_id,
                    then="polled by id",
                )

    async def page(self, filters: Mapping[str, str], cursor: str | None) -> ListPage:
        """One list page; a 429 is waited out as for a poll."""
        for _ in range(RATE_LIMITED_TRIES - 1):
            try:
                return await self._client.list_page(filters, cursor)
            except Paused:
                raise
            except RateLimited as exc:
                log.info("list_rate_limited", retry_after=exc.retry_after)
        return await self._client.list_page(filters, cursor)

    @staticmethod
    def _filter_ignored(batch: Batch, planner: SweepPlanner, page: ListPage) -> None:
        """The page holds orders its filter should have kept out: stop trusting the filter."""
        if planner.ignores(batch.field):
            return
        planner.ignore(batch.field)
        log.warning(
            "list_filter_ignored",
            filter=f"filter[{batch.field}][in]",
            request_id=page.request_id,
            then="polls by id" if planner.field is None else f"filter[{planner.field}][in]",
        )

    async def _poll(self, claim: Claim) -> PollOutcome:
        try:
            order = await self._fetch(claim)
        except UpstreamError as exc:
            retry_after = exc.retry_after if isinstance(exc, RateLimited) else None
            return self.failed(claim, exc.kind, exc.reason, exc.request_id, retry_after)
        return self.apply(claim, order)

    async def _fetch(self, claim: Claim) -> MeterOrder:
        """The order as the upstream has it now.

        A 429 pauses every request (the pacer holds them all until its ``Retry-After`` ends),
        and this order is asked again right after that pause: the 429 was about the budget,
        not about the order. Only a run of them fails the poll.
        """

        def started() -> None:
            if claim.due_at is not None:
                self._telemetry.started_late((self._clock() - claim.due_at).total_seconds())

        for _ in range(RATE_LIMITED_TRIES - 1):
            try:
                return await self._client.fetch(claim.order_id, started=started)
            except Paused:
                raise
            except RateLimited as exc:
                log.info(
                    "poll_rate_limited", retry_after=exc.retry_after, request_id=exc.request_id
                )
                started = _nothing
        return await self._client.fetch(claim.order_id)

    def apply(self, claim: Claim, order: MeterOrder) -> PollOutcome:
        """What to store for ``order``, as the upstream answered it for ``claim``: by id, or as
        an item of a list page (the same diff, snapshot, event body, outbox rows and schedule).
        """
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

    def failed(
        self,
        claim: Claim,
        kind: str,
        reason: str,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> PollOutcome:
        """A failed poll of ``claim`` (logged ``poll_failed``): backed off by ``kind``, and
        raising ``poll_failing`` when it makes ``failing_after`` in a row."""
        now = self._clock()
        # Stored with the order: whatever a reason quotes, the database must take it.
        reason = storable(reason)
        failures = claim.consecutive_failures + 1
        next_poll_at = self._policy.retry_at(
            now, kind, failures, claim.status, self._rng, retry_after
        )
        log.warning(
            "poll_failed",
            order_id=claim.order_id,
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


def storable(text: str) -> str:
    """``text`` as every database's text column takes it: control characters (NUL among them)
    and lone surrogates written as escapes."""
    return printable(text).encode("utf-8", "backslashreplace").decode()


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
        name="orders", lease=lease or timedelta(0), clock=utc_now, extend=store.polls.extend_leases
    )
    held.take([claim.order_id for claim in claims])
    async with renewing(held) if lease is not None else contextlib.nullcontext():
        for start in range(0, len(claims), WINDOW):
            window = claims[start : start + WINDOW]
            outcomes = await asyncio.gather(*(poller.poll(claim) for claim in window))
            transitions = await store.polls.record(outcomes)
            held.drop([claim.order_id for claim in window])
            log_transitions(transitions)
            yield outcomes, transitions
