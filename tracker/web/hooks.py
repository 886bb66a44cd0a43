"""``POST /hooks/nomos``: the provider's webhooks about meter orders, taken as hints.

A hint says only that an order changed; the tracker never believes more than that. A valid
one about a watched order makes it due now, so it is polled within the normal pace and diffed
as always; its ``topic`` is logged, never stored as a status. The route exists only when
``[upstream] webhook_secret`` is set: without it ``/hooks/nomos`` answers 404, like any path
the tracker does not serve.

What is refused, with nothing changed and a ``hint_refused`` log line (the reason, never the
secret nor the signature; a flood of them is one line per minute with its count):

- 401: no ``X-Nomos-Signature``, a malformed one, a timestamp more than :data:`TOLERANCE`
  away from now (either way), or no ``v1`` signature that matches;
- 413: a body over :data:`MAX_BODY` bytes;
- 400: a body that is not JSON (or nested too deep); 422: JSON without an event ``id`` or a
  valid ``context.meter_order``;
- 429 with ``Retry-After``: an address whose signatures failed a few times of late is not
  checked again for a while (:class:`~tracker.web.throttle.Throttle`).

A replayed event id (the provider delivers at least once; several processes may serve this
address over one PostgreSQL database) is answered 202 and changes nothing: every process
remembers the event ids of the last day in the ``hints`` table. Hints about orders that are not
watched are answered 202 and not remembered, so signed floods about them grow nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any

import structlog
from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from tracker.clock import Clock, utc_now
from tracker.errors import InvalidOrderId, Refused
from tracker.model import validate_order_id
from tracker.store import Store
from tracker.web.auth import client_of
from tracker.web.bodies import bounded_body, error_body, parse_json
from tracker.web.metrics import Metrics
from tracker.web.throttle import Tally, Throttle

log = structlog.get_logger("tracker.web")

PATH = "/hooks/nomos"
HEADER = "x-nomos-signature"
#: Seconds a signature's timestamp may lie away from now, either way: room for the two clocks
#: and the provider's retries, and no more, so a captured request cannot be replayed later.
TOLERANCE = 300
#: Bytes a webhook's body may have: the provider's are a few hundred; nothing a caller sends
#: can hold more of the server's memory than this.
MAX_BODY = 64 * 1024
#: Characters the signature header may have: a timestamp and a handful of signatures (one per
#: secret the provider is rolling over).
MAX_HEADER = 1024
#: Digits of the timestamp: Unix seconds, good far beyond this century.
MAX_T_DIGITS = 12
#: A ``v1`` signature: the hex of an HMAC-SHA256.
SIGNATURE = re.compile(r"[0-9a-fA-F]{64}")
#: An event id (``evt_…``): what the ``hints`` table's column holds.
EVENT_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
#: Characters of a topic (or an offending value) written to the log.
MAX_LOGGED = 64


def hook_routes(
    *,
    store: Store,
    secret: SecretStr | None,
    clock: Clock = utc_now,
    metrics: Metrics | None = None,
    throttle: Throttle | None = None,
) -> list[BaseRoute]:
    """``POST /hooks/nomos`` over ``store``, verified with ``secret``; none without a secret.

    ``clock`` dates the hints and judges the signatures' timestamps; ``metrics`` (if any)
    counts each webhook in ``tracker_hints_total``; ``throttle`` counts failed signatures per
    address (the one the logins use, so a guesser at either waits at both).
    """
    if secret is None:
        return []
    hook = _Hook(
        store=store,
        key=secret.get_secret_value().encode(),
        clock=clock,
        metrics=metrics,
        throttle=throttle if throttle is not None else Throttle(),
    )
    return [Route(PATH, hook.receive, methods=["POST"])]


def signed_header(key: bytes, body: bytes, timestamp: int) -> str:
    """The ``X-Nomos-Signature`` the provider sends for ``body`` at ``timestamp`` (for tests,
    benchmarks and the simulator)."""
    digest = hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def parse_signature(header: str) -> tuple[str, list[str]]:
    """The timestamp (as sent) and the well-formed ``v1`` signatures of a header.

    Other schemes (``v0=…``) are skipped, as the provider may add them; a header without
    exactly one timestamp or without any well-formed ``v1`` is malformed.
    """
    if len(header) > MAX_HEADER:
        raise Refused(401, f"X-Nomos-Signature is longer than {MAX_HEADER} characters")
    stamps: list[str] = []
    signatures: list[str] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t":
            stamps.append(value)
        elif key == "v1" and SIGNATURE.fullmatch(value):
            signatures.append(value.lower())
    if len(stamps) != 1 or not (stamps[0].isascii() and stamps[0].isdigit()):
        raise Refused(401, "X-Nomos-Signature is malformed: expected one t=<unix seconds>")
    if len(stamps[0]) > MAX_T_DIGITS:
        raise Refused(401, "X-Nomos-Signature is malformed: t is not a Unix time in seconds")
    if not signatures:
        raise Refused(401, "X-Nomos-Signature is malformed: expected v1=<hex HMAC-SHA256>")
    return stamps[0], signatures


def verify(key: bytes, body: bytes, timestamp: str, signatures: list[str]) -> bool:
    """Whether any of ``signatures`` is HMAC-SHA256(key, "<timestamp>.<body>").

    Each is compared in constant time, and all are compared whichever matched: the time taken
    says nothing about how close a forgery came.
    """
    expected = hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    matched = False
    for signature in signatures:
        matched |= hmac.compare_digest(expected, signature)
    return matched


def parse_hint(body: bytes) -> tuple[str, str, str | None]:
    """The event id, the order id and the topic (``None`` if absent) of a webhook's body."""
    data: Any = parse_json(body, Refused)
    if not isinstance(data, dict):
        raise Refused(422, 'the body must be an object {"id": "evt_…", "context": {…}}')
    event_id = data.get("id")
    if not isinstance(event_id, str) or not EVENT_ID.fullmatch(event_id):
        raise Refused(422, f"id: expected an event id matching {EVENT_ID.pattern}")
    context = data.get("context")
    order_id = context.get("meter_order") if isinstance(context, dict) else None
    if not isinstance(order_id, str):
        raise Refused(422, 'context.meter_order: expected an order id, e.g. "prdo_…"')
    try:
        validate_order_id(order_id)
    except InvalidOrderId:
        raise Refused(
            422, f"context.meter_order: {_clip(order_id)!r} is not a valid order id"
        ) from None
    topic = data.get("topic")
    return event_id, order_id, _clip(topic) if isinstance(topic, str) else None


def _clip(value: str) -> str:
    """``value`` cut short for a log line or a message."""
    return value if len(value) <= MAX_LOGGED else value[: MAX_LOGGED - 3] + "..."


class _Hook:
    """The endpoint: verify, parse, hand the hint to the store, answer 202."""

    def __init__(
        self,
        *,
        store: Store,
        key: bytes,
        clock: Clock,
        metrics: Metrics | None,
        throttle: Throttle,
    ) -> None:
        self._store = store
        self._key = key
        self._clock = clock
        self._metrics = metrics
        self._throttle = throttle
        self._refused = Tally("hint_refused")

    def _count(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.hinted(result)

    async def receive(self, request: Request) -> Response:
        """Take one webhook (the module's docstring says what is refused, and how)."""
        client = client_of(request)
        try:
            event_id, order_id, topic = await self._admitted(request, client)
        except Refused as refused:
            self._count("refused")
            self._refused.add(client=client, status=refused.status, reason=refused.reason)
            headers = {"Retry-After": str(refused.retry_after)} if refused.retry_after else None
            # Answered here rather than raised: the app renders errors outside the API as pages,
            # and the provider reads JSON.
            return JSONResponse(
                error_body(refused.status, refused.reason), refused.status, headers=headers
            )
        outcome = await self._store.hints.hint(
            event_id=event_id, order_id=order_id, now=self._clock()
        )
        fields = {"event_id": event_id, "order_id": order_id, "topic": topic}
        if outcome == "replayed":
            self._count("replayed")
            log.info("hint_replayed", **fields)
        elif outcome == "ignored":
            self._count("ignored")
            log.info("hint_ignored", **fields, reason="the order is not watched (or not active)")
        else:
            self._count("accepted")
            log.info("hint_accepted", **fields, outcome=outcome)
        return JSONResponse({"status": "accepted"}, status_code=202)

    async def _admitted(self, request: Request, client: str) -> tuple[str, str, str | None]:
        """The verified hint, unless ``client`` failed too often of late (429); a failed
        signature counts against it."""
        wait = self._throttle.wait(client)
        if wait is not None:
            raise Refused(
                429, f"too many refused webhooks from this address; retry in {wait} s", wait
            )
        try:
            return await self._verified(request)
        except Refused as refused:
            if refused.status == 401:
                self._throttle.failed(client)
            raise

    async def _verified(self, request: Request) -> tuple[str, str, str | None]:
        """The hint a signed, fresh, well-formed request carries; else :class:`Refused`."""
        header = request.headers.get(HEADER)
        if header is None:
            raise Refused(401, "no X-Nomos-Signature header: the provider signs every webhook")
        timestamp, signatures = parse_signature(header)
        skew = int(timestamp) - self._clock().timestamp()
        if abs(skew) > TOLERANCE:
            raise Refused(
                401,
                f"the signature's timestamp is {skew:+.0f} s from now; at most {TOLERANCE} s",
            )
        body = await _body(request)
        if not verify(self._key, body, timestamp, signatures):
            raise Refused(401, "no v1 signature matches the body: check webhook_secret")
        return parse_hint(body)


async def _body(request: Request) -> bytes:
    """The request's body, at most :data:`MAX_BODY` bytes (413 past it)."""
    return await bounded_body(
        request, MAX_BODY, Refused(413, f"the body is larger than {MAX_BODY} bytes")
    )
