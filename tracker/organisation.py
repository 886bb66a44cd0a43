"""Watching the organisation: orders found by rule, change sweeps, and whether to trust them.

With a ``[watch]`` rule (``all``, ``customers``, ``subscriptions``, ``products``), the oldest
daemon of a fleet reads the organisation's list every ``[polling] changes_every``:

- the first time, the whole list (newest first): every order matching a rule is watched (source
  ``rule``) and its item recorded as its first snapshot; a read cut by a stop goes on from its
  page at the next start;
- then a *creation sweep*: the orders created since the newest one seen
  (``filter[created_at][gte]``), the new ones matching a rule watched the same way;
- and a *change sweep*: the orders updated since the last one (``filter[updated_at][gte]``, from
  the newest ``updated_at`` seen, minus :data:`~tracker.trust.OVERLAP`); each item of a watched
  order is recorded exactly as a poll of it would be.

A sweep's cursor moves only when it read all its pages: one cut by a stop, a crash or an
upstream failure is asked again from the same place, and what it recorded is recorded once
(an unchanged order stores nothing). Whether change sweeps are trusted, and what that changes,
is :mod:`tracker.trust`'s: each change stored any other way is judged by it (:meth:`judge`).
Orders added by a rule stay watched when the rule is removed, until they retire after their
final status like any order (or are removed by hand).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta

import structlog

from tracker.config import Settings, WatchSettings
from tracker.discovery import LIST_REFUSED, claim_key, list_pages
from tracker.errors import MalformedAnswer, RequestRejected, UpstreamError
from tracker.model import MeterOrder
from tracker.poller import Poller
from tracker.store import PollOutcome, Store
from tracker.supervision import HeldClaims
from tracker.trust import OVERLAP, SweepState, Trust

log = structlog.get_logger("tracker.organisation")

#: The row the state is kept in.
STATE = "organisation"
#: How often sweeps run when change sweeps are off (new orders are still looked for).
NEW_ORDERS_EVERY = timedelta(minutes=1)
#: Pages one change or creation sweep may read; beyond, it is cut and asked again next time.
MAX_PAGES = 1_000
#: A first read of the whole list keeps where it stands every this many pages.
KEEP_EVERY = 20
#: Outcomes a sweep lets wait to be recorded before it reads its next page: the recorder
#: writes more slowly than pages arrive, and what waits is held in memory (with its claim).
BACKLOG = 1_000
#: How often a sweep looks whether the recorder caught up.
_BACKLOG_CHECK = 0.05
#: Far enough ahead that every watched order counts as due for a sweep's item.
_ANY_TIME = timedelta(days=365 * 100)
#: ``PollOutcome.via`` of a change sweep's items: not judged against change sweeps.
VIA_CHANGES = "changes"


def _moment(text: str) -> datetime | None:
    """An item's ``created_at`` or ``updated_at`` as a datetime; ``None`` if it is not one."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _product(order: MeterOrder) -> str | None:
    with contextlib.suppress(ValueError, AttributeError):
        value = json.loads(order.raw).get("product")
        return value if isinstance(value, str) else None
    return None


class Organisation:
    """The daemon's part that sweeps the organisation's list (see the module's docstring)."""

    def __init__(
        self,
        *,
        poller: Poller,
        store: Store,
        claims: HeldClaims[str],
        record: Callable[[PollOutcome], None],
        settings: Settings | None,
        clock: Callable[[], datetime],
        oldest: Callable[[], bool],
        stop: Callable[[], bool],
    ) -> None:
        self._poller = poller
        self._store = store
        self._claims = claims
        self._record = record
        self._settings = settings
        self._clock = clock
        self._oldest = oldest
        self._stopping = stop
        self._trust: Trust | None = None
        #: Whether this daemon sweeps (the oldest, with a rule): only then are changes judged.
        self._sweeping = False
        #: Trust was lost since the state was last saved: orders are made due again.
        self._lost = False
        #: List pages read.
        self.pages = 0
        self._busy = asyncio.Lock()

    @property
    def every(self) -> timedelta:
        """How often :meth:`run` is worth calling."""
        if self._settings is None:
            return NEW_ORDERS_EVERY
        changes = self._settings.polling.changes_every
        return changes if changes > timedelta(0) else NEW_ORDERS_EVERY

    def reconfigure(self, settings: Settings) -> None:
        """Sweep under new settings from the next run."""
        self._settings = settings
        if self._trust is not None:
            self._trust.trust_after = settings.polling.trust_after

    async def idle(self) -> None:
        """Wait for a round that runs to end (it stops after the page it is on); keep trust
        lost since (by a change judged after the last round)."""
        async with self._busy:
            if self._lost and self._trust is not None:
                await self._keep(self._trust)

    async def run(self) -> None:
        """One round: sweep if this daemon is the one to, then keep the state."""
        async with self._busy:
            await self._run()

    async def _run(self) -> None:
        settings = self._settings
        if settings is None or not settings.watch.rules or self._stopping():
            self._sweeping = False
            self._poller.reconcile(None)
            return
        trust = await self._load(settings)
        self._sweeping = self._oldest()
        # Before sweeping too: the orders a sweep records are scheduled by the mode as it is
        # (a first read of a trusted organisation must not make them all due in an interval).
        self._schedule(settings, trust)
        if self._sweeping:
            await self._sweep(settings, trust)
        self._schedule(settings, trust)

    def _schedule(self, settings: Settings, trust: Trust) -> None:
        """Polls go to ``reconcile`` while change sweeps are trusted, else by status."""
        self._poller.reconcile(settings.polling.reconcile if trust.state.trusted else None)

    async def _load(self, settings: Settings) -> Trust:
        """The state as kept (another daemon may have swept); this daemon's when it sweeps."""
        if self._trust is not None and self._sweeping:
            return self._trust
        state = SweepState.loads(await self._store.sweeps.load(STATE))
        seen = self._trust.seen if self._trust is not None else None
        self._trust = Trust(state, trust_after=settings.polling.trust_after)
        if seen is not None:
            self._trust.seen = seen
        if settings.polling.trust_after == 0 and not state.trusted and state.retry_at is None:
            state.trusted = True
            state.reason = "trusted without verification ([polling] trust_after = 0)"
        return self._trust

    async def _sweep(self, settings: Settings, trust: Trust) -> None:
        now = self._clock()
        try:
            if trust.state.created_cursor is None:
                await self._read_all(settings.watch, trust)
            else:
                await self._new_orders(settings.watch, trust)
                if settings.polling.changes_every > timedelta(0):
                    await self._changes(settings.watch, trust, started=now)
                await self._count_pass(trust)
        finally:
            await self._keep(trust)

    async def _keep(self, trust: Trust) -> None:
        now = self._clock()
        if self._lost:
            hurried = await self._store.sweeps.hurry(
                now=now, beyond=now + self._poller.policy.interval
            )
            log.info("full_passes_resumed", orders_due_now=hurried)
            self._lost = False
        await self._store.sweeps.save(STATE, trust.state.dumps(), now=now)

    async def _read_all(self, rules: WatchSettings, trust: Trust) -> None:
        """Read the whole list once, watching what the rules match; the cursors start here.

        A read cut by a stop goes on from the page it reached (kept every :data:`KEEP_EVERY`
        pages); one whose kept cursor the upstream refuses starts again from the top.
        """
        state = trust.state
        log.info("organisation_read_started", resumed=state.reading is not None)
        state.read_started = state.read_started or self._clock()
        read = 0
        try:
            pages = list_pages(self._poller.page, {}, start=state.reading)
            async with contextlib.aclosing(pages):
                async for page in pages:
                    read += 1
                    created, _updated = await self._take(page.items, rules, via="read")
                    if created is not None and (
                        state.newest_created is None or created > state.newest_created
                    ):
                        state.newest_created = created
                    state.reading = page.next_page
                    if page.next_page is None or self._stopping():
                        break
                    if read % KEEP_EVERY == 0:
                        await self._store.sweeps.save(STATE, state.dumps(), now=self._clock())
        except RequestRejected as exc:
            if state.reading is not None:  # the cursor kept expired: from the top next time
                log.warning("organisation_read_restarted", reason=exc.reason)
                state.reading = state.read_started = None
                return
            log.warning("organisation_read_failed", reason=exc.reason, pages=read)
            return
        except (MalformedAnswer, *LIST_REFUSED, UpstreamError) as exc:
            log.warning("organisation_read_failed", reason=exc.reason, pages=read)
            return
        if state.reading is None:
            # Changes made while the list was read are asked for from when it began.
            state.changes_cursor = state.read_started
            state.created_cursor = state.newest_created or state.read_started
            log.info("organisation_read_ended", pages=read)

    async def _new_orders(self, rules: WatchSettings, trust: Trust) -> None:
        """A creation sweep: the orders created since the newest one seen."""
        state = trust.state
        assert state.created_cursor is not None  # noqa: S101 - checked by the caller
        asked = state.created_cursor - OVERLAP
        filters = {"filter[created_at][gte]": _stamp(asked)}
        newest: datetime | None = None
        try:
            pages = list_pages(self._poller.page, filters, max_pages=MAX_PAGES)
            async with contextlib.aclosing(pages):
                async for page in pages:
                    fresh = [o for o in page.items if (_moment(o.created_at) or asked) >= asked]
                    created, _updated = await self._take(fresh, rules, via="new")
                    newest = max(filter(None, (newest, created)), default=None)
                    if len(fresh) < len(page.items) or self._stopping():
                        break  # newest first: the rest is older (the filter was ignored)
        except (MalformedAnswer, *LIST_REFUSED, UpstreamError) as exc:
            log.warning("creation_sweep_failed", reason=exc.reason)
            return
        if newest is not None and newest > state.created_cursor:
            state.created_cursor = newest

    async def _changes(self, rules: WatchSettings, trust: Trust, *, started: datetime) -> None:
        """A change sweep: the orders updated since the cursor, each recorded as a poll."""
        state = trust.state
        assert state.changes_cursor is not None  # noqa: S101 - set by the first read
        asked = state.changes_cursor - OVERLAP
        filters = {"filter[updated_at][gte]": _stamp(asked)}
        newest: datetime | None = None
        try:
            pages = list_pages(self._poller.page, filters, max_pages=MAX_PAGES)
            async with contextlib.aclosing(pages):
                async for page in pages:
                    older = [o for o in page.items if (_moment(o.updated_at) or asked) < asked]
                    for order in page.items:
                        trust.saw(order.id, order.fingerprint)
                    _created, updated = await self._take(page.items, rules, via=VIA_CHANGES)
                    if older:
                        self._ignored(trust, older[0], asked)
                        return
                    newest = max(filter(None, (newest, updated)), default=None)
                    if self._stopping():
                        return
        except (MalformedAnswer, *LIST_REFUSED, UpstreamError) as exc:
            log.warning("change_sweep_failed", reason=exc.reason)
            return
        trust.swept(started=started, newest=newest)

    def _ignored(self, trust: Trust, order: MeterOrder, asked: datetime) -> None:
        """A change sweep's page held an order updated before what it asked for."""
        reason = (
            f"the upstream ignores filter[updated_at][gte]: asked from {_stamp(asked)}, "
            f"it listed {order.id} updated at {order.updated_at}"
        )
        self._distrust(trust, reason, order_id=order.id, updated_at=order.updated_at)

    def _distrust(self, trust: Trust, reason: str, **fields: str) -> None:
        if trust.distrust(reason, now=self._clock()):
            log.warning(
                "updated_at_unreliable",
                reason=reason,
                then="full passes at the per-status intervals; trust is tried again in a day",
                **fields,
            )
            self._lost = True
        self._poller.reconcile(None)

    async def _count_pass(self, trust: Trust) -> None:
        """Begin a pass, or end one when every active order was polled since it began."""
        now = self._clock()
        began = trust.state.pass_started
        if trust.start_pass(now) or began is None:
            return
        if await self._store.sweeps.pass_done(began) and trust.pass_ended(now):
            log.info("change_sweeps_trusted", reason=trust.state.reason)

    async def _take(
        self, items: Sequence[MeterOrder], rules: WatchSettings, *, via: str
    ) -> tuple[datetime | None, datetime | None]:
        """Watch the items' orders that rules match and are new; record every watched one
        as a poll. The newest ``created_at`` and ``updated_at`` among the items."""
        self.pages += 1
        if not items:
            return None, None
        now = self._clock()
        listed: Mapping[str, MeterOrder] = {order.id: order for order in items}
        matching = [
            order.id
            for order in items
            if rules.matches(
                order.customer, order.subscription, _product(order) if rules.products else None
            )
        ]
        lease_until = self._claims.lease_until()
        added = await self._store.sweeps.watch_new(matching, now=now, lease_until=lease_until)
        if added:
            log.info("watched_by_rule", orders=len(added), via=via)
        claims = added + await self._store.polls.claim_listed(
            list(listed), now=now, until=now + _ANY_TIME, lease_until=lease_until
        )
        for claim in self._claims.take_fresh(claims, claim_key):
            outcome = self._poller.apply(claim, listed[claim.order_id])
            self._poller.count(outcome)
            if via == VIA_CHANGES and claim.due_at is not None:
                # A change sweep's item leaves the order's schedule as it was: full passes go on.
                outcome = dataclasses.replace(outcome, next_poll_at=claim.due_at)
            self._record(dataclasses.replace(outcome, via=via))
        created = max(filter(None, (_moment(o.created_at) for o in items)), default=None)
        updated = max(filter(None, (_moment(o.updated_at) for o in items)), default=None)
        await self._caught_up()
        return created, updated

    async def _caught_up(self) -> None:
        """Wait while more than :data:`BACKLOG` outcomes wait to be recorded (their claims are
        held until then): a read of a million orders keeps memory flat, and goes at the pace
        the database takes them, not the upstream's."""
        while len(self._claims) > BACKLOG and not self._stopping():  # noqa: ASYNC110 - no event
            await asyncio.sleep(_BACKLOG_CHECK)

    def judge(self, outcomes: Sequence[PollOutcome]) -> None:
        """Recorded outcomes: a change stored by anything but a change sweep, that change
        sweeps should have shown, makes them untrusted."""
        trust = self._trust
        if trust is None or not self._sweeping:
            return
        for outcome in outcomes:
            order, decision = outcome.order, outcome.decision
            if (
                outcome.via == VIA_CHANGES
                or order is None
                or decision is None
                or not decision.store_snapshot
                or outcome.claim.fingerprint is None  # a first snapshot changes nothing
            ):
                continue
            updated = _moment(order.updated_at)
            if updated is None:
                continue
            missed = trust.judge(
                order_id=order.id, updated_at=updated, fingerprint=order.fingerprint
            )
            if missed is not None:
                self._distrust(
                    trust,
                    missed.reason,
                    order_id=order.id,
                    updated_at=order.updated_at,
                    covered=_stamp(missed.covered),
                )
                return
