"""organisation: the state of sweeps over the whole organisation, and an index for its passes

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-08

Watching by rule (``[watch] all``, ``customers``, …) reads the organisation's list: creation
sweeps for new orders and change sweeps for orders updated since the last one. They keep, between
runs and for every daemon and ``tracker status`` to read:

- ``sweep_state``: one row per name (``organisation``), its value the JSON of
  ``tracker.trust.SweepState``: the cursors, and whether change sweeps are trusted and why;
- ``watched_orders.passed_at``: the last poll by the schedule, not by a change sweep (whose
  items do not move an order's schedule either);
- ``ix_watched_orders_active_passed_at``: a full pass ends when no active order is left that was
  not polled by the schedule since it began, a question this index answers without reading
  every order.

Nothing to backfill: no row means nothing swept yet, and no ``passed_at`` means no pass yet.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tracker.store.tables import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "sweep_state",
        sa.Column("name", sa.String(40), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_sweep_state"),
    )
    with op.batch_alter_table("watched_orders") as batch:
        batch.add_column(sa.Column("passed_at", UTCDateTime(), nullable=True))
    op.create_index("ix_watched_orders_active_passed_at", "watched_orders", ["active", "passed_at"])


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index("ix_watched_orders_active_passed_at", table_name="watched_orders")
    with op.batch_alter_table("watched_orders") as batch:
        batch.drop_column("passed_at")
    op.drop_table("sweep_state")
