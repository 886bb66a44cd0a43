"""A transition's outside shape: every key it is shown with, and how each value is written.

Pure: standard library only, no I/O.

Four readers see transitions: webhook receivers (the body's ``data``, fixed by the contract),
``tracker history --json`` with the API and the pages built on it, the daily digest, and
``tracker export`` (its NDJSON objects and CSV columns). Each sees a subset of the same keys, in
the order its readers already rely on: the ``*_KEYS`` tuples below name them, and
:func:`transition_json` writes any of them. The OpenAPI document takes each key's schema from
:data:`TRANSITION_SCHEMA`. What a reader sees beyond the transition (the webhook's ``order``, the
history's and the export's ``deliveries``) its writer adds after these keys.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from tracker.model import Transition

TransitionKey = Literal[
    "event_id", "order_id", "from_status", "to_status", "kind", "skipped", "detected_at"
]

#: Each key's JSON schema (for the OpenAPI document): what the value is, whoever shows it.
TRANSITION_SCHEMA: Mapping[TransitionKey, Mapping[str, Any]] = {
    "event_id": {"type": "string"},
    "order_id": {"type": "string"},
    "from_status": {"type": ["string", "null"]},
    "to_status": {"type": "string"},
    "kind": {"type": "string"},
    "skipped": {"type": "array", "items": {"type": "string"}},
    "detected_at": {"type": "string", "format": "date-time"},
}

#: The webhook body's ``data`` (then ``order``): the contract's keys, in the contract's order.
WEBHOOK_KEYS: tuple[TransitionKey, ...] = (
    "event_id",
    "order_id",
    "from_status",
    "to_status",
    "detected_at",
)
#: A transition in ``tracker history --json``, the API and the pages (then ``deliveries``).
HISTORY_KEYS: tuple[TransitionKey, ...] = (
    "event_id",
    "from_status",
    "to_status",
    "kind",
    "skipped",
    "detected_at",
)
#: A change listed in a daily digest (grouped under its order, so without the order id).
DIGEST_KEYS: tuple[TransitionKey, ...] = (
    "event_id",
    "from_status",
    "to_status",
    "kind",
    "detected_at",
)
#: A row of ``tracker export`` (then ``deliveries``): NDJSON keys and CSV columns, in order.
EXPORT_KEYS: tuple[TransitionKey, ...] = (
    "order_id",
    "from_status",
    "to_status",
    "kind",
    "skipped",
    "detected_at",
    "event_id",
)


def timestamp(moment: datetime) -> str:
    """``2026-11-29T12:00:00.123456Z``: UTC with microseconds, as the contract shows."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def transition_json(
    keys: Sequence[TransitionKey],
    *,
    event_id: str,
    order_id: str = "",
    from_status: str | None,
    to_status: str,
    kind: str = "",
    skipped: Sequence[str] = (),
    detected_at: datetime | str,
) -> dict[str, Any]:
    """A transition as JSON-ready data with ``keys``, in their order.

    ``detected_at`` as a datetime is written by :func:`timestamp`; as text (the database
    formats it for the export) it is taken as it is. ``order_id``, ``kind`` and ``skipped``
    may be left out by a writer whose keys do not hold them.
    """
    values: dict[str, Any] = {
        "event_id": event_id,
        "order_id": order_id,
        "from_status": from_status,
        "to_status": to_status,
        "kind": kind,
        "skipped": list(skipped),
        "detected_at": detected_at if isinstance(detected_at, str) else timestamp(detected_at),
    }
    return {key: values[key] for key in keys}


def shown(
    transition: Transition, keys: Sequence[TransitionKey], *, detected_at: str | None = None
) -> dict[str, Any]:
    """A stored transition as JSON-ready data with ``keys``; ``detected_at`` given as text
    replaces the :func:`timestamp` of the stored one."""
    return transition_json(
        keys,
        event_id=transition.event_id,
        order_id=transition.order_id,
        from_status=transition.from_status,
        to_status=transition.to_status,
        kind=transition.kind,
        skipped=transition.skipped,
        detected_at=transition.detected_at if detected_at is None else detected_at,
    )
