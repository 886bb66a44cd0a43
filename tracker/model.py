"""Domain values: the meter order as the upstream tells it, and what the tracker derives from it.

Pure: standard library only, no I/O.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tracker.errors import InvalidOrderId, MalformedAnswer
from tracker.lifecycle import Classification, is_known

#: ``prdo_`` followed by lower-case letters and digits (24 of them in every documented example).
ORDER_ID = re.compile(r"prdo_[a-z0-9]{1,64}")
#: The providers documented for API version ``2026-01-29.edison``.
KNOWN_PROVIDERS = frozenset({"energy-metering", "metrify", "inexogy"})
#: How deep an answer may nest. A meter order is one flat object; this leaves the provider room
#: for nested fields, while a stored body parses again anywhere, far from the stack's limit.
MAX_DEPTH = 32
#: The fields every meter order has, each with the most characters it may have: what the
#: narrowest column it lands in holds (``tracker/store/tables.py``), so that a value the
#: database would refuse is a malformed answer for its own order, found where it is parsed,
#: and never a failed write that takes a batch of other orders' results with it.
FIELD_LIMITS: Mapping[str, int] = {
    # watched_orders.subscription and .customer are String(80), like order ids.
    "subscription": 80,
    "customer": 80,
    # Kept only in the body, but a label of metrics and pages: an identifier like a status.
    "provider": 64,
    # watched_orders.status, transitions.from_status/to_status and events.status: String(64).
    "status": 64,
    # Kept only in the body; ISO 8601 with nanoseconds and an offset takes 35.
    "created_at": 64,
    "updated_at": 64,
}
#: What no field of a meter order may hold: it is an identifier or a timestamp, never free
#: text. C0 and C1 control characters and DEL (PostgreSQL refuses NUL in text, the others break
#: log lines, mail headers and terminals), lone surrogates (no UTF-8 encoding exists for them:
#: every driver refuses them), line and paragraph separators and the invisible direction
#: overrides (a status that reads as another on the support pages).
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def validate_order_id(order_id: str) -> str:
    """Return ``order_id`` if it has the documented shape, else raise :class:`InvalidOrderId`."""
    if not ORDER_ID.fullmatch(order_id):
        raise InvalidOrderId(
            f"invalid order id {order_id!r}: expected 'prdo_' followed by lower-case letters "
            "and digits, e.g. prdo_x83bmixgdcktlpxli778vvgo"
        )
    return order_id


def parse_json(body: bytes) -> Any:
    """Parse an upstream body, or raise :class:`MalformedAnswer`; nesting too deep is malformed.

    The body must be UTF-8 (RFC 8259): ``json.loads`` would also take UTF-16 and UTF-32 or a
    byte order mark, which the body kept as text (``MeterOrder.raw``) could not be read back as.
    """
    too_deep = MalformedAnswer(f"body is JSON nested deeper than {MAX_DEPTH} levels")
    try:
        data = json.loads(body.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedAnswer(f"body is not JSON: {exc}") from exc
    except RecursionError:
        # The parser recurses once per level: thousands of levels exhaust the stack.
        raise too_deep from None
    if _deeper_than(data, MAX_DEPTH):
        raise too_deep
    return data


def _check_storable(data: dict[str, Any]) -> None:
    """Raise :class:`MalformedAnswer` when the body holds a lone surrogate (``"\\ud800"``)
    anywhere, unknown fields included.

    Unknown fields are kept as the upstream sent them, inside the stored body and the events'
    JSON, where JSON escapes every control character; but a lone surrogate has no UTF-8 form, so
    neither the snapshot nor an event carrying the order could be written.
    """
    try:
        json.dumps(data, ensure_ascii=False).encode()
    except UnicodeEncodeError as exc:
        raise MalformedAnswer(
            f"the body holds a lone surrogate (U+{ord(exc.object[exc.start]):04X}), "
            "which has no UTF-8 form"
        ) from None


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` nests objects or arrays more than ``limit`` levels deep."""
    stack: list[tuple[Any, int]] = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


@dataclass(frozen=True, slots=True, kw_only=True)
class MeterOrder:
    """One meter order as the upstream answered it; ``raw`` is the body exactly as received."""

    id: str
    subscription: str
    customer: str
    provider: str
    status: str
    created_at: str
    updated_at: str
    raw: str

    @classmethod
    def from_json(cls, body: bytes, *, expected_id: str) -> MeterOrder:
        """Parse an upstream body strictly, or raise :class:`MalformedAnswer` saying why."""
        data = parse_json(body)
        if not isinstance(data, dict):
            raise MalformedAnswer(f"body is a JSON {type(data).__name__}, not an object")
        if data.get("object") != "meter_order":
            raise MalformedAnswer(f"object is {data.get('object')!r}, not 'meter_order'")
        if data.get("id") != expected_id:
            raise MalformedAnswer(f"id is {data.get('id')!r}, not the requested {expected_id!r}")
        return cls._parse(data, raw=body.decode())

    @staticmethod
    def item_id(data: Any) -> str:
        """The order id of one item of a list page, or :class:`MalformedAnswer` when the item
        is not a meter order at all (then the whole page is suspect, not one order)."""
        if not isinstance(data, dict):
            raise MalformedAnswer(f"an item is a JSON {type(data).__name__}, not an object")
        item_id = data.get("id")
        if not isinstance(item_id, str) or not ORDER_ID.fullmatch(item_id):
            raise MalformedAnswer(f"an item's id {str(item_id)[:40]!r} is not a meter order id")
        if data.get("object") != "meter_order":
            raise MalformedAnswer(f"object is {data.get('object')!r}, not 'meter_order'")
        return item_id

    @classmethod
    def from_item(cls, data: Any) -> MeterOrder:
        """Parse one item of a list page as strictly as an answer by id; its raw snapshot is
        the object as the list returned it."""
        cls.item_id(data)
        raw = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        return cls._parse(data, raw=raw)

    @classmethod
    def _parse(cls, data: dict[str, Any], *, raw: str) -> MeterOrder:
        if data.get("object") != "meter_order":
            raise MalformedAnswer(f"object is {data.get('object')!r}, not 'meter_order'")
        fields: dict[str, str] = {}
        for name, limit in FIELD_LIMITS.items():
            value = data.get(name)
            if not isinstance(value, str) or not value:
                raise MalformedAnswer(f"field {name!r} is missing or not a non-empty string")
            if len(value) > limit:
                raise MalformedAnswer(
                    f"field {name!r} has {len(value)} characters, more than {limit}"
                )
            if unsafe := _UNSAFE.search(value):
                raise MalformedAnswer(
                    f"field {name!r} holds U+{ord(unsafe.group()):04X}, a control character "
                    "or one that no identifier may hold"
                )
            fields[name] = value
        _check_storable(data)
        return cls(id=data["id"], raw=raw, **fields)

    @property
    def fingerprint(self) -> int:
        """A digest of the parsed fields: equal fingerprints mean nothing we track changed.

        The first 8 bytes of a BLAKE2b digest as a signed 64-bit integer (a BIGINT column).
        """
        text = "\x1f".join(
            (
                self.subscription,
                self.customer,
                self.provider,
                self.status,
                self.created_at,
                self.updated_at,
            )
        )
        digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
        return int.from_bytes(digest[:8], "big", signed=True)

    @property
    def status_known(self) -> bool:
        """Whether the status is one of the 14 documented ones."""
        return is_known(self.status)

    @property
    def provider_known(self) -> bool:
        """Whether the provider is one of the documented ones."""
        return self.provider in KNOWN_PROVIDERS


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusChange:
    """A status change found by comparing an answer with the last snapshot."""

    from_status: str
    to_status: str
    classification: Classification


@dataclass(frozen=True, slots=True, kw_only=True)
class Transition:
    """A stored status change with its stable event id."""

    event_id: str
    order_id: str
    from_status: str
    to_status: str
    kind: str
    skipped: tuple[str, ...]
    detected_at: datetime
    snapshot_id: int


class EventKind(enum.StrEnum):
    """Events other than transitions, each routed by its own ``on`` pattern."""

    STUCK = "stuck"
    POLL_FAILING = "poll_failing"
    POLL_RECOVERED = "poll_recovered"
    DIGEST = "digest"


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """An event that is not a transition (an alert), with its body and the sinks it goes to.

    ``key`` makes it once: a second raise of the same key (another daemon, a restart) is
    ignored.
    """

    event_id: str
    key: str
    kind: str
    order_id: str | None
    status: str | None
    raised_at: datetime
    payload: str
    sinks: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """A stored version of an order, kept because it differed from the one before."""

    id: int
    order_id: str
    status: str
    provider: str
    observed_at: datetime
    raw: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WatchedOrder:
    """An order the tracker watches, with its polling bookkeeping."""

    order_id: str
    active: bool
    source: str
    status: str | None
    added_at: datetime
    next_poll_at: datetime | None
    last_polled_at: datetime | None
    last_change_at: datetime | None
    consecutive_failures: int
    last_error_kind: str | None
    last_error: str | None
    retired_at: datetime | None
    removed_at: datetime | None
    #: The latest snapshot's customer and subscription; ``None`` before the first snapshot.
    customer: str | None = None
    subscription: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Claim:
    """What a poll needs to know of an order it is about to poll."""

    order_id: str
    status: str | None
    fingerprint: int | None
    final_since: datetime | None
    consecutive_failures: int
    #: When the order came due (``next_poll_at`` when claimed); ``None``: now.
    due_at: datetime | None = None
    #: The customer and subscription of its last snapshot (what list sweeps filter by).
    customer: str | None = None
    subscription: str | None = None


class DeliveryState(enum.StrEnum):
    """Where a delivery of one event to one sink stands."""

    #: Not yet delivered; attempted when ``next_attempt_at`` comes.
    PENDING = "pending"
    #: The sink accepted it.
    DELIVERED = "delivered"
    #: Every attempt failed (or the receiver answered 410 Gone); retried only by hand.
    DEAD = "dead"


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    """One event's delivery to one sink, as stored."""

    event_id: str
    order_id: str
    sink: str
    state: DeliveryState
    attempts: int
    next_attempt_at: datetime
    last_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    delivered_at: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class DueDelivery:
    """A delivery claimed for an attempt, with the event body to send."""

    id: int
    event_id: str
    sink: str
    attempts: int
    payload: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SendResult:
    """What one attempt got from the receiver."""

    ok: bool
    status: int | None = None
    error: str | None = None
    #: Seconds the receiver asked us to wait (``Retry-After``).
    retry_after: float | None = None
    #: The receiver asked us to stop for good (410 Gone).
    gone: bool = False


#: A daemon beats every ``HEARTBEAT``; one silent for ``STALE_AFTER`` is gone.
HEARTBEAT = timedelta(seconds=5)
STALE_AFTER = timedelta(seconds=30)


@dataclass(frozen=True, slots=True, kw_only=True)
class DaemonRecord:
    """A running daemon as registered in the database."""

    id: str
    host: str
    pid: int
    version: str
    started_at: datetime
    heartbeat_at: datetime
