"""report indexes: the report page's grouping and lead times read from indexes alone

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-08

The report page (``/reports``) reads the finished stays of its period grouped by (status,
provider, next status), and the lead times of the orders activated in it. At 1,000,000
transitions, on SQLite:

- the grouping sorted the period's 60,000 stays (50 ms): ``Stays.finished`` now walks
  ``ix_stays_status_next_status_provider_ended_at_micros`` group by group instead (14 ms);
- the lead times looked up each activated stay's row for its order and provider (10 ms of
  31): ``ix_stays_status_started_at_order_id_provider`` holds them, and replaces
  ``ix_stays_status_started_at``, which served the weekly trend and serves it as before.

Nothing to backfill: an index is built from the rows it covers.
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

GROUPS = "ix_stays_status_next_status_provider_ended_at_micros"
STARTS = "ix_stays_status_started_at_order_id_provider"
REPLACED = "ix_stays_status_started_at"


def upgrade() -> None:
    """Apply this revision."""
    op.create_index(GROUPS, "stays", ["status", "next_status", "provider", "ended_at", "micros"])
    op.create_index(STARTS, "stays", ["status", "started_at", "order_id", "provider"])
    op.drop_index(REPLACED, table_name="stays")


def downgrade() -> None:
    """Revert this revision."""
    op.create_index(REPLACED, "stays", ["status", "started_at"])
    op.drop_index(STARTS, table_name="stays")
    op.drop_index(GROUPS, table_name="stays")
