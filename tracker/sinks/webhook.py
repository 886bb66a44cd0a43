"""Standard Webhooks: signed POSTs of the stored event body."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping

import httpx

from tracker.config import WebhookSinkSettings
from tracker.errors import InvalidSignature
from tracker.model import DueDelivery, SendResult
from tracker.text import one_line, retry_after

#: Bytes of a receiver's answer kept for the log; the rest is not read. A receiver answers
#: "ok" or a short error, and whatever it sends beyond that must not grow the daemon.
ANSWER_PREVIEW = 4096


def sign(key: bytes, event_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.body``."""
    message = b"%s.%d.%s" % (event_id.encode(), timestamp, body)
    return "v1," + base64.b64encode(hmac.digest(key, message, hashlib.sha256)).decode()


class WebhookSink:
    """POSTs each event to ``url`` with Standard Webhooks headers.

    One attempt (connect, send, answer) ends within ``deadline`` seconds in total, however
    slowly the receiver drips its answer, and reads at most :data:`ANSWER_PREVIEW` bytes of it.
    """

    def __init__(
        self,
        settings: WebhookSinkSettings,
        http: httpx.AsyncClient,
        *,
        deadline: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = settings.name
        self._url = settings.url
        self._key = base64.b64decode(settings.secret.get_secret_value().removeprefix("whsec_"))
        self._http = http
        self._deadline = deadline
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
        try:
            async with asyncio.timeout(self._deadline):
                response, answer = await self._post(body, headers)
        except (TimeoutError, httpx.TimeoutException):
            return SendResult(ok=False, error=f"timed out after {self._deadline:g} s")
        except httpx.TransportError as exc:
            return SendResult(ok=False, error=f"connection failed: {type(exc).__name__}: {exc}")
        status = response.status_code
        if 200 <= status < 300:
            return SendResult(ok=True, status=status)
        said = one_line(answer.decode("utf-8", "replace"))
        return SendResult(
            ok=False,
            status=status,
            error=f"HTTP {status}: {said}" if said else f"HTTP {status}",
            retry_after=retry_after(response.headers.get("retry-after")),
            gone=status == 410,
        )

    async def _post(self, body: bytes, headers: dict[str, str]) -> tuple[httpx.Response, bytes]:
        """POST and read the start of the answer; a longer answer's connection is dropped.

        The answer is read as it came, never inflated (requests ask for ``identity``).
        """
        async with self._http.stream("POST", self._url, content=body, headers=headers) as response:
            answer = b""
            async for chunk in response.aiter_raw():
                answer += chunk
                if len(answer) >= ANSWER_PREVIEW:
                    break
        return response, answer[:ANSWER_PREVIEW]


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
