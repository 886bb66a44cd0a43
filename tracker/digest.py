"""Daily digests: an e-mail or chat sink with ``digest = "08:00 Europe/Berlin"`` gets one
message a day; with ``digest_report = "weekly"``, the one due on a Monday also carries the
report of the seven days before it (``tracker.insight.weekly_digest_report``).

The message holds the transitions since the sink's previous digest that its ``on`` patterns
match, grouped by order, and the orders stuck and failing at the time. Each digest is an event
with the key ``digest:SINK:DUE``, so it is raised once, by whichever daemon gets there first; a
daemon that was down across several due times raises one digest covering the whole gap. A
digest with nothing to say is stored all the same (the next one starts where it ended) but goes
to no sink: nothing is sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from tracker.alerts import new_event_id
from tracker.config import Settings
from tracker.config_sinks import DigestTime, MessageSinkSettings
from tracker.insight import weekly_digest_report
from tracker.model import Event, EventKind, Transition
from tracker.routing import matches
from tracker.shapes import DIGEST_KEYS, shown, timestamp
from tracker.sinks.render import digest_body
from tracker.store import Store

#: The ``kind`` of a digest's event.
DIGEST_KIND = EventKind.DIGEST.value
#: How long after its time a digest waits before it is raised. A poll detects a transition a
#: moment before its writer stores it; a minute lets one detected just before the time land
#: first, so it is in this digest rather than in none.
SETTLE = timedelta(minutes=1)
#: The period of a sink's first digest (no previous one to start from).
FIRST_PERIOD = timedelta(days=1)
#: Orders listed with their changes; more are counted, not listed, so a busy day stays one
#: readable message (``tracker export`` has them all).
MAX_ORDERS = 2000
#: Changes listed per order (one that flaps all day); more are counted.
MAX_MOVES = 10
#: Stuck orders, and failing ones, listed; more are counted.
MAX_LISTED = 500


def digest_key(sink: str, due: datetime) -> str:
    """``digest:SINK:2026-11-29T07:00:00.000000Z``: what makes a sink's digest for ``due`` once."""
    return f"{_prefix(sink)}{timestamp(due)}"


async def raise_due_digests(store: Store, settings: Settings, *, now: datetime) -> list[Event]:
    """Raise each digest sink's latest due digest that is not raised yet.

    Cheap when there is nothing to do: one lookup of a unique key per digest sink. Returns the
    digests this call stored; one with nothing to say has no sinks (nothing is sent).
    """
    raised: list[Event] = []
    for sink in settings.sinks:
        if not isinstance(sink, MessageSinkSettings) or (when := sink.digest_time()) is None:
            continue
        digest = await _due_digest(store, settings, sink, when, now)
        if digest is not None:
            raised += await store.events.raise_events([digest])
    return raised


@dataclass(slots=True)
class _Order:
    """One order's changes in the period: all counted, the first ``MAX_MOVES`` listed."""

    order_id: str
    changes: int = 0
    moves: list[dict[str, object]] = field(default_factory=list)


async def _due_digest(
    store: Store, settings: Settings, sink: MessageSinkSettings, when: DigestTime, now: datetime
) -> Event | None:
    """The digest due for ``sink`` at ``now``, or ``None`` when it is raised already."""
    due = when.last_due(now - SETTLE)
    key = digest_key(sink.name, due)
    if await store.events.has_event(key):
        return None
    previous = await store.events.latest_event_key(_prefix(sink.name))
    start = _due_of(sink.name, previous) if previous is not None else due - FIRST_PERIOD
    # A digest later than this one exists when the time of day was moved earlier: this due
    # is covered by it, and is marked so without a message.
    covered = start >= due
    start = min(start, due)
    data = {
        "sink": sink.name,
        "date": due.astimezone(when.zone).date().isoformat(),
        "period_start": timestamp(start),
        "period_end": timestamp(due),
        **(_NOTHING if covered else await _contents(store, settings, sink, start, due)),
        "report": None,
    }
    if not covered and sink.digest_report == "weekly" and _first_of_week(due, when):
        data["report"] = await weekly_digest_report(store, due, settings.alerts.stuck)
    says_something = data["changes"] or data["stuck_count"] or data["failing_count"]
    says_something = says_something or data["report"] is not None  # a quiet day's week
    event_id = new_event_id()
    return Event(
        event_id=event_id,
        key=key,
        kind=DIGEST_KIND,
        order_id=None,
        status=None,
        raised_at=now,
        payload=digest_body(event_id=event_id, raised_at=now, data=data),
        sinks=(sink.name,) if says_something else (),
    )


#: What a covered digest holds (a later one has the period): nothing.
_NOTHING: Mapping[str, object] = {
    "changes": 0,
    "order_count": 0,
    "orders": [],
    "stuck_count": 0,
    "stuck": [],
    "failing_count": 0,
    "failing": [],
}


async def _contents(
    store: Store, settings: Settings, sink: MessageSinkSettings, start: datetime, end: datetime
) -> dict[str, object]:
    """What a digest says about ``[start, end)``: the changes, the stuck and failing orders."""
    changes, order_count, orders = await _orders(store, sink, start, end)
    stuck_count, stuck = await store.reports.stuck_now(limit=MAX_LISTED)
    failing_after = settings.alerts.failing_after
    failing_count, failing = (
        (0, [])
        if failing_after is None
        else await store.reports.failing_now(at_least=failing_after, limit=MAX_LISTED)
    )
    return {
        "changes": changes,
        "order_count": order_count,
        "orders": [
            {"order_id": o.order_id, "changes": o.changes, "moves": o.moves} for o in orders
        ],
        "stuck_count": stuck_count,
        "stuck": [
            {"order_id": s.order_id, "status": s.status, "since": timestamp(s.since)} for s in stuck
        ],
        "failing_count": failing_count,
        "failing": [
            {
                "order_id": f.order_id,
                "status": f.status,
                "failures": f.consecutive_failures,
                "last_error_kind": f.last_error_kind,
                "last_error": f.last_error,
                "last_polled_at": timestamp(f.last_polled_at) if f.last_polled_at else None,
            }
            for f in failing
        ],
    }


async def _orders(
    store: Store, sink: MessageSinkSettings, start: datetime, end: datetime
) -> tuple[int, int, list[_Order]]:
    """The period's changes the sink's ``on`` matches: how many, in how many orders, and the
    first ``MAX_ORDERS`` orders with their changes. The rows are streamed, never all held."""
    changes = order_count = 0
    listed: list[_Order] = []
    current: _Order | None = None
    current_id: str | None = None
    async for move in store.reports.transitions_between(start, end):
        if not _wanted(sink.on, move):
            continue
        changes += 1
        if move.order_id != current_id:
            current_id, order_count = move.order_id, order_count + 1
            current = _Order(move.order_id) if len(listed) < MAX_ORDERS else None
            if current is not None:
                listed.append(current)
        if current is not None:
            current.changes += 1
            if len(current.moves) < MAX_MOVES:
                current.moves.append(shown(move, DIGEST_KEYS))
    return changes, order_count, listed


def _first_of_week(due: datetime, when: DigestTime) -> bool:
    """Whether ``due`` falls on a Monday in the digest's zone: that digest carries the week."""
    return due.astimezone(when.zone).weekday() == 0


def _wanted(patterns: Sequence[str], move: Transition) -> bool:
    return any(matches(pattern, move.from_status, move.to_status) for pattern in patterns)


def _prefix(sink: str) -> str:
    # Sink names cannot hold a colon, so one sink's prefix never starts another's keys.
    return f"{DIGEST_KIND}:{sink}:"


def _due_of(sink: str, key: str) -> datetime:
    """The due time at the end of one of the sink's digest keys."""
    return datetime.fromisoformat(key.removeprefix(_prefix(sink))).astimezone(UTC)
