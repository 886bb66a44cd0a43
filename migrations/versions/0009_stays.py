"""stays: each order's stay in each status it was seen in, for the reports' durations

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-14

``stays`` holds one row per stay: the status, the provider of the snapshot that began it,
when it began (``started_at``: the transition into it; null for the first status seen, whose
stay began before watching did), when the tracker first saw it (``seen_at``), when it ended
(null while it lasts) and its length in microseconds when both ends are known. ``Polls.record``
keeps it in the transaction that stores a transition, so the reports read lengths rather than
pairing transitions up at every request.

Indexes, each for the query it serves:

- ``ix_stays_ended_at_status_provider_micros_next_status``: the finished stays of a period,
  grouped by status (and provider) and ranked by length, or counted by the status they led to
  (the flow), read from the index alone;
- ``ix_stays_status_started_at``: the entries into a status in a period (the weekly trend);
- ``ix_stays_order_id_status_started_at``: an order's current stay (closed by the next
  transition) and its first entries into ``ordered`` and ``activated`` (lead times).

The backfill walks the orders in id order, a batch at a time: each order's first snapshot
starts a stay of unknown start, and each transition (in id order) ends the current stay and
starts the next, with the provider of the transition's snapshot (bodies unpacked here).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

from tracker.store.packing import unpack_body
from tracker.store.tables import MICROSECOND, UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

#: Orders read per batch: memory stays flat on a large database.
BATCH = 500
#: The provider column's width (``String(64)``): a longer value stays null, as the store writes.
WIDTH = 64

_orders = sa.table("watched_orders", sa.column("order_id", sa.String()))
_snapshots = sa.table(
    "snapshots",
    sa.column("id", sa.Integer()),
    sa.column("order_id", sa.String()),
    sa.column("observed_at", UTCDateTime()),
    sa.column("body", sa.LargeBinary()),
)
_transitions = sa.table(
    "transitions",
    sa.column("id", sa.Integer()),
    sa.column("order_id", sa.String()),
    sa.column("to_status", sa.String()),
    sa.column("detected_at", UTCDateTime()),
    sa.column("snapshot_id", sa.Integer()),
)
_stays = sa.table(
    "stays",
    sa.column("order_id", sa.String()),
    sa.column("status", sa.String()),
    sa.column("provider", sa.String()),
    sa.column("started_at", UTCDateTime()),
    sa.column("seen_at", UTCDateTime()),
    sa.column("ended_at", UTCDateTime()),
    sa.column("micros", sa.BigInteger()),
    sa.column("next_status", sa.String()),
)


def upgrade() -> None:
    """Apply this revision."""
    sqlite = op.get_bind().dialect.name == "sqlite"
    time = sa.BigInteger() if sqlite else sa.DateTime(timezone=True)
    row_id = sa.Integer() if sqlite else sa.BigInteger()
    op.create_table(
        "stays",
        sa.Column("id", row_id, autoincrement=True, nullable=False),
        sa.Column("order_id", sa.String(length=80), nullable=False),
        sa.Column("status", sa.String(length=64), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=True),
        sa.Column("started_at", time, nullable=True),
        sa.Column("seen_at", time, nullable=False),
        sa.Column("ended_at", time, nullable=True),
        sa.Column("micros", sa.BigInteger(), nullable=True),
        sa.Column("next_status", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["watched_orders.order_id"],
            name=op.f("fk_stays_order_id_watched_orders"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stays")),
    )
    _backfill(op.get_bind())
    op.create_index(
        op.f("ix_stays_ended_at_status_provider_micros_next_status"),
        "stays",
        ["ended_at", "status", "provider", "micros", "next_status"],
    )
    op.create_index(op.f("ix_stays_status_started_at"), "stays", ["status", "started_at"])
    op.create_index(
        op.f("ix_stays_order_id_status_started_at"),
        "stays",
        ["order_id", "status", "started_at"],
    )


def downgrade() -> None:
    """Revert this revision (the stays can be rebuilt from the transitions)."""
    op.drop_index(op.f("ix_stays_order_id_status_started_at"), table_name="stays")
    op.drop_index(op.f("ix_stays_status_started_at"), table_name="stays")
    op.drop_index(op.f("ix_stays_ended_at_status_provider_micros_next_status"), table_name="stays")
    op.drop_table("stays")


def _backfill(connection: sa.Connection) -> None:
    """Every order's stays from its first snapshot and its transitions, a batch at a time."""
    after = ""
    while True:
        ids = (
            connection.execute(
                sa.select(_orders.c.order_id)
                .where(_orders.c.order_id > after)
                .order_by(_orders.c.order_id)
                .limit(BATCH)
            )
            .scalars()
            .all()
        )
        if not ids:
            return
        rows = _stays_of(connection, ids)
        if rows:
            connection.execute(_stays.insert(), rows)
        after = ids[-1]


def _stays_of(connection: sa.Connection, ids: Sequence[str]) -> list[dict[str, Any]]:
    """The stays of the orders ``ids``, as rows to insert."""
    s, t = _snapshots, _transitions
    first_ids = sa.select(sa.func.min(s.c.id)).where(s.c.order_id.in_(ids)).group_by(s.c.order_id)
    firsts = connection.execute(
        sa.select(s.c.order_id, s.c.observed_at, s.c.body).where(s.c.id.in_(first_ids))
    ).all()
    moves = connection.execute(
        sa.select(t.c.order_id, t.c.to_status, t.c.detected_at, s.c.body)
        .join(s, s.c.id == t.c.snapshot_id)
        .where(t.c.order_id.in_(ids))
        .order_by(t.c.order_id, t.c.id)
    ).all()
    by_order: dict[str, list[tuple[str, datetime, bytes]]] = {}
    for move in moves:
        by_order.setdefault(move.order_id, []).append((move.to_status, move.detected_at, move.body))
    rows: list[dict[str, Any]] = []
    for first in firsts:
        fields = json.loads(unpack_body(first.body))
        current = _stay(first.order_id, fields, started=None, seen=first.observed_at)
        for to_status, at, body in by_order.get(first.order_id, []):
            rows.append(_ended(current, at, to_status))
            current = _stay(first.order_id, json.loads(unpack_body(body)), started=at, seen=at)
            current["status"] = to_status
        rows.append(current)
    return rows


def _stay(
    order_id: str, fields: dict[str, Any], *, started: datetime | None, seen: datetime
) -> dict[str, Any]:
    provider = fields.get("provider")
    return {
        "order_id": order_id,
        "status": str(fields.get("status")),
        "provider": provider if isinstance(provider, str) and 0 < len(provider) <= WIDTH else None,
        "started_at": started,
        "seen_at": seen,
        "ended_at": None,
        "micros": None,
        "next_status": None,
    }


def _ended(stay: dict[str, Any], at: datetime, to_status: str) -> dict[str, Any]:
    started = stay["started_at"]
    micros = None if started is None else (at - started) // MICROSECOND
    return {**stay, "ended_at": at, "micros": micros, "next_status": to_status}
