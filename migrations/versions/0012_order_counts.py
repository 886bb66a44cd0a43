"""order counts: the active orders per status, kept by the database as orders change

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-08

The support board shows the active orders per status at every load and refresh. Counted from
``ix_watched_orders_active_status`` that is a walk over every active order: 160 ms at a million
orders on PostgreSQL. Instead the database keeps the counts as they change:

- ``order_counts``: rows of (status, n), a status's count being the sum of its rows' ``n``;
- triggers on ``watched_orders`` add a row of +1 for a new or reactivated order's status, -1
  for the status an order leaves (by a change, a retirement, a removal), whatever statement
  writes it. Rows are only added, never updated, so writers never wait on each other's counts;
- ``tracker.store.tally.Tally.fold`` (a daemon job, every minute) folds the rows into one per
  status, in one transaction that deletes exactly the rows it sums.

Backfilled here from the active orders, after the triggers exist, in the same transaction (on
PostgreSQL, creating a trigger holds off writers to the table until it commits).

Note for later migrations: on SQLite, ``batch_alter_table("watched_orders")`` copies the table
and drops its triggers; such a migration must create them again (``create_triggers``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

SQLITE_TRIGGERS = (
    """CREATE TRIGGER order_counts_insert AFTER INSERT ON watched_orders WHEN NEW.active
    BEGIN
        INSERT INTO order_counts (status, n) VALUES (NEW.status, 1);
    END""",
    """CREATE TRIGGER order_counts_update AFTER UPDATE OF status, active ON watched_orders
    WHEN OLD.active IS NOT NEW.active OR OLD.status IS NOT NEW.status
    BEGIN
        INSERT INTO order_counts (status, n) SELECT OLD.status, -1 WHERE OLD.active;
        INSERT INTO order_counts (status, n) SELECT NEW.status, 1 WHERE NEW.active;
    END""",
    """CREATE TRIGGER order_counts_delete AFTER DELETE ON watched_orders WHEN OLD.active
    BEGIN
        INSERT INTO order_counts (status, n) VALUES (OLD.status, -1);
    END""",
)

POSTGRESQL_TRIGGERS = (
    """CREATE FUNCTION order_counts_track() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP <> 'INSERT' THEN
            IF OLD.active THEN
                INSERT INTO order_counts (status, n) VALUES (OLD.status, -1);
            END IF;
        END IF;
        IF TG_OP <> 'DELETE' THEN
            IF NEW.active THEN
                INSERT INTO order_counts (status, n) VALUES (NEW.status, 1);
            END IF;
        END IF;
        RETURN NULL;
    END
    $$""",
    """CREATE TRIGGER order_counts_insert AFTER INSERT ON watched_orders
    FOR EACH ROW WHEN (NEW.active) EXECUTE FUNCTION order_counts_track()""",
    """CREATE TRIGGER order_counts_update AFTER UPDATE OF status, active ON watched_orders
    FOR EACH ROW WHEN (OLD.active IS DISTINCT FROM NEW.active
                       OR OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION order_counts_track()""",
    """CREATE TRIGGER order_counts_delete AFTER DELETE ON watched_orders
    FOR EACH ROW WHEN (OLD.active) EXECUTE FUNCTION order_counts_track()""",
)

TRIGGERS = ("order_counts_insert", "order_counts_update", "order_counts_delete")


def create_triggers() -> None:
    """Create the triggers that keep ``order_counts`` (the dialect's own)."""
    sqlite = op.get_bind().dialect.name == "sqlite"
    for statement in SQLITE_TRIGGERS if sqlite else POSTGRESQL_TRIGGERS:
        op.execute(statement)


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "order_counts",
        sa.Column("status", sa.String(64), nullable=True),
        sa.Column("n", sa.Integer(), nullable=False),
    )
    create_triggers()
    op.execute(
        "INSERT INTO order_counts (status, n) "
        "SELECT status, count(*) FROM watched_orders WHERE active GROUP BY status"
    )


def downgrade() -> None:
    """Revert this revision."""
    sqlite = op.get_bind().dialect.name == "sqlite"
    for name in TRIGGERS:
        op.execute(f"DROP TRIGGER {name}" + ("" if sqlite else " ON watched_orders"))
    if not sqlite:
        op.execute("DROP FUNCTION order_counts_track()")
    op.drop_table("order_counts")
