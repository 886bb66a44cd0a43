"""Alerts: an order stuck in its status, one that cannot be polled, and its recovery.

Each function builds the :class:`Event` (key, body, sinks); the store raises it once.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from tracker.model import Event, EventKind
from tracker.routing import route_event
from tracker.sinks.render import alert_body, duration, timestamp

Routes = Mapping[str, Sequence[str]]


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
