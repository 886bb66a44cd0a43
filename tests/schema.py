"""Helpers for tests that look at the database's schema directly, beside the store."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, create_engine, inspect, text
from sqlalchemy.schema import CreateIndex

from tracker.store.db import _SYNC_DRIVERS, _alembic_config, _with_driver
from tracker.store.tables import POSTGRESQL_ONLY, for_postgresql, metadata

#: A moment with microseconds, as the store keeps them.
T0 = datetime(2026, 11, 2, 9, 30, 15, 123456, tzinfo=UTC)


def engine_for(url: str) -> Engine:
    """A plain synchronous engine on the tracker's driver for ``url``."""
    return create_engine(_with_driver(url, _SYNC_DRIVERS))


def downgrade_to(url: str, revision: str) -> None:
    """Take the database's schema back to ``revision`` with the project's migrations."""
    config = _alembic_config()
    engine = engine_for(url)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, revision)
    engine.dispose()


def assert_no_drift(url: str) -> None:
    """The schema in the database is exactly what the tables declare."""
    engine = engine_for(url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        declared = for_postgresql() if conn.dialect.name == "postgresql" else metadata
        assert compare_metadata(context, declared) == []
        assert set(inspect(conn).get_table_names()) >= set(metadata.tables)
        if conn.dialect.name == "postgresql":
            _assert_postgresql_options(conn)
    engine.dispose()


def _assert_postgresql_options(conn: Connection) -> None:
    """Alembic compares neither partial-index predicates nor operator classes: the indexes
    that have them on PostgreSQL (``tables.POSTGRESQL_ONLY``) are compared here, as built."""
    for (table, columns), options in POSTGRESQL_ONLY.items():
        [index] = [
            index
            for index in metadata.tables[table].indexes
            if tuple(column.name for column in index.columns) == columns
        ]
        declared = str(CreateIndex(index).compile(dialect=conn.dialect))
        name = declared.split(" ON ", maxsplit=1)[0].rsplit(" ", 1)[1]
        built = conn.execute(
            text("SELECT indexdef FROM pg_indexes WHERE indexname = :name"), {"name": name}
        ).scalar_one()
        for key in options:
            mark = {"postgresql_where": " WHERE ", "postgresql_ops": "varchar_pattern_ops"}[key]
            assert mark in declared, declared
            assert mark in built, built
