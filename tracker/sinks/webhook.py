"""Standard Webhooks: signed POSTs of the stored event body, or of a body a sink's own
template makes of it (``body_template``: the shape another service takes)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import jinja2

from tracker.clock import utc_now
from tracker.config_sinks import WebhookSinkSettings
from tracker.errors import InvalidSignature
from tracker.model import DueDelivery, SendResult
from tracker.sinks.posting import Poster, gone_on_410
from tracker.sinks.render import event_kind, order_url, sample_payload
from tracker.sinks.templating import compiled, environment


def sign(key: bytes, event_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.body``."""
    message = b"%s.%d.%s" % (event_id.encode(), timestamp, body)
    return "v1," + base64.b64encode(hmac.digest(key, message, hashlib.sha256)).decode()


class WebhookSink:
    """POSTs each event to ``url`` with Standard Webhooks headers, through a :class:`Poster`
    (one deadline per attempt, a bounded read of the answer)."""

    def __init__(
        self,
        settings: WebhookSinkSettings,
        http: httpx.AsyncClient,
        *,
        deadline: float,
        public_url: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = settings.name
        self._key = base64.b64decode(settings.secret.get_secret_value().removeprefix("whsec_"))
        self._poster = Poster(http, settings.url, deadline=deadline, never_retry=gone_on_410)
        self._clock = clock
        self._content_type = settings.content_type
        self._public_url = public_url
        self._template = (
            None if settings.body_template is None else _body_template(settings, public_url)
        )

    async def send(self, delivery: DueDelivery) -> SendResult:
        """POST once; 2xx is success, 410 asks us to stop, anything else is retried. A body
        template that fails on this event is a dead letter at once: a retry would fail alike."""
        if self._template is None:
            body = delivery.payload.encode()
        else:
            try:
                body = self._template.render(
                    body_context(delivery.payload, self._public_url)
                ).encode()
            except jinja2.TemplateError as exc:
                return SendResult(ok=False, error=f"body_template: {exc.message}", gone=True)
        timestamp = int(self._clock())
        headers = {
            "webhook-id": delivery.event_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self._key, delivery.event_id, timestamp, body),
            "content-type": self._content_type,
        }
        return await self._poster.post(body, headers)


def body_context(payload: str, public_url: str | None) -> dict[str, Any]:
    """What a ``body_template`` sees: the stored ``event`` (parsed), its ``kind`` (transition,
    stuck, poll_failing, poll_recovered) and the order's page (``order_url``, or ``None``)."""
    event = json.loads(payload)
    order_id = event.get("data", {}).get("order_id")
    return {
        "event": event,
        "kind": event_kind(payload),
        "order_url": order_url(public_url, order_id) if isinstance(order_id, str) else None,
    }


def _body_template(settings: WebhookSinkSettings, public_url: str | None) -> jinja2.Template:
    """The sink's body template, compiled and rendered once with a sample transition."""
    assert settings.body_template is not None  # noqa: S101 - only called with one
    folder = settings.body_template.parent
    sample = body_context(sample_payload("transition", utc_now()), public_url)
    return compiled(environment(str(folder)), settings.name, settings.body_template.name, sample)


def verify(
    key: bytes, headers: Mapping[str, str], body: bytes, *, now: float, tolerance: float = 300
) -> str:
    """Check Standard Webhooks headers as a receiver would; returns the event id."""
    event_id = headers.get("webhook-id", "")
    try:
        timestamp = int(headers.get("webhook-timestamp", ""))
    except ValueError:
        raise InvalidSignature("webhook-timestamp is missing or not a number") from None
    if abs(now - timestamp) > tolerance:
        raise InvalidSignature("webhook-timestamp is too far from now")
    expected = sign(key, event_id, timestamp, body).removeprefix("v1,")
    offered = [
        part.removeprefix("v1,")
        for part in headers.get("webhook-signature", "").split()
        if part.startswith("v1,")
    ]
    if not any(hmac.compare_digest(expected, candidate) for candidate in offered):
        raise InvalidSignature("no webhook-signature matches the body")
    return event_id
