"""compact storage: packed bodies, integer fingerprints, integer times on SQLite

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30

What each table keeps after this revision, and why:

- ``snapshots`` keeps the upstream's body once, packed (``tracker.store.packing``: raw deflate
  against a preset dictionary, with a format byte). Its status, provider, upstream timestamp and
  fingerprint columns repeated what that body holds, and are dropped.
- ``watched_orders.fingerprint`` becomes a signed 64-bit integer: the first 8 bytes of the digest
  the hex text held, so every stored fingerprint still matches the next unchanged answer.
- On SQLite, every time becomes integer microseconds since the epoch (8 bytes, not 26 of text).
  PostgreSQL keeps ``timestamptz``.

Indexes, each for the queries it serves (all kept):

- ``ix_watched_orders_active_next_poll_at``: ``claim_due``, the active orders due first.
- ``ix_snapshots_order_id_id`` and ``ix_transitions_order_id_id``: ``history``, one order's
  timeline in order.
- ``uq_deliveries_event_id_sink``: one delivery per event and sink, and the join from an
  event to its deliveries.
- ``ix_deliveries_state_sink_next_attempt_at``: ``claim_deliveries``, one sink's due deliveries.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from alembic.operations import BatchOperations

from tracker.store.packing import pack_body

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

#: Rows rewritten per statement, so that memory stays flat on a large database.
BATCH = 1000
TIMES = {
    "watched_orders": (
        "added_at",
        "removed_at",
        "retired_at",
        "final_since",
        "next_poll_at",
        "leased_until",
        "last_polled_at",
        "last_success_at",
        "last_change_at",
    ),
    "snapshots": ("observed_at",),
    "transitions": ("detected_at",),
    "deliveries": (
        "created_at",
        "next_attempt_at",
        "leased_until",
        "last_attempt_at",
        "delivered_at",
    ),
}
NOT_NULL_TIMES = {"added_at", "observed_at", "detected_at", "created_at", "next_attempt_at"}


def upgrade() -> None:
    """Apply this revision."""
    connection = op.get_bind()
    with op.batch_alter_table("watched_orders") as batch_op:
        batch_op.add_column(sa.Column("fingerprint_new", sa.BigInteger(), nullable=True))
    _fingerprints_to_integers(connection)
    with op.batch_alter_table("snapshots") as batch_op:
        batch_op.add_column(sa.Column("body", sa.LargeBinary(), nullable=True))
    _pack_bodies(connection)
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        _times_to_microseconds(connection)
    with op.batch_alter_table("watched_orders") as batch_op:
        batch_op.drop_column("fingerprint")
        batch_op.alter_column("fingerprint_new", new_column_name="fingerprint")
        _retype_times(batch_op, "watched_orders", sqlite=sqlite)
    with op.batch_alter_table("snapshots") as batch_op:
        for column in (
            "status",
            "status_known",
            "provider",
            "provider_known",
            "upstream_updated_at",
            "fingerprint",
            "raw",
        ):
            batch_op.drop_column(column)
        batch_op.alter_column("body", existing_type=sa.LargeBinary(), nullable=False)
        _retype_times(batch_op, "snapshots", sqlite=sqlite)
    for table in ("transitions", "deliveries"):
        with op.batch_alter_table(table) as batch_op:
            _retype_times(batch_op, table, sqlite=sqlite)


def downgrade() -> None:
    """This revision is not reverted: restore the copy of the database taken before upgrading."""
    raise NotImplementedError(
        "revision 0003 packs stored bodies and shortens fingerprints and cannot be reverted; "
        "restore the copy of the database taken before upgrading"
    )


def _fingerprints_to_integers(connection: sa.Connection) -> None:
    orders = sa.table(
        "watched_orders",
        sa.column("order_id", sa.String()),
        sa.column("fingerprint", sa.String()),
        sa.column("fingerprint_new", sa.BigInteger()),
    )
    after = ""
    while True:
        rows = connection.execute(
            sa.select(orders.c.order_id, orders.c.fingerprint)
            .where(orders.c.order_id > after, orders.c.fingerprint.is_not(None))
            .order_by(orders.c.order_id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        connection.execute(
            orders.update()
            .where(orders.c.order_id == sa.bindparam("b_id"))
            .values(fingerprint_new=sa.bindparam("b_new")),
            [
                {
                    "b_id": row.order_id,
                    "b_new": int.from_bytes(bytes.fromhex(row.fingerprint)[:8], "big", signed=True),
                }
                for row in rows
            ],
        )
        after = rows[-1].order_id


def _pack_bodies(connection: sa.Connection) -> None:
    snapshots = sa.table(
        "snapshots",
        sa.column("id", sa.Integer()),
        sa.column("raw", sa.Text()),
        sa.column("body", sa.LargeBinary()),
    )
    after = 0
    while True:
        rows = connection.execute(
            sa.select(snapshots.c.id, snapshots.c.raw)
            .where(snapshots.c.id > after)
            .order_by(snapshots.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        connection.execute(
            snapshots.update()
            .where(snapshots.c.id == sa.bindparam("b_id"))
            .values(body=sa.bindparam("b_body")),
            [{"b_id": row.id, "b_body": pack_body(row.raw)} for row in rows],
        )
        after = rows[-1].id


def _times_to_microseconds(connection: sa.Connection) -> None:
    """SQLite's 'YYYY-MM-DD HH:MM:SS[.ffffff]' text (always UTC here) as integer microseconds."""
    for table, columns in TIMES.items():
        for column in columns:
            connection.execute(
                sa.text(
                    f'UPDATE {table} SET "{column}" = '  # noqa: S608 - names from TIMES only
                    f"CAST(strftime('%s', substr(\"{column}\", 1, 19)) AS INTEGER) * 1000000"
                    f" + CAST(substr(\"{column}\" || '.000000', 21, 6) AS INTEGER)"
                    f" WHERE typeof(\"{column}\") = 'text'"
                )
            )


def _retype_times(batch_op: BatchOperations, table: str, *, sqlite: bool) -> None:
    """Declare the converted SQLite columns as integers (nothing changes on PostgreSQL)."""
    if not sqlite:
        return
    for column in TIMES[table]:
        batch_op.alter_column(
            column,
            type_=sa.BigInteger(),
            existing_type=sa.DateTime(timezone=True),
            existing_nullable=column not in NOT_NULL_TIMES,
        )
