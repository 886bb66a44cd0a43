"""The order page's journey, field changes and alerts, shaped for its template.

The computing is done by the pure core (``tracker.journey``, ``tracker.field_changes``); this
module only words durations and merges the alerts into the timeline, so that ``pages.py`` stays
thin. Times stay datetimes: the template shows them through the pages' ``utc`` and ``ago``. Words
are English msgids (:class:`~tracker.text.Message`, or plain ones the template passes to
``translated``), said in the page's language by the template.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tracker.field_changes import Changes, changes
from tracker.journey import Journey, Leg, Place, Step, Visit, journey
from tracker.model import Snapshot
from tracker.store import Alert, History
from tracker.text import Message
from tracker.views import alert_dict, alert_words, span

#: How each place of a main-path step reads.
PLACE_WORDS = {
    Place.PASSED: "passed",
    Place.CURRENT: "current",
    Place.BEFORE_WATCHING: "before watching",
    Place.SKIPPED: "skipped",
    Place.AHEAD: "not reached",
}
#: What an alert's kind says in the timeline.
ALERT_TITLES = {
    "stuck": "Stuck",
    "poll_failing": "Polls failing",
    "poll_recovered": "Polled again",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class StepView:
    """A step as the page shows it."""

    status: str
    place: str
    place_words: str
    visits: int
    #: ``unknown``, ``3d 4h``, ``over 2d 1h`` (a stay of unknown length and known ones), or
    #: ``None`` for a step the order was never in.
    time: Message | None


@dataclass(frozen=True, slots=True, kw_only=True)
class LegView:
    """A visit of the route as the page shows it."""

    status: str
    started_at: datetime | None
    time: Message
    running: bool
    detour: bool


def time_text(step: Step) -> Message | None:
    """How long the order spent in ``step``, in words."""
    if step.unknown and not step.timed:
        return Message("unknown")
    if not step.visits:
        return None
    if step.unknown:
        return Message("over %(span)s", span=span(step.known))
    return Message(span(step.known))


def step_view(step: Step) -> StepView:
    """``step`` worded for the page."""
    return StepView(
        status=step.status,
        place=step.place.value,
        place_words=PLACE_WORDS[step.place],
        visits=step.visits,
        time=time_text(step),
    )


def leg_view(leg: Leg) -> LegView:
    """``leg`` worded for the page."""
    return LegView(
        status=leg.status,
        started_at=leg.started_at,
        time=Message("unknown") if leg.length is None else Message(span(leg.length)),
        running=leg.running,
        detour=leg.detour,
    )


def journey_context(visits: Sequence[Visit], now: datetime) -> dict[str, Any]:
    """The template's ``journey``: the main path, the detours taken and the route."""
    found: Journey = journey(visits, now)
    return {
        "main": [step_view(step) for step in found.main],
        "detours": [step_view(step) for step in found.detours],
        "route": [leg_view(leg) for leg in found.route],
        "current": found.current,
    }


def snapshot_changes(snapshots: Sequence[Snapshot]) -> dict[int, Changes]:
    """For each snapshot after the first, by id, what changed from the one before."""
    found: dict[int, Changes] = {}
    before: dict[str, Any] | None = None
    for snapshot in snapshots:
        body = json.loads(snapshot.raw)
        if before is not None:
            found[snapshot.id] = changes(before, body)
        before = body
    return found


def timeline(history: History, data: dict[str, Any]) -> list[dict[str, Any]]:
    """Snapshots and alerts oldest first: each snapshot with the transition it revealed (with
    its deliveries) and its field changes, each alert marked as one."""
    moves = {
        move.snapshot_id: shown
        for move, shown in zip(history.transitions, data["transitions"], strict=True)
    }
    diffs = snapshot_changes(history.snapshots)
    pairs = enumerate(zip(history.snapshots, data["snapshots"], strict=True))
    snaps = [
        (
            snapshot.observed_at,
            0,
            n,
            {
                "snapshot": shown,
                "transition": moves.get(snapshot.id),
                "changes": diffs.get(snapshot.id),
                "alert": None,
            },
        )
        for n, (snapshot, shown) in pairs
    ]
    alerts = [
        (alert.raised_at, 1, n, {"snapshot": None, "alert": _alert_view(alert)})
        for n, alert in enumerate(history.alerts)
    ]
    return [entry for *_key, entry in heapq.merge(snaps, alerts, key=lambda item: item[:3])]


def _alert_view(alert: Alert) -> dict[str, Any]:
    shown = alert_dict(alert)
    return {
        **shown,
        "raised_at": alert.raised_at,
        "title": ALERT_TITLES.get(alert.kind, alert.kind),
        "text": alert_words(alert.kind, alert.status, shown["details"]),
    }
