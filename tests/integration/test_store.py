"""The database: migrations build what the models declare; SQLite runs in WAL mode."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect

from tracker.store import upgrade
from tracker.store.db import SCHEMA_HEAD, _alembic_config
from tracker.store.tables import metadata


class TestMigrations:
    """Alembic is the only way the schema is built, and it matches the table metadata."""

    def test_migrations_build_exactly_the_models(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path / 'm.db'}"
        assert upgrade(url) == ["empty -> 0002"]
        engine = create_engine(url)
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, metadata) == []
            assert set(inspect(conn).get_table_names()) >= set(metadata.tables)
        engine.dispose()

    def test_schema_head_is_alembics_head(self) -> None:
        config = _alembic_config()
        assert ScriptDirectory.from_config(config).get_current_head() == SCHEMA_HEAD

    def test_upgrade_is_idempotent(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path / 'm.db'}"
        upgrade(url)
        assert upgrade(url) == []

    def test_sqlite_runs_in_wal_mode(self, tmp_path: Path) -> None:
        path = tmp_path / "m.db"
        upgrade(f"sqlite:///{path}")
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
