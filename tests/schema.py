"""Helpers for tests that look at the database's schema directly, beside the store."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine, inspect

from tracker.store.db import _SYNC_DRIVERS, _with_driver
from tracker.store.tables import metadata

#: A moment with microseconds, as the store keeps them.
T0 = datetime(2026, 11, 2, 9, 30, 15, 123456, tzinfo=UTC)


def engine_for(url: str) -> Engine:
    """A plain synchronous engine on the tracker's driver for ``url``."""
    return create_engine(_with_driver(url, _SYNC_DRIVERS))


def assert_no_drift(url: str) -> None:
    """The schema in the database is exactly what the tables declare."""
    engine = engine_for(url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, metadata) == []
        assert set(inspect(conn).get_table_names()) >= set(metadata.tables)
    engine.dispose()
