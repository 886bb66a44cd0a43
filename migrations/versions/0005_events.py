"""events beside transitions: alerts and digests; the start of each order's stay in its status

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30

``events`` holds what is not a transition but goes through the outbox all the same: an order
stuck in its status, one whose polls keep failing and its recovery, and e-mail digests. Its
unique ``key`` makes each raised once, whichever daemon raises it. ``deliveries.event_id`` now
names a transition's or an event's id, so its foreign key to ``transitions`` goes.
``watched_orders.status_since`` is when the current status began and ``stuck_at`` when that
stay was reported stuck; the partial index on ``(status, status_since)`` of stays not reported
yet serves the stuck check, so its cost follows the orders that newly crossed a threshold.
Existing orders start their stay at their last transition, else at their first snapshot.
``transitions.detected_at`` gets an index: export and digests read the transitions of a period.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    sqlite = op.get_bind().dialect.name == "sqlite"
    time = sa.BigInteger() if sqlite else sa.DateTime(timezone=True)
    row_id = sa.Integer() if sqlite else sa.BigInteger()
    op.create_table(
        "events",
        sa.Column("id", row_id, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(length=40), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("order_id", sa.String(length=80), nullable=True),
        sa.Column("status", sa.String(length=64), nullable=True),
        sa.Column("raised_at", time, nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["watched_orders.order_id"],
            name=op.f("fk_events_order_id_watched_orders"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sa.UniqueConstraint("event_id", name=op.f("uq_events_event_id")),
        sa.UniqueConstraint("key", name=op.f("uq_events_key")),
    )
    op.create_index(op.f("ix_events_order_id_id"), "events", ["order_id", "id"], unique=False)
    op.create_index(op.f("ix_transitions_detected_at"), "transitions", ["detected_at"])
    with op.batch_alter_table("watched_orders") as batch_op:
        batch_op.add_column(sa.Column("status_since", time, nullable=True))
        batch_op.add_column(sa.Column("stuck_at", time, nullable=True))
    unreported = sa.text("stuck_at IS NULL")
    op.create_index(
        op.f("ix_watched_orders_status_status_since"),
        "watched_orders",
        ["status", "status_since"],
        postgresql_where=unreported,
        sqlite_where=unreported,
    )
    op.execute(
        """
        UPDATE watched_orders SET status_since = COALESCE(
            (SELECT MAX(t.detected_at) FROM transitions t
             WHERE t.order_id = watched_orders.order_id),
            (SELECT MIN(s.observed_at) FROM snapshots s
             WHERE s.order_id = watched_orders.order_id))
        WHERE status IS NOT NULL
        """
    )
    with op.batch_alter_table("deliveries") as batch_op:
        batch_op.drop_constraint("fk_deliveries_event_id_transitions", type_="foreignkey")


def downgrade() -> None:
    """Revert this revision (alert and digest deliveries go with their events)."""
    op.execute("DELETE FROM deliveries WHERE event_id IN (SELECT event_id FROM events)")
    with op.batch_alter_table("deliveries") as batch_op:
        batch_op.create_foreign_key(
            "fk_deliveries_event_id_transitions", "transitions", ["event_id"], ["event_id"]
        )
    op.drop_index(op.f("ix_watched_orders_status_status_since"), table_name="watched_orders")
    with op.batch_alter_table("watched_orders") as batch_op:
        batch_op.drop_column("stuck_at")
        batch_op.drop_column("status_since")
    op.drop_index(op.f("ix_transitions_detected_at"), table_name="transitions")
    op.drop_index(op.f("ix_events_order_id_id"), table_name="events")
    op.drop_table("events")
