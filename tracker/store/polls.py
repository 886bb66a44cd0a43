"""Polling: claiming due orders behind a lease, and recording what each poll found."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    and_,
    bindparam,
    case,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    update,
)

from tracker.diff import Decision
from tracker.model import Claim, DeliveryState, Event, MeterOrder, StatusChange, Transition
from tracker.store import rows, stays
from tracker.store.events import raise_on
from tracker.store.hints import settle
from tracker.store.packing import pack_body
from tracker.store.rows import CLAIM_COLUMNS
from tracker.store.sql import Repository, chunks, lock_in_order
from tracker.store.tables import UTCDateTime, deliveries, snapshots, transitions
from tracker.store.tables import watched_orders as w

if TYPE_CHECKING:
    from tracker.store.sql import Conn

#: The width of ``watched_orders.customer`` and ``.subscription`` (``String(80)``, like order
#: ids): a longer value is not kept there (PostgreSQL would refuse the whole poll's write).
SEARCH_WIDTH = 80


@dataclass(frozen=True, slots=True, kw_only=True)
class PollOutcome:
    """The result of one poll, ready to be written in one transaction."""

    claim: Claim
    polled_at: datetime
    next_poll_at: datetime
    #: Set on success.
    order: MeterOrder | None = None
    decision: Decision | None = None
    #: Set when the status changed: the event's id, its body and the sinks it goes to.
    event_id: str | None = None
    payload: str | None = None
    sinks: tuple[str, ...] = ()
    final_since: datetime | None = None
    retire: bool = False
    #: Alerts this poll raised (failing, recovered): written only if its outcome lands.
    alerts: tuple[Event, ...] = ()
    #: Set on failure.
    error_kind: str | None = None
    error: str | None = None
    #: How the order was learned, for the trust in change sweeps (``tracker.organisation``):
    #: ``poll`` (by id or a sweep of due orders), or the organisation's ``read``, ``new`` or
    #: ``changes`` sweeps.
    via: str = "poll"

    @property
    def passes(self) -> bool:
        """Whether this poll counts towards a full pass: any but a change sweep's."""
        return self.via != "changes"


#: A poll's outcome lands only while its claim is still this store's (see ``Owner``).
_QUIET = (
    update(w)
    .where(w.c.order_id == bindparam("b_id"), w.c.leased_by == bindparam("b_owner"))
    .values(
        next_poll_at=bindparam("b_next"),
        last_polled_at=bindparam("b_at"),
        last_success_at=bindparam("b_at"),
        passed_at=func.coalesce(bindparam("b_passed", type_=UTCDateTime()), w.c.passed_at),
        leased_until=None,
        leased_by=None,
        consecutive_failures=0,
        last_error_kind=None,
        last_error=None,
        active=and_(w.c.active, bindparam("b_keep")),
        retired_at=bindparam("b_retired"),
    )
)
_FAILED = (
    update(w)
    .where(w.c.order_id == bindparam("b_id"), w.c.leased_by == bindparam("b_owner"))
    .values(
        next_poll_at=bindparam("b_next"),
        leased_until=None,
        leased_by=None,
        last_polled_at=bindparam("b_at"),
        passed_at=func.coalesce(bindparam("b_passed", type_=UTCDateTime()), w.c.passed_at),
        consecutive_failures=bindparam("b_failures"),
        last_error_kind=bindparam("b_kind"),
        last_error=bindparam("b_error"),
    )
)


class Polls(Repository):
    """Claims on watched orders (leases owned by this store) and the polls' outcomes."""

    async def claim_due(
        self,
        *,
        now: datetime,
        limit: int,
        lease_until: datetime,
        until: datetime | None = None,
        keyed: bool | None = None,
    ) -> list[Claim]:
        """Take up to ``limit`` due orders, oldest due first, hiding them until ``lease_until``.

        With ``until``, orders that come due by then are taken too (each claim says when).
        ``keyed`` takes only orders whose customer is known (a list sweep can find them), or
        with ``False`` only those whose customer is not.
        """
        due = (
            select(*CLAIM_COLUMNS)
            .where(
                w.c.active,
                w.c.next_poll_at <= (until or now),
                or_(w.c.leased_until.is_(None), w.c.leased_until <= now),
                *_keyed(keyed),
            )
            .order_by(w.c.next_poll_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return await self._claim(due, lease_until)

    async def claim_listed(
        self, order_ids: Sequence[str], *, now: datetime, until: datetime, lease_until: datetime
    ) -> list[Claim]:
        """Take those of ``order_ids`` (one list page's) that are watched, due by ``until``
        and not claimed by another poll: a discovery sweep learns them from the page."""
        listed = (
            select(*CLAIM_COLUMNS)
            .where(
                w.c.order_id.in_(order_ids),
                w.c.active,
                w.c.next_poll_at <= until,
                or_(w.c.leased_until.is_(None), w.c.leased_until <= now),
            )
            .with_for_update(skip_locked=True)
        )
        return await self._claim(listed, lease_until)

    async def unkeyed_due(self, *, now: datetime, limit: int) -> int:
        """How many due orders (``limit`` at most) have no known customer: never answered."""
        due = (
            select(w.c.order_id)
            .where(
                w.c.active,
                w.c.customer.is_(None),
                w.c.next_poll_at <= now,
                or_(w.c.leased_until.is_(None), w.c.leased_until <= now),
            )
            .limit(limit)
            .subquery()
        )
        async with self._engine.connect() as conn:
            return int(await conn.scalar(select(func.count()).select_from(due)) or 0)

    async def claim(self, order_ids: Sequence[str], *, lease_until: datetime) -> list[Claim]:
        """Take the given watched orders now, due or not (``tracker poll``)."""
        chosen = select(*CLAIM_COLUMNS).where(w.c.order_id.in_(order_ids), w.c.active)
        return await self._claim(chosen, lease_until)

    async def claim_all(self, *, lease_until: datetime) -> list[Claim]:
        """Take every active order (``tracker poll --all``)."""
        return await self._claim(select(*CLAIM_COLUMNS).where(w.c.active), lease_until)

    async def _claim(self, query: Any, lease_until: datetime) -> list[Claim]:
        async with self._engine.begin() as conn:
            claims = [rows.claim(row) for row in await conn.execute(query)]
            for chunk in chunks([c.order_id for c in claims]):
                await conn.execute(
                    update(w)
                    .where(w.c.order_id.in_(chunk))
                    .values(leased_until=lease_until, leased_by=self.owner)
                )
        return claims

    async def release(self, order_ids: Sequence[str]) -> None:
        """Hand claimed orders back unpolled; their schedule is unchanged."""
        order_ids = sorted(order_ids)
        async with self._engine.begin() as conn:
            await lock_in_order(conn, w.c.order_id, order_ids)
            for chunk in chunks(order_ids):
                await conn.execute(
                    update(w)
                    .where(w.c.order_id.in_(chunk), w.c.leased_by == self.owner)
                    .values(leased_until=None, leased_by=None)
                )

    async def extend_leases(self, order_ids: Sequence[str], *, lease_until: datetime) -> None:
        """Keep claims alive that are still queued or being polled (however long they wait).

        Their rows are locked in id order first, as :meth:`record` does (``lock_in_order``).
        """
        await self._extend(w.c.order_id, order_ids, lease_until)

    async def release_all(self) -> int:
        """Drop every lease: a starting daemon takes over what a crashed one had claimed."""
        async with self._engine.begin() as conn:
            taken = 0
            for table in (w, deliveries):
                result = await conn.execute(
                    update(table)
                    .where(table.c.leased_until.is_not(None))
                    .values(leased_until=None, leased_by=None)
                )
                taken += result.rowcount
        return taken

    async def record(self, outcomes: Sequence[PollOutcome]) -> list[Transition]:
        """Write poll outcomes in one transaction; returns the transitions stored.

        Orders are locked in id order first (``lock_in_order``); first snapshots with
        nothing else to write (a list's items just watched) are written a batch at a time.
        """
        quiet: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        stored: list[Transition] = []
        ordered = sorted(outcomes, key=lambda outcome: outcome.claim.order_id)
        firsts = [outcome for outcome in ordered if _first(outcome)]
        async with self._engine.begin() as conn:
            await lock_in_order(conn, w.c.order_id, [outcome.claim.order_id for outcome in ordered])
            if firsts:
                await _record_firsts(conn, firsts, self.owner)
            for outcome in ordered:
                if not _first(outcome):
                    stored += await _write(conn, outcome, self.owner, quiet=quiet, failed=failed)
            if quiet:
                await conn.execute(_QUIET, quiet)
            if failed:
                await conn.execute(_FAILED, failed)
            if outcomes:
                at = min(outcome.polled_at for outcome in outcomes)
                await settle(conn, [outcome.claim.order_id for outcome in outcomes], at=at)
        return stored


async def _write(
    conn: Conn,
    outcome: PollOutcome,
    owner: str,
    *,
    quiet: list[dict[str, Any]],
    failed: list[dict[str, Any]],
) -> list[Transition]:
    """Write one outcome now (a change, or anything with alerts), or add it to the ``quiet``
    or ``failed`` batch; the transitions it stored."""
    mine = {"b_owner": owner}
    stored: list[Transition] = []
    if outcome.decision is not None and outcome.decision.store_snapshot:
        landed, stored = await _record_change(conn, outcome, owner)
    elif outcome.alerts:  # written alone, to know whether its claim held
        statement, params = (
            (_FAILED, _failed_params(outcome))
            if outcome.error_kind is not None
            else (_QUIET, _quiet_params(outcome))
        )
        landed = (await conn.execute(statement, [params | mine])).rowcount == 1
    elif outcome.error_kind is not None:
        failed.append(_failed_params(outcome) | mine)
        return stored
    else:
        quiet.append(_quiet_params(outcome) | mine)
        return stored
    if landed and outcome.alerts:
        await raise_on(conn, outcome.alerts)
    return stored


def _first(outcome: PollOutcome) -> bool:
    """Whether ``outcome`` is an order's first snapshot, with no transition or alert."""
    decision = outcome.decision
    return (
        decision is not None
        and decision.store_snapshot
        and decision.change is None
        and outcome.order is not None
        and outcome.claim.status is None
        and outcome.claim.fingerprint is None
        and not outcome.alerts
    )


#: A first snapshot's order row, for :func:`_record_firsts` (the one the claim still holds).
_FIRST = (
    update(w)
    .where(
        w.c.order_id == bindparam("b_id"),
        w.c.leased_by == bindparam("b_owner"),
        w.c.fingerprint.is_(None),
    )
    .values(
        status_since=bindparam("b_at"),
        stuck_at=None,
        status=bindparam("b_status"),
        fingerprint=bindparam("b_fingerprint"),
        final_since=bindparam("b_final"),
        last_change_at=bindparam("b_at"),
        customer=bindparam("b_customer"),
        subscription=bindparam("b_subscription"),
        next_poll_at=bindparam("b_next"),
        leased_until=None,
        leased_by=None,
        last_polled_at=bindparam("b_at"),
        last_success_at=bindparam("b_at"),
        passed_at=func.coalesce(bindparam("b_passed", type_=UTCDateTime()), w.c.passed_at),
        consecutive_failures=0,
        last_error_kind=None,
        last_error=None,
        active=and_(w.c.active, bindparam("b_keep")),
        retired_at=bindparam("b_retired"),
    )
)


async def _record_firsts(conn: Conn, outcomes: Sequence[PollOutcome], owner: str) -> None:
    """Store the first snapshots of ``outcomes`` (see :func:`_first`) a batch at a time: those
    whose claims still hold (locked first), their order rows, snapshots and unknown-start stays.
    """
    held: set[str] = set()
    for ids in chunks([outcome.claim.order_id for outcome in outcomes]):
        held.update(
            await conn.scalars(
                select(w.c.order_id)
                .where(w.c.order_id.in_(ids), w.c.leased_by == owner, w.c.fingerprint.is_(None))
                .with_for_update()
            )
        )
    landing = [outcome for outcome in outcomes if outcome.claim.order_id in held]
    for batch in chunks(landing):
        rows = [(outcome, outcome.order) for outcome in batch if outcome.order is not None]
        await conn.execute(
            _FIRST,
            [
                _quiet_params(outcome)
                | {
                    "b_owner": owner,
                    "b_status": order.status,
                    "b_fingerprint": order.fingerprint,
                    "b_final": outcome.final_since,
                    "b_customer": _searchable(order.customer),
                    "b_subscription": _searchable(order.subscription),
                }
                for outcome, order in rows
            ],
        )
        await conn.execute(
            insert(snapshots),
            [
                {
                    "order_id": order.id,
                    "observed_at": outcome.polled_at,
                    "body": pack_body(order.raw),
                }
                for outcome, order in rows
            ],
        )
        await stays.begin_firsts(
            conn,
            [
                (order.id, order.status, order.provider, outcome.polled_at)
                for outcome, order in rows
            ],
        )


async def _record_change(
    conn: Conn, outcome: PollOutcome, owner: str
) -> tuple[bool, list[Transition]]:
    """Store a changed order's snapshot (and transition); ``False`` when its claim was lost."""
    order, decision, claim = outcome.order, outcome.decision, outcome.claim
    assert order is not None  # noqa: S101 - record() checked
    assert decision is not None  # noqa: S101 - record() checked
    # Only the poll that saw the previous fingerprint may write: a concurrent poll of the
    # same order (the daemon and `tracker poll`) must not store the same transition twice.
    same_base: ColumnElement[bool] = (
        w.c.fingerprint.is_(None)
        if claim.fingerprint is None
        else w.c.fingerprint == claim.fingerprint
    )
    new_status = w.c.status.is_distinct_from(order.status)
    updated = await conn.execute(
        update(w)
        .where(w.c.order_id == claim.order_id, w.c.leased_by == owner, same_base)
        .values(
            # A new status starts a new stay: its start, and not reported stuck yet.
            status_since=case(
                (new_status, literal(outcome.polled_at, UTCDateTime())), else_=w.c.status_since
            ),
            stuck_at=case((new_status, null()), else_=w.c.stuck_at),
            status=order.status,
            fingerprint=order.fingerprint,
            final_since=outcome.final_since,
            last_change_at=outcome.polled_at,
            # What ``q`` finds the order by, always the latest snapshot's.
            customer=_searchable(order.customer),
            subscription=_searchable(order.subscription),
            **_quiet_values(outcome),
        )
    )
    if updated.rowcount == 0:
        return False, []
    snapshot_id = (
        await conn.execute(
            insert(snapshots)
            .values(
                order_id=order.id,
                observed_at=outcome.polled_at,
                body=pack_body(order.raw),
            )
            .returning(snapshots.c.id)
        )
    ).scalar_one()
    change = decision.change
    if change is None and claim.status is None:  # the first snapshot: its stay's start unknown
        await stays.begin_first(
            conn,
            order_id=order.id,
            status=order.status,
            provider=order.provider,
            at=outcome.polled_at,
        )
    if change is None or outcome.event_id is None:
        return True, []
    await stays.move(
        conn, order_id=order.id, status=order.status, provider=order.provider, at=outcome.polled_at
    )
    return True, [await _record_transition(conn, outcome, change, outcome.event_id, snapshot_id)]


async def _record_transition(
    conn: Conn,
    outcome: PollOutcome,
    change: StatusChange,
    event_id: str,
    snapshot_id: int,
) -> Transition:
    """The transition a stored snapshot revealed, with its outbox rows, in the same transaction."""
    transition = Transition(
        event_id=event_id,
        order_id=outcome.claim.order_id,
        from_status=change.from_status,
        to_status=change.to_status,
        kind=change.classification.kind.value,
        skipped=tuple(change.classification.skipped),
        detected_at=outcome.polled_at,
        snapshot_id=snapshot_id,
    )
    await conn.execute(
        insert(transitions).values(
            event_id=transition.event_id,
            order_id=transition.order_id,
            from_status=transition.from_status,
            to_status=transition.to_status,
            kind=transition.kind,
            skipped=",".join(transition.skipped),
            detected_at=transition.detected_at,
            snapshot_id=snapshot_id,
            payload=outcome.payload,
        )
    )
    if outcome.sinks:
        # The outbox rows land in the same transaction as the transition: none can be lost.
        await conn.execute(
            insert(deliveries),
            [
                {
                    "event_id": transition.event_id,
                    "sink": sink,
                    "state": DeliveryState.PENDING,
                    "attempts": 0,
                    "created_at": outcome.polled_at,
                    "next_attempt_at": outcome.polled_at,
                }
                for sink in outcome.sinks
            ],
        )
    return transition


def _searchable(value: str) -> str | None:
    """``value`` if its column holds it whole, else ``None``: never cut, as a cut id could
    equal another's."""
    return value if len(value) <= SEARCH_WIDTH else None


def _quiet_values(outcome: PollOutcome) -> dict[str, Any]:
    return {
        "next_poll_at": outcome.next_poll_at,
        "leased_until": None,
        "leased_by": None,
        "last_polled_at": outcome.polled_at,
        "last_success_at": outcome.polled_at,
        "passed_at": outcome.polled_at if outcome.passes else w.c.passed_at,
        "consecutive_failures": 0,
        "last_error_kind": None,
        "last_error": None,
        "active": and_(w.c.active, literal(not outcome.retire)),
        "retired_at": outcome.polled_at if outcome.retire else None,
    }


def _quiet_params(outcome: PollOutcome) -> dict[str, Any]:
    return {
        "b_id": outcome.claim.order_id,
        "b_next": outcome.next_poll_at,
        "b_at": outcome.polled_at,
        "b_passed": outcome.polled_at if outcome.passes else None,
        "b_keep": not outcome.retire,
        "b_retired": outcome.polled_at if outcome.retire else None,
    }


def _failed_params(outcome: PollOutcome) -> dict[str, Any]:
    return {
        "b_id": outcome.claim.order_id,
        "b_next": outcome.next_poll_at,
        "b_at": outcome.polled_at,
        "b_passed": outcome.polled_at if outcome.passes else None,
        "b_failures": outcome.claim.consecutive_failures + 1,
        "b_kind": outcome.error_kind,
        "b_error": outcome.error,
    }


def _keyed(keyed: bool | None) -> list[Any]:
    """The condition of :meth:`Polls.claim_due`'s ``keyed``."""
    if keyed is None:
        return []
    return [w.c.customer.is_not(None) if keyed else w.c.customer.is_(None)]
