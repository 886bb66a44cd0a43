"""hints: the provider's webhooks of the last day, one row per event id

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30

``hints`` holds each webhook ``POST /hooks/nomos`` accepted: its unique ``event_id`` makes a
replay (the provider delivers at least once) recognised by every process on the database.
``pending`` marks a hint that arrived while a poll of its order was in flight; that poll's
record makes the order due again and clears it. Indexes, each for the query it serves:

- ``ix_hints_received_at``: pruning rows older than a day, oldest first;
- ``ix_hints_order_id_pending``: partial, only pending hints, so the look every recorded poll
  makes for them reads an index that is almost always empty.

Nothing to backfill: the table starts empty.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    sqlite = op.get_bind().dialect.name == "sqlite"
    time = sa.BigInteger() if sqlite else sa.DateTime(timezone=True)
    row_id = sa.Integer() if sqlite else sa.BigInteger()
    op.create_table(
        "hints",
        sa.Column("id", row_id, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("order_id", sa.String(length=80), nullable=False),
        sa.Column("received_at", time, nullable=False),
        sa.Column("pending", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hints")),
        sa.UniqueConstraint("event_id", name=op.f("uq_hints_event_id")),
    )
    op.create_index(op.f("ix_hints_received_at"), "hints", ["received_at"])
    pending = sa.text("pending")
    op.create_index(
        "ix_hints_order_id_pending",
        "hints",
        ["order_id"],
        postgresql_where=pending,
        sqlite_where=pending,
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index("ix_hints_order_id_pending", table_name="hints")
    op.drop_index(op.f("ix_hints_received_at"), table_name="hints")
    op.drop_table("hints")
