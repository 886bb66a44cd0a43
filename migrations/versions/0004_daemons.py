"""daemons, claim owners and the fleet's pause: who runs; whose each lease is; who waits

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30

``daemons`` has no index beyond its primary key: it holds one row per running daemon, read whole
by ``tracker status`` and by a daemon joining. ``leased_by`` on ``watched_orders`` and
``deliveries`` names the process whose claim a lease is; it is read only together with rows the
existing keys find. ``fleet`` holds one row (id 1): the pause after a 429 that every daemon
keeps.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    sqlite = op.get_bind().dialect.name == "sqlite"
    time = sa.BigInteger() if sqlite else sa.DateTime(timezone=True)
    op.create_table(
        "daemons",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("started_at", time, nullable=False),
        sa.Column("heartbeat_at", time, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_daemons")),
    )
    fleet = op.create_table(
        "fleet",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("paused_until", time, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fleet")),
    )
    op.bulk_insert(fleet, [{"id": 1, "paused_until": None}])
    for table in ("watched_orders", "deliveries"):
        with op.batch_alter_table(table) as batch_op:
            batch_op.add_column(sa.Column("leased_by", sa.String(length=40), nullable=True))


def downgrade() -> None:
    """Revert this revision."""
    for table in ("watched_orders", "deliveries"):
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_column("leased_by")
    op.drop_table("fleet")
    op.drop_table("daemons")
