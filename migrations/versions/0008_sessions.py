"""sessions: the support pages' logins, so that a logout ends every copy of a cookie

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07

``sessions`` holds one row per login (``POST /login``): the SHA-256 of the random id its
cookie carries, the user and the expiry. A cookie is honoured only while its row exists, on
every process serving the pages; logout deletes the row. Indexes: ``expires_at`` for pruning,
``user_name`` for ending a user's sessions.

Nothing to backfill: cookies issued before this revision carry no id and are not honoured, so
support users log in once more after the upgrade.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    sqlite = op.get_bind().dialect.name == "sqlite"
    time = sa.BigInteger() if sqlite else sa.DateTime(timezone=True)
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("user_name", sa.String(length=64), nullable=False),
        sa.Column("expires_at", time, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sessions")),
    )
    op.create_index(op.f("ix_sessions_expires_at"), "sessions", ["expires_at"])
    op.create_index(op.f("ix_sessions_user_name"), "sessions", ["user_name"])


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index(op.f("ix_sessions_user_name"), table_name="sessions")
    op.drop_index(op.f("ix_sessions_expires_at"), table_name="sessions")
    op.drop_table("sessions")
