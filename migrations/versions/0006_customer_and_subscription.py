"""each order's customer and subscription beside its status, indexed for the search ``q``

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30

``watched_orders.customer`` and ``watched_orders.subscription`` hold what the latest snapshot
says; a poll that stores a snapshot writes them in the statement that writes the status, so
they never lag. They were only inside the packed snapshot bodies, which SQL cannot read.

Indexes, each for the query it serves:

- ``ix_watched_orders_customer_order_id`` and ``ix_watched_orders_subscription_order_id``:
  ``q`` equal to a customer (subscription), a page of its orders in id order.
- ``ix_watched_orders_order_id_pattern``: ``q`` as an order id prefix on PostgreSQL
  (``varchar_pattern_ops``: ``LIKE 'prefix%'`` under any collation); on SQLite a plain index.

Existing orders take the values of their latest snapshot, unpacked here in batches (the
bodies are deflated, see ``tracker.store.packing``); orders never polled keep nulls. A value
longer than the column stays null, as the store writes it.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

from tracker.store.packing import unpack_body

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

#: Orders read, and bodies unpacked, per batch: memory stays flat on a large database.
BATCH = 1000
#: The columns' width (``String(80)``), as ``tracker.store.repo`` keeps it.
WIDTH = 80


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("watched_orders") as batch_op:
        batch_op.add_column(sa.Column("customer", sa.String(length=80), nullable=True))
        batch_op.add_column(sa.Column("subscription", sa.String(length=80), nullable=True))
    _backfill(op.get_bind())
    op.create_index(
        op.f("ix_watched_orders_customer_order_id"), "watched_orders", ["customer", "order_id"]
    )
    op.create_index(
        op.f("ix_watched_orders_subscription_order_id"),
        "watched_orders",
        ["subscription", "order_id"],
    )
    op.create_index(
        "ix_watched_orders_order_id_pattern",
        "watched_orders",
        ["order_id"],
        postgresql_ops={"order_id": "varchar_pattern_ops"},
    )


def downgrade() -> None:
    """Revert this revision (the values stay in the snapshots)."""
    op.drop_index("ix_watched_orders_order_id_pattern", table_name="watched_orders")
    op.drop_index(op.f("ix_watched_orders_subscription_order_id"), table_name="watched_orders")
    op.drop_index(op.f("ix_watched_orders_customer_order_id"), table_name="watched_orders")
    with op.batch_alter_table("watched_orders") as batch_op:
        batch_op.drop_column("subscription")
        batch_op.drop_column("customer")


def _backfill(connection: sa.Connection) -> None:
    """Each order's customer and subscription from its latest snapshot, a batch at a time."""
    orders = sa.table(
        "watched_orders",
        sa.column("order_id", sa.String()),
        sa.column("customer", sa.String()),
        sa.column("subscription", sa.String()),
    )
    snapshots = sa.table(
        "snapshots",
        sa.column("id", sa.Integer()),
        sa.column("order_id", sa.String()),
        sa.column("body", sa.LargeBinary()),
    )
    after = ""
    while True:
        ids = (
            connection.execute(
                sa.select(orders.c.order_id)
                .where(orders.c.order_id > after)
                .order_by(orders.c.order_id)
                .limit(BATCH)
            )
            .scalars()
            .all()
        )
        if not ids:
            return
        # The latest snapshot of each: one look into ix_snapshots_order_id_id per order.
        latest = (
            sa.select(sa.func.max(snapshots.c.id))
            .where(snapshots.c.order_id.in_(ids))
            .group_by(snapshots.c.order_id)
        )
        rows = connection.execute(
            sa.select(snapshots.c.order_id, snapshots.c.body).where(snapshots.c.id.in_(latest))
        ).all()
        if rows:
            connection.execute(
                orders.update()
                .where(orders.c.order_id == sa.bindparam("b_id"))
                .values(customer=sa.bindparam("b_customer"), subscription=sa.bindparam("b_sub")),
                [_values(row.order_id, row.body) for row in rows],
            )
        after = ids[-1]


def _values(order_id: str, body: bytes) -> dict[str, Any]:
    fields = json.loads(unpack_body(body))
    return {
        "b_id": order_id,
        "b_customer": _fitting(fields.get("customer")),
        "b_sub": _fitting(fields.get("subscription")),
    }


def _fitting(value: object) -> str | None:
    """A value the column holds: a string of at most :data:`WIDTH` characters, else null."""
    return value if isinstance(value, str) and 0 < len(value) <= WIDTH else None
