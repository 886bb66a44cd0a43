"""Alerts: an order stuck in its status, one that cannot be polled, and its recovery.

Each function builds the :class:`Event` (key, body, sinks); the store raises it once.
:class:`StuckCheck` is the daemon's periodic look for stays past their status's threshold.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import structlog

from tracker.model import Event, EventKind
from tracker.outage import Outage
from tracker.routing import route_event
from tracker.sinks.render import alert_body, duration, timestamp
from tracker.store import Store
from tracker.supervision import guarded

log = structlog.get_logger("tracker.alerts")

Routes = Mapping[str, Sequence[str]]
#: Seconds between two stuck checks: a stay is reported within this of crossing its threshold.
STUCK_CHECK = 10.0
#: Stays reported per round: one query per status, one transaction in all.
STUCK_BATCH = 1000


def new_event_id() -> str:
    """A fresh, unguessable event id: ``evt_`` + 24 lower-case base32 characters."""
    return "evt_" + base64.b32encode(os.urandom(15)).decode().lower()


def stuck(
    *,
    order_id: str,
    status: str,
    since: datetime,
    threshold: timedelta,
    now: datetime,
    routes: Routes,
) -> Event:
    """``order_id`` has stayed in ``status`` since ``since``, longer than ``threshold``."""
    data = {
        "order_id": order_id,
        "status": status,
        "since": timestamp(since),
        "threshold": duration(threshold),
    }
    return _event(EventKind.STUCK, data, key_at=since, now=now, routes=routes)


def poll_failing(
    *,
    order_id: str,
    status: str | None,
    failures: int,
    error_kind: str,
    error: str,
    now: datetime,
    routes: Routes,
) -> Event:
    """``order_id``'s polls failed ``failures`` times in a row."""
    data = {
        "order_id": order_id,
        "status": status,
        "failures": failures,
        "last_error_kind": error_kind,
        "last_error": error,
        "detected_at": timestamp(now),
    }
    return _event(EventKind.POLL_FAILING, data, key_at=now, now=now, routes=routes)


def poll_recovered(
    *, order_id: str, status: str | None, failures: int, now: datetime, routes: Routes
) -> Event:
    """``order_id`` was polled again after ``failures`` failed polls in a row."""
    data = {
        "order_id": order_id,
        "status": status,
        "failures": failures,
        "detected_at": timestamp(now),
    }
    return _event(EventKind.POLL_RECOVERED, data, key_at=now, now=now, routes=routes)


def _event(
    kind: EventKind,
    data: Mapping[str, Any],
    *,
    key_at: datetime,
    now: datetime,
    routes: Routes,
) -> Event:
    """The event of ``kind`` about ``data``'s order; its key is the order and ``key_at``."""
    event_id = new_event_id()
    order_id, status = data["order_id"], data["status"]
    return Event(
        event_id=event_id,
        key=f"{kind.value}:{order_id}:{timestamp(key_at)}",
        kind=kind.value,
        order_id=order_id,
        status=status,
        raised_at=now,
        payload=alert_body(kind=kind.value, event_id=event_id, raised_at=now, data=data),
        sinks=route_event(routes, kind.value, status),
    )


class StuckCheck:
    """Reports every stay longer than its status's threshold, once (``meter_order.stuck``)."""

    def __init__(
        self,
        *,
        store: Store,
        clock: Callable[[], datetime],
        outage: Outage,
        stop: asyncio.Event,
        thresholds: Mapping[str, timedelta],
        routes: Routes,
        raised: Callable[[], None],
    ) -> None:
        self._store = store
        self._clock = clock
        self._outage = outage
        self._stop = stop
        self._thresholds = dict(thresholds)
        self._routes = routes
        #: Told when events for some sink were raised: the outbox sends them now.
        self._raised = raised

    def reconfigure(self, thresholds: Mapping[str, timedelta], routes: Routes) -> None:
        """Check against new thresholds and route to new sinks from the next round on."""
        self._thresholds, self._routes = dict(thresholds), routes

    async def run(self) -> None:
        """One check: rounds of :data:`STUCK_BATCH` stays per status until none is left."""
        if self._stop.is_set() or not self._thresholds:
            return
        await guarded(
            self._outage,
            self._rounds,
            doing="checking stuck orders",
            failed=lambda exc: log.error("stuck_check_failed", exc_info=exc),
        )

    async def _rounds(self) -> None:
        while not self._stop.is_set():
            now = self._clock()
            stays = await self._store.events.stuck(self._thresholds, now=now, limit=STUCK_BATCH)
            reports = [
                (
                    stay,
                    stuck(
                        order_id=stay.order_id,
                        status=stay.status,
                        since=stay.since,
                        threshold=self._thresholds[stay.status],
                        now=now,
                        routes=self._routes,
                    ),
                )
                for stay in stays
            ]
            raised = await self._store.events.report_stuck(reports)
            reported = {event.event_id for event in raised}
            for stay, event in reports:
                if event.event_id in reported:
                    log.warning(
                        "order_stuck",
                        order_id=stay.order_id,
                        status=stay.status,
                        since=stay.since.isoformat(),
                        event_id=event.event_id,
                    )
            if any(event.sinks for event in raised):
                self._raised()
            if not raised:
                break
