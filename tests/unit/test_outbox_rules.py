"""Pure delivery rules: routing patterns, the backoff plan, the signature and the payload."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook

from tracker.errors import InvalidSignature
from tracker.routing import matches, route
from tracker.schedule import plan_delivery
from tracker.sinks.render import event_body, message_context
from tracker.sinks.webhook import sign, verify
from tracker.text import one_line

NOW = datetime(2026, 11, 29, 12, 0, 0, 123456, tzinfo=UTC)
BACKOFF = (timedelta(seconds=5), timedelta(minutes=5), timedelta(minutes=30))


class TestRouting:
    """`on` patterns: FROM->TO, each side a status or *."""

    @pytest.mark.parametrize(
        ("pattern", "source", "target", "expected"),
        [
            ("*", "ordered", "checked", True),
            ("*->*", "x", "y", True),
            ("*->blocked", "ordered", "blocked", True),
            ("*->blocked", "blocked", "ordered", False),
            ("ordered->*", "ordered", "in_review", True),
            ("ordered->checked", "ordered", "checked", True),
            ("ordered->checked", "waiting", "checked", False),
            ("*->cancelled", "ordered", "in_review", False),
        ],
    )
    def test_matches(self, pattern: str, source: str, target: str, expected: bool) -> None:
        """A FROM->TO pattern matches a status pair exactly, or any status where it says *."""
        assert matches(pattern, source, target) is expected

    def test_route_keeps_configuration_order_and_matches_nothing_when_nothing_matches(self) -> None:
        """Routing lists matching sinks in configuration order, and none when none matches."""
        sinks = {"ops": ("*",), "support": ("*->blocked", "*->cancelled"), "none": ("a->b",)}
        assert route(sinks, "ordered", "blocked") == ("ops", "support")
        assert route({"support": ("*->blocked",)}, "ordered", "checked") == ()
        assert route(sinks, "ordered", "in_review") == ("ops",)  # unknown statuses match *


class TestBackoffPlan:
    """Waits between attempts, Retry-After, dead-lettering, 410."""

    def test_schedule(self) -> None:
        """Failed attempts wait as the backoff says and the attempt after the last dead-letters."""
        assert plan_delivery(BACKOFF, 1, NOW, ok=True).state == "delivered"
        first = plan_delivery(BACKOFF, 1, NOW, ok=False)
        assert (first.state, first.next_attempt_at) == ("pending", NOW + timedelta(seconds=5))
        third = plan_delivery(BACKOFF, 3, NOW, ok=False)
        assert third.next_attempt_at == NOW + timedelta(minutes=30)
        assert plan_delivery(BACKOFF, 4, NOW, ok=False).state == "dead"

    def test_retry_after_wins_only_when_longer(self) -> None:
        """A Retry-After sets the next attempt only when it is longer than the backoff."""
        longer = plan_delivery(BACKOFF, 1, NOW, ok=False, retry_after=60)
        assert longer.next_attempt_at == NOW + timedelta(seconds=60)
        shorter = plan_delivery(BACKOFF, 2, NOW, ok=False, retry_after=1)
        assert shorter.next_attempt_at == NOW + timedelta(minutes=5)

    def test_gone_is_dead_at_once(self) -> None:
        """A gone receiver dead-letters the delivery at its first attempt."""
        assert plan_delivery(BACKOFF, 1, NOW, ok=False, gone=True).state == "dead"


class TestSignature:
    """Our signature is what the standardwebhooks package verifies."""

    def test_standardwebhooks_accepts_ours(self) -> None:
        """standardwebhooks verifies our signature; a changed body or old timestamp fails."""
        key = b"0123456789abcdef0123456789abcdef"
        secret = "whsec_" + base64.b64encode(key).decode()
        body = b'{"type":"meter_order.status_changed"}'
        timestamp = int(datetime.now(UTC).timestamp())
        headers = {
            "webhook-id": "evt_abc",
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(key, "evt_abc", timestamp, body),
        }
        assert Webhook(secret).verify(body, headers) == {"type": "meter_order.status_changed"}
        assert verify(key, headers, body, now=timestamp) == "evt_abc"
        with pytest.raises(InvalidSignature):
            verify(key, headers, body + b" ", now=timestamp)
        with pytest.raises(InvalidSignature):
            verify(key, headers, body, now=timestamp + 3600)


class TestPayload:
    """The contract's body, rendered from stored values."""

    def test_body_shape(self) -> None:
        """The body carries the type, UTC microsecond times and the order as stored."""
        raw = json.dumps(
            {
                "object": "meter_order",
                "id": "prdo_a",
                "provider": "metrify",
                "status": "checked",
                "extra": [1],
            }
        )
        body = json.loads(
            event_body(
                event_id="evt_1",
                order_id="prdo_a",
                from_status="ordered",
                to_status="checked",
                detected_at=NOW,
                order_raw=raw,
            )
        )
        assert body["type"] == "meter_order.status_changed"
        assert body["timestamp"] == "2026-11-29T12:00:00.123456Z"
        assert body["data"] == {
            "event_id": "evt_1",
            "order_id": "prdo_a",
            "from_status": "ordered",
            "to_status": "checked",
            "detected_at": "2026-11-29T12:00:00.123456Z",
            "order": json.loads(raw),
        }

    def test_message_context_and_header_safety(self) -> None:
        """Mail context values lose their line breaks, so no header can be injected."""
        raw = json.dumps({"provider": "metrify"})
        payload = event_body(
            event_id="evt_1",
            order_id="prdo_a",
            from_status="ordered",
            to_status="checked\r\nBcc: x@evil",
            detected_at=NOW,
            order_raw=raw,
        )
        context = message_context(payload)
        assert context["provider"] == "metrify"
        assert "\n" not in one_line(context["to_status"])
        assert "\r" not in one_line(context["to_status"])
