"""Standard Webhooks: signed POSTs of the stored event body."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping

import httpx

from tracker.config import WebhookSinkSettings
from tracker.errors import InvalidSignature
from tracker.model import DueDelivery, SendResult
from tracker.sinks.posting import Poster, gone_on_410


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
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = settings.name
        self._key = base64.b64decode(settings.secret.get_secret_value().removeprefix("whsec_"))
        self._poster = Poster(http, settings.url, deadline=deadline, never_retry=gone_on_410)
        self._clock = clock

    async def send(self, delivery: DueDelivery) -> SendResult:
        """POST once; 2xx is success, 410 asks us to stop, anything else is retried."""
        body = delivery.payload.encode()
        timestamp = int(self._clock())
        headers = {
            "webhook-id": delivery.event_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self._key, delivery.event_id, timestamp, body),
            "content-type": "application/json",
        }
        return await self._poster.post(body, headers)


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
