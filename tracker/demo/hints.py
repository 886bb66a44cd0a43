"""Provider-style webhooks ("hints") about meter orders, signed as the Nomos API signs them.

The body is ``{"id": "evt_…", "timestamp": …, "topic": …, "context": {"meter_order": …}}``; the
header ``X-Nomos-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>``.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass

import httpx

from tracker.web.hooks import signed_header

#: Seconds a hint receiver may take to answer; a hint is a nudge, a slow receiver just misses it.
HINT_TIMEOUT = 5.0
#: The provider's webhook topic (``2026-05-27.curie`` milestones) for a change to each status.
HINT_TOPICS = {
    "intended": "meter_order.created",
    "waiting": "meter_order.created",
    "ordered": "meter_order.placed",
    "checked": "meter_order.check_reviewed",
    "installation_planning": "meter_order.check_reviewed",
    "installation_scheduled": "meter_order.scheduled",
    "installation_waiting": "meter_order.scheduled",
    "installation_finished": "meter_order.installed",
    "installed": "meter_order.installed",
    "pre_installed": "meter_order.installed",
    "activated": "meter_order.activated",
    "cancelled": "meter_order.cancelled",
    "blocked": "meter_order.blocked",
    "blocked_wim": "meter_order.blocked",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class HintTarget:
    """Where the simulator POSTs its provider-style webhooks, and the secret that signs them."""

    url: str
    secret: str


def signed_hint(
    secret: str, order: str, status: str, timestamp: int
) -> tuple[bytes, dict[str, str]]:
    """A provider-style webhook about ``order`` now in ``status``: its body and headers."""
    body = json.dumps(
        {
            "id": "evt_" + secrets.token_hex(12),
            "timestamp": timestamp,
            "topic": HINT_TOPICS.get(status, "meter_order.updated"),
            "context": {"meter_order": order},
        }
    ).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Nomos-Signature": signed_header(secret.encode(), body, timestamp),
    }
    return body, headers


async def send_hint(
    http: httpx.AsyncClient, target: HintTarget, order: str, status: str, timestamp: int
) -> str | None:
    """POST one signed hint; ``None`` when the receiver took it (2xx), else why not."""
    body, headers = signed_hint(target.secret, order, status, timestamp)
    try:
        answer = await http.post(target.url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None if answer.is_success else f"HTTP {answer.status_code}"
