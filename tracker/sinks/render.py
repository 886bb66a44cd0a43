"""Event payloads and message texts, rendered from stored values only.

Pure: standard library only, no I/O.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from tracker.model import DueDelivery

EVENT_TYPE = "meter_order.status_changed"
TEST_EVENT_TYPE = "meter_order.test"
TEST_ORDER_ID = "prdo_test0000000000000000000"


def timestamp(moment: datetime) -> str:
    """``2026-11-29T12:00:00.123456Z``: UTC with microseconds, as the contract shows."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_body(
    *,
    event_id: str,
    order_id: str,
    from_status: str,
    to_status: str,
    detected_at: datetime,
    order_raw: str,
    event_type: str = EVENT_TYPE,
) -> str:
    """The webhook body of a transition; stored once so every attempt sends the same bytes."""
    body = {
        "type": event_type,
        "timestamp": timestamp(detected_at),
        "data": {
            "event_id": event_id,
            "order_id": order_id,
            "from_status": from_status,
            "to_status": to_status,
            "detected_at": timestamp(detected_at),
            "order": json.loads(order_raw),
        },
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def test_event(event_id: str, now: datetime) -> str:
    """The body of a clearly marked test event (type ``meter_order.test``)."""
    order = {
        "object": "meter_order",
        "id": TEST_ORDER_ID,
        "status": "checked",
        "provider": "test",
        "test": True,
    }
    return event_body(
        event_id=event_id,
        order_id=TEST_ORDER_ID,
        from_status="ordered",
        to_status="checked",
        detected_at=now,
        order_raw=json.dumps(order),
        event_type=TEST_EVENT_TYPE,
    )


def message_context(payload: str) -> dict[str, Any]:
    """What the e-mail templates see, taken from the stored event body."""
    body = json.loads(payload)
    data = body["data"]
    order = data.get("order") or {}
    return {
        "test": body.get("type") == TEST_EVENT_TYPE,
        "event_id": data["event_id"],
        "order_id": data["order_id"],
        "from_status": data["from_status"],
        "to_status": data["to_status"],
        "detected_at": data["detected_at"],
        "provider": order.get("provider", "unknown") if isinstance(order, dict) else "unknown",
        "order": order,
    }


def test_delivery(sink: str, now: datetime) -> DueDelivery:
    """A clearly marked test event (type ``meter_order.test``) for ``tracker sinks test``."""
    event_id = "evt_test" + now.strftime("%Y%m%d%H%M%S%f")
    return DueDelivery(
        id=0, event_id=event_id, sink=sink, attempts=0, payload=test_event(event_id, now)
    )
