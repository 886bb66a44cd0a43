"""Event payloads and message texts, rendered from stored values only.

Pure: standard library only, no I/O.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Any

from tracker.model import DueDelivery
from tracker.shapes import DIGEST_KEYS, WEBHOOK_KEYS, timestamp, transition_json
from tracker.text import human, one_line, week_label

EVENT_TYPE = "meter_order.status_changed"
TEST_EVENT_TYPE = "meter_order.test"
#: The ``type`` of each alert's body, by its kind (``EventKind``).
ALERT_TYPES = {
    "stuck": "meter_order.stuck",
    "poll_failing": "meter_order.poll_failing",
    "poll_recovered": "meter_order.poll_recovered",
}
#: The ``type`` of a daily digest's body (see ``tracker.digest``).
DIGEST_TYPE = "meter_order.digest"
TEST_ORDER_ID = "prdo_test0000000000000000000"


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
    data = transition_json(
        WEBHOOK_KEYS,
        event_id=event_id,
        order_id=order_id,
        from_status=from_status,
        to_status=to_status,
        detected_at=detected_at,
    )
    data["order"] = json.loads(order_raw)
    body = {"type": event_type, "timestamp": timestamp(detected_at), "data": data}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def duration(span: timedelta) -> str:
    """``P14D``, ``PT36H``, ``PT90S``: an ISO 8601 duration in its largest whole unit."""
    seconds = int(span.total_seconds())
    if seconds and seconds % 86400 == 0:
        return f"P{seconds // 86400}D"
    if seconds and seconds % 3600 == 0:
        return f"PT{seconds // 3600}H"
    if seconds and seconds % 60 == 0:
        return f"PT{seconds // 60}M"
    return f"PT{seconds}S"


def alert_body(*, kind: str, event_id: str, raised_at: datetime, data: Mapping[str, object]) -> str:
    """The webhook body of an alert: ``type``, ``timestamp`` and ``data`` like a transition's."""
    body = {
        "type": ALERT_TYPES[kind],
        "timestamp": timestamp(raised_at),
        "data": {"event_id": event_id, **data},
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


def alert_kind(payload: str) -> str | None:
    """The alert kind of a stored body (``stuck``, ...), or ``None`` for a transition."""
    body_type = json.loads(payload).get("type")
    return next((kind for kind, name in ALERT_TYPES.items() if name == body_type), None)


def alert_context(payload: str) -> dict[str, Any]:
    """What the alert e-mail templates see: the body's ``data`` and its ``kind``."""
    body = json.loads(payload)
    data = body["data"]
    return {
        "kind": alert_kind(payload),
        "event_id": data["event_id"],
        "order_id": data["order_id"],
        "status": data.get("status") or "unknown",
        "since": data.get("since", ""),
        "threshold": data.get("threshold", ""),
        "failures": data.get("failures", 0),
        "last_error": data.get("last_error") or "",
        "raised_at": body["timestamp"],
    }


def sample_alert(now: datetime, kind: str = "stuck") -> str:
    """An alert's body of ``kind``, to check the alert templates against at start."""
    data: dict[str, object] = {"order_id": TEST_ORDER_ID, "status": "waiting"}
    if kind == "stuck":
        data |= {"since": timestamp(now), "threshold": "P14D"}
    else:
        data |= {"failures": 5, "detected_at": timestamp(now)}
    if kind == "poll_failing":
        data |= {"last_error_kind": "server_error", "last_error": "HTTP 503: unavailable"}
    return alert_body(kind=kind, event_id="evt_sample", raised_at=now, data=data)


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


def digest_body(*, event_id: str, raised_at: datetime, data: Mapping[str, object]) -> str:
    """The stored body of a daily digest: ``type``, ``timestamp`` and ``data`` like an alert's."""
    body = {
        "type": DIGEST_TYPE,
        "timestamp": timestamp(raised_at),
        "data": {"event_id": event_id, **data},
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def is_digest(payload: str) -> bool:
    """Whether a stored body is a daily digest."""
    return bool(json.loads(payload).get("type") == DIGEST_TYPE)


def digest_context(payload: str) -> dict[str, Any]:
    """What the digest e-mail templates see: the body's ``data``, with what each list leaves out.

    Upstream values (statuses, errors) lose their line breaks and control characters, so that
    the text body keeps its layout; the HTML body escapes them as well (autoescape).
    """
    data = json.loads(payload)["data"]
    orders = [
        {
            "order_id": order["order_id"],
            "changes": order["changes"],
            "more": order["changes"] - len(order["moves"]),
            "moves": [
                {
                    "event_id": move["event_id"],
                    "from_status": one_line(move["from_status"]),
                    "to_status": one_line(move["to_status"]),
                    "kind": move["kind"],
                    "detected_at": move["detected_at"],
                }
                for move in order["moves"]
            ],
        }
        for order in data["orders"]
    ]
    stuck = [
        {"order_id": s["order_id"], "status": one_line(s["status"]), "since": s["since"]}
        for s in data["stuck"]
    ]
    failing = [
        {
            "order_id": f["order_id"],
            "status": one_line(f["status"] or "unknown"),
            "failures": f["failures"],
            "last_error_kind": f["last_error_kind"] or "",
            "last_error": one_line(f["last_error"] or "", 300),
            "last_polled_at": f["last_polled_at"] or "",
        }
        for f in data["failing"]
    ]
    day = date.fromisoformat(data["date"])
    return {
        "event_id": data["event_id"],
        "sink": data["sink"],
        "date": f"{day.day} {_MONTHS[day.month - 1]} {day.year}",
        "period_start": data["period_start"],
        "period_end": data["period_end"],
        "changes": data["changes"],
        "order_count": data["order_count"],
        "orders": orders,
        "orders_more": data["order_count"] - len(orders),
        "stuck": stuck,
        "stuck_count": data["stuck_count"],
        "stuck_more": data["stuck_count"] - len(stuck),
        "failing": failing,
        "failing_count": data["failing_count"],
        "failing_more": data["failing_count"] - len(failing),
        "report": _report_context(data.get("report")),
    }


#: The longest bar of a weekly report's table, in pixels (e-mail clients refuse images and
#: SVG; a table cell of a width draws the bar everywhere).
BAR_PX = 160


def _report_context(report: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A weekly report as the digest templates show it: durations in words, bars in pixels."""
    if report is None:
        return None
    longest = max((row["median_seconds"] for row in report["durations"]), default=0) or 1
    lead = report["lead_time"]
    return {
        "period_start": report["period_start"],
        "period_end": report["period_end"],
        "durations": [
            {
                "status": one_line(row["status"]),
                "count": row["count"],
                "median": human(row["median_seconds"]),
                "p90": human(row["p90_seconds"]),
                "bar": max(1, round(BAR_PX * row["median_seconds"] / longest)),
            }
            for row in report["durations"]
        ],
        "lead": None
        if lead is None
        else {
            "count": lead["count"],
            "median": human(lead["median_seconds"]),
            "p90": human(lead["p90_seconds"]),
        },
        "flow": [
            {
                "from_status": one_line(row["from"]),
                "to_status": one_line(row["to"]),
                "count": row["count"],
            }
            for row in report["flow"]
        ],
        "over_target": [
            {
                "status": one_line(row["status"]),
                "target": human(row["target_seconds"]),
                "count": row["count"],
                "over": row["over"],
                "percent": round(100 * row["share"]),
            }
            for row in report["over_target"]
        ],
        "weeks": [
            {
                "week": week_label(date.fromisoformat(row["week"])),
                "activated": row["activated"],
                "cancelled": row["cancelled"],
                "blocked": row["blocked"],
            }
            for row in report["weeks"]
        ],
    }


#: English month abbreviations, whatever the machine's locale (``%b`` follows it).
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def sample_digest(now: datetime) -> str:
    """A digest's body with every section filled, to check the digest templates against."""
    when = timestamp(now)
    data = {
        "sink": "sample",
        "date": now.date().isoformat(),
        "period_start": timestamp(now - timedelta(days=1)),
        "period_end": when,
        "changes": 3,
        "order_count": 2,
        "orders": [
            {
                "order_id": TEST_ORDER_ID,
                "changes": 2,
                "moves": [
                    transition_json(
                        DIGEST_KEYS,
                        event_id="evt_sample",
                        from_status="ordered",
                        to_status="checked",
                        kind="advance",
                        detected_at=when,
                    )
                ],
            }
        ],
        "stuck_count": 2,
        "stuck": [{"order_id": TEST_ORDER_ID, "status": "waiting", "since": when}],
        "failing_count": 2,
        "failing": [
            {
                "order_id": TEST_ORDER_ID,
                "status": None,
                "failures": 5,
                "last_error_kind": "server_error",
                "last_error": "HTTP 503: unavailable",
                "last_polled_at": when,
            }
        ],
    }
    data["report"] = _sample_report(now)
    return digest_body(event_id="evt_sample", raised_at=now, data=data)


def _sample_report(now: datetime) -> dict[str, object]:
    """A weekly report with every part filled, for :func:`sample_digest`."""
    return {
        "period_start": (now - timedelta(days=7)).date().isoformat(),
        "period_end": now.date().isoformat(),
        "durations": [
            {
                "status": "ordered",
                "provider": None,
                "count": 3,
                "median_seconds": 86_400.0,
                "p90_seconds": 172_800.0,
            },
        ],
        "lead_time": {
            "provider": None,
            "count": 2,
            "median_seconds": 1_209_600.0,
            "p90_seconds": 1_814_400.0,
            "bins": [0, 1, 1],
        },
        "flow": [{"from": "ordered", "to": "checked", "provider": None, "count": 3}],
        "over_target": [
            {
                "status": "ordered",
                "provider": None,
                "target_seconds": 604_800.0,
                "count": 3,
                "over": 1,
                "share": 0.3333,
            }
        ],
        "weeks": [{"week": "2026-11-30", "activated": 2, "cancelled": 0, "blocked": 1}],
    }


#: The kinds of event a chat message is about, each with a template of its own.
CHAT_KINDS = ("transition", "stuck", "poll_failing", "poll_recovered", "digest")


def event_kind(payload: str) -> str:
    """Which of :data:`CHAT_KINDS` a stored body is (a test event is a ``transition``)."""
    if is_digest(payload):
        return "digest"
    return alert_kind(payload) or "transition"


def order_url(public_url: str | None, order_id: str) -> str | None:
    """The order's page under ``[http] public_url``, or ``None`` when it is not set."""
    if not public_url:
        return None
    return f"{public_url.rstrip('/')}/orders/{urllib.parse.quote(order_id, safe='')}"


def chat_context(payload: str, public_url: str | None) -> tuple[str, dict[str, Any]]:
    """The kind of a stored body, and what its chat template sees: what the e-mail templates
    of that kind see, with ``public_url`` and each order's page (``order_url``, or ``url`` for
    an order listed in a digest; ``None`` without ``public_url``)."""
    kind = event_kind(payload)
    if kind == "digest":
        context = digest_context(payload)
        for section in ("orders", "stuck", "failing"):
            for order in context[section]:
                order["url"] = order_url(public_url, order["order_id"])
    else:
        context = message_context(payload) if kind == "transition" else alert_context(payload)
        context["order_url"] = order_url(public_url, context["order_id"])
    context["public_url"] = public_url
    return kind, context


def sample_payload(kind: str, now: datetime) -> str:
    """A body of each of :data:`CHAT_KINDS`, to check its chat template against at start."""
    if kind == "transition":
        return test_event("evt_sample", now)
    if kind == "digest":
        return sample_digest(now)
    return sample_alert(now, kind)


# ``timestamp`` lives in ``tracker.shapes`` beside the transition's shape; it stays importable
# from here, where the alerts and digests have always taken it.
__all__ = [
    "ALERT_TYPES",
    "CHAT_KINDS",
    "DIGEST_TYPE",
    "EVENT_TYPE",
    "TEST_EVENT_TYPE",
    "TEST_ORDER_ID",
    "alert_body",
    "alert_context",
    "alert_kind",
    "chat_context",
    "digest_body",
    "digest_context",
    "duration",
    "event_body",
    "event_kind",
    "is_digest",
    "message_context",
    "order_url",
    "sample_alert",
    "sample_digest",
    "sample_payload",
    "test_delivery",
    "test_event",
    "timestamp",
]
