"""Rows <-> dataclasses, in one place: which columns each domain value is read from.

One mechanism, :func:`mapper`: a dataclass is built from the row's columns of the same names,
and a field whose column differs (a renamed column, a packed body, a comma-joined list) names
how it is read. The column sets below are what each mapper reads.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import Any, TypeVar

from sqlalchemy import Row, func, select

from tracker.model import (
    Claim,
    DaemonRecord,
    Delivery,
    DeliveryState,
    Snapshot,
    Transition,
    WatchedOrder,
)
from tracker.store.packing import unpack_body
from tracker.store.tables import deliveries, events, transitions
from tracker.store.tables import watched_orders as w

D = TypeVar("D")
#: A row of any columns.
AnyRow = Row[*tuple[Any, ...]]
Mapper = Callable[[AnyRow], D]


def mapper(cls: type[D], /, **special: Callable[[AnyRow], Any]) -> Mapper[D]:
    """A function building ``cls`` from a row: each field from its column of the same name,
    except those in ``special``, each read by its function."""
    plain = tuple(f.name for f in fields(cls) if f.name not in special)  # type: ignore[arg-type]

    def from_row(row: AnyRow) -> D:
        columns = row._mapping
        values = {name: columns[name] for name in plain}
        for name, read in special.items():
            values[name] = read(row)
        return cls(**values)

    return from_row


def values(record: Any) -> dict[str, Any]:
    """A dataclass's fields as column values (the tables use the fields' names)."""
    return {f.name: getattr(record, f.name) for f in fields(record)}


#: What :data:`claim` reads: the order's state a poll starts from.
CLAIM_COLUMNS = (
    w.c.order_id,
    w.c.status,
    w.c.fingerprint,
    w.c.final_since,
    w.c.consecutive_failures,
    w.c.next_poll_at,
    w.c.customer,
    w.c.subscription,
)
#: What :data:`transition` reads.
TRANSITION_COLUMNS = (
    transitions.c.event_id,
    transitions.c.order_id,
    transitions.c.from_status,
    transitions.c.to_status,
    transitions.c.kind,
    transitions.c.skipped,
    transitions.c.detected_at,
    transitions.c.snapshot_id,
)
#: What :data:`delivery` reads: a delivery with the order its event is about.
DELIVERY_ROWS = (
    select(
        deliveries.c.event_id,
        func.coalesce(transitions.c.order_id, events.c.order_id, "").label("order_id"),
        deliveries.c.sink,
        deliveries.c.state,
        deliveries.c.attempts,
        deliveries.c.next_attempt_at,
        deliveries.c.last_attempt_at,
        deliveries.c.last_status,
        deliveries.c.last_error,
        deliveries.c.delivered_at,
    )
    .outerjoin(transitions, transitions.c.event_id == deliveries.c.event_id)
    .outerjoin(events, events.c.event_id == deliveries.c.event_id)
)

claim: Mapper[Claim] = mapper(Claim, due_at=lambda row: row.next_poll_at)
watched: Mapper[WatchedOrder] = mapper(WatchedOrder)
daemon: Mapper[DaemonRecord] = mapper(DaemonRecord)
delivery: Mapper[Delivery] = mapper(Delivery, state=lambda row: DeliveryState(row.state))
transition: Mapper[Transition] = mapper(
    Transition, skipped=lambda row: tuple(s for s in row.skipped.split(",") if s)
)


def snapshot(row: AnyRow) -> Snapshot:
    """A stored snapshot: the body unpacked once, its status and provider read from it."""
    raw = unpack_body(row.body)
    # The body was parsed and checked before it was stored: these fields are strings.
    body: Mapping[str, str] = json.loads(raw)
    return Snapshot(
        id=row.id,
        order_id=row.order_id,
        status=body["status"],
        provider=body["provider"],
        observed_at=row.observed_at,
        raw=raw,
    )
