"""board indexes: the support board's counts read from indexes, not by scanning every order

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07

The board shows, at every load and every refresh, the active orders per status, the failing
ones, the stuck ones and the last successful poll. Each was a scan of ``watched_orders``; at
100,000 orders the board took a quarter of a second. Indexes, each for the query it serves:

- ``ix_watched_orders_active_status``: the active orders counted per status, from the index;
- ``ix_watched_orders_active_consecutive_failures_order_id``: the failing orders (a range of
  the active ones with one failure or more), longest streak first;
- ``ix_watched_orders_active_stuck_at_status_since_order_id``: the stuck orders (the active
  ones with ``stuck_at`` set), counted and listed longest stay first;
- ``ix_watched_orders_last_success_at``: the last successful poll, the index's last entry.

Nothing to backfill: an index is built from the rows it covers.
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

INDEXES = {
    "ix_watched_orders_active_status": ["active", "status"],
    "ix_watched_orders_active_consecutive_failures_order_id": [
        "active",
        "consecutive_failures",
        "order_id",
    ],
    "ix_watched_orders_active_stuck_at_status_since_order_id": [
        "active",
        "stuck_at",
        "status_since",
        "order_id",
    ],
    "ix_watched_orders_last_success_at": ["last_success_at"],
}


def upgrade() -> None:
    """Apply this revision."""
    for name, columns in INDEXES.items():
        op.create_index(name, "watched_orders", columns)


def downgrade() -> None:
    """Revert this revision."""
    for name in INDEXES:
        op.drop_index(name, table_name="watched_orders")
