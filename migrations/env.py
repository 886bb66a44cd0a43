"""Alembic environment: migrates the connection handed in by ``tracker.store.db.upgrade``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from tracker.store.tables import for_postgresql, metadata


def _migrate(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=for_postgresql() if connection.dialect.name == "postgresql" else metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run() -> None:
    """Migrate the given connection, or one made from ``sqlalchemy.url`` (the alembic CLI)."""
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("set sqlalchemy.url, or run `tracker db upgrade`")
    engine = create_engine(url)
    with engine.begin() as connection:
        _migrate(connection)


run()
