"""Engines and migrations: the one door to the database."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing, asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from tracker.errors import StoreError, first_line
from tracker.store.plain import PlainEngine
from tracker.store.reports import ExportQuery, ExportRow, export_batches_on
from tracker.store.sql import where
from tracker.store.store import Store

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+psycopg"}
_SYNC_DRIVERS = {"sqlite": "sqlite", "postgresql": "postgresql+psycopg"}
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: The PostgreSQL advisory lock a migrating process holds ("trk" + "mig" in ASCII).
MIGRATION_LOCK = 0x74726B_6D6967
#: The newest migration; a test holds it equal to Alembic's head. Knowing it here lets every
#: command see that the schema is current without importing Alembic.
SCHEMA_HEAD = "0013"


def _with_driver(url: str, drivers: dict[str, str]) -> str:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend not in drivers:
        raise StoreError(f"database.url: unsupported backend {backend!r}; use sqlite or postgresql")
    return parsed.set(drivername=drivers[backend]).render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any, *, foreign_keys: bool = True) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode")
    if cursor.fetchone()[0] != "wal":
        _switch_to_wal(cursor)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
    cursor.close()


def _switch_to_wal(cursor: Any) -> None:
    """Put a new file in WAL mode (it stays so); processes doing it at once take turns.

    The switch needs the file to itself and does not wait on the busy timeout, so a process
    that finds it locked tries again a little later, within that timeout.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
        except Exception as exc:  # the driver's OperationalError, plain or adapted
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)
        else:
            return


def _sqlite_pragmas_for_migrating(dbapi_connection: Any, record: Any) -> None:
    # A migration that rebuilds a referenced table must not have its rows checked (and
    # refused) half way; the references are checked as a whole before it commits.
    _sqlite_pragmas(dbapi_connection, record, foreign_keys=False)
    # The driver would run DDL outside any transaction; BEGIN is ours instead (below).
    dbapi_connection.isolation_level = None


def _begin_immediate(connection: Connection) -> None:
    # One transaction for the whole migration, its DDL included: a failure half way leaves the
    # database as it was, and a second process starting at once waits, then finds it current.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def _check_sqlite_folder(url: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in {None, "", ":memory:"}:
        path = str(parsed.database)
        if parsed.query.get("uri") == "true":  # sqlite:///file:PATH?mode=ro&uri=true
            path = path.removeprefix("file:")
        folder = Path(path).parent
        if not folder.is_dir():
            raise StoreError(f"database.url: folder {folder} does not exist; create it first")


def describe(exc: SQLAlchemyError) -> str:
    """A database failure as one line that says what to do."""
    text = first_line(exc)
    if any(word in text.lower() for word in ("readonly", "read-only", "permission denied")):
        return (
            f"database.url: the database cannot be written ({text}); check the permissions "
            "of the file and its folder, or the database user's grants"
        )
    return f"database.url: the database failed: {text}"


def connect(url: str, *, pool: tuple[int, float] | None = None) -> AsyncEngine:
    """An async engine for ``url``; SQLite runs in WAL mode with a busy timeout.

    ``pool`` is (connections, seconds to wait for one) for an engine that must never take more
    than its share (the listener's); by default the pool is SQLAlchemy's (5, and 10 more).
    """
    _check_sqlite_folder(url)
    sizing: dict[str, Any] = {}
    if pool is not None:
        sizing = {"pool_size": pool[0], "max_overflow": 0, "pool_timeout": pool[1]}
    # Every use ends its own transaction (begin() commits, connect() rolls back on close), so
    # the pool need not roll back again on every return: one thread round trip less.
    # Loaded here, not at import: the reading commands never load the asyncio extension.
    from sqlalchemy.ext.asyncio import create_async_engine  # noqa: PLC0415

    engine = create_async_engine(
        _with_driver(url, _ASYNC_DRIVERS), pool_reset_on_return=None, **sizing
    )
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _plain(url: str) -> Engine:
    """A sync engine for ``url``, set up as :func:`connect`'s, for a plain store."""
    _check_sqlite_folder(url)
    engine = create_engine(_with_driver(url, _SYNC_DRIVERS), pool_reset_on_return=None)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _migrating_engine(url: str) -> Engine:
    _check_sqlite_folder(url)
    engine = create_engine(_with_driver(url, _SYNC_DRIVERS))
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas_for_migrating)
        event.listen(engine, "begin", _begin_immediate)
    return engine


def _alembic_config() -> Any:
    from alembic.config import Config  # noqa: PLC0415 - Alembic loads only when migrating

    config = Config()
    config.set_main_option("script_location", str(resources.files("tracker.migrations")))
    return config


def current_revision(connection: Connection) -> str | None:
    """The schema revision stamped in the database, or ``None`` for an empty one."""
    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def upgrade(url: str) -> list[str]:
    """Apply pending migrations; returns the revisions applied (empty when up to date).

    Daemons starting at once migrate one after the other: the first applies what is pending,
    the others then find the schema current.
    """
    engine = _migrating_engine(url)
    try:
        try:
            connection = engine.connect()
        except SQLAlchemyError as exc:  # unreachable, refused credentials, no such database
            raise StoreError(
                f"database.url: cannot connect to {where(make_url(url))}: {first_line(exc)}"
            ) from exc
        with connection, connection.begin():
            if connection.dialect.name == "postgresql":
                # Held until this transaction ends, as SQLite's BEGIN IMMEDIATE is.
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
                )
            current = current_revision(connection)
            if current == SCHEMA_HEAD:
                return []
            from alembic import command  # noqa: PLC0415 - Alembic loads only when migrating

            config = _alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            applied = current_revision(connection)
            _check_references(connection)
    except (SQLAlchemyError, sqlite3.Error, ValueError) as exc:  # ValueError: a row not converted
        raise StoreError(f"database.url: cannot migrate the database: {first_line(exc)}") from exc
    finally:
        engine.dispose()
    return [f"{current or 'empty'} -> {applied}"]


def _check_references(connection: Connection) -> None:
    """Refuse to commit a migration that left a row pointing at nothing (SQLite)."""
    if connection.dialect.name != "sqlite":
        return
    broken = connection.execute(text("PRAGMA foreign_key_check")).first()
    if broken is not None:
        raise StoreError(
            f"database.url: migrating left table {broken[0]} row {broken[1]} pointing at a "
            f"missing {broken[2]} row; nothing was changed; restore a backup or report this"
        )


@asynccontextmanager
async def open_store(url: str, *, plain: bool = False) -> AsyncIterator[Store]:
    """Apply pending migrations, then yield a store on ``url`` that is closed afterwards.

    ``plain``: for a command that runs one statement after another, with nothing else on its
    event loop waiting meanwhile (the reading commands, ``tracker poll``): the store runs them
    on plain connections (``tracker.store.plain``), without SQLAlchemy's asyncio extension and
    the ORM it loads. When its own first connection finds the schema current, no migrating
    engine is built.
    """
    plain_engine = _plain(url) if plain else None
    store = Store(connect(url) if plain_engine is None else PlainEngine(plain_engine))
    try:
        if plain_engine is None or not _is_current(plain_engine):
            upgrade(url)
        yield store
    finally:
        await store.close()


def _is_current(engine: Engine) -> bool:
    """Whether the database's schema is :data:`SCHEMA_HEAD`; ``False`` when it cannot tell
    (:func:`upgrade` then says why, as it does for every command)."""
    try:
        with engine.connect() as connection:
            return current_revision(connection) == SCHEMA_HEAD
    except SQLAlchemyError:
        return False


async def export_rows(url: str, query: ExportQuery) -> AsyncGenerator[Sequence[ExportRow]]:
    """The rows of an export ``query`` in batches, from one server-side cursor on an engine of
    its own (``tracker export``), migrating first like every command."""
    engine = _plain(url)
    try:
        if not _is_current(engine):
            upgrade(url)
        async with (
            PlainEngine(engine).connect() as conn,
            aclosing(export_batches_on(conn, query)) as rows,
        ):
            async for batch in rows:
                yield batch
    finally:
        engine.dispose()


#: The HTTP listener's own connections, and the seconds a request waits for one before it is
#: answered 503: whatever clients ask, polling keeps every connection of its own pool.
LISTENER_POOL = (4, 5.0)


@asynccontextmanager
async def listener_store(url: str) -> AsyncIterator[Store]:
    """A store for the HTTP listener beside a daemon: its own small pool on the same database
    (already migrated by the daemon), closed afterwards."""
    store = Store(connect(url, pool=LISTENER_POOL))
    try:
        yield store
    finally:
        await store.close()


def is_busy(exc: BaseException) -> bool:
    """Whether ``exc`` says every connection of a bounded pool was in use for its whole wait."""
    return isinstance(exc, PoolTimeout)


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot be reached, rather than a statement failing."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError | InterfaceError | PoolTimeout | OSError)


def describe_failure(exc: BaseException) -> str | None:
    """A database failure as one line that says what to do; ``None`` for any other error.

    Only a process that loaded the database can have raised its error, so a command that
    never opened the store does not load SQLAlchemy to find out.
    """
    if not isinstance(exc, SQLAlchemyError):
        return None
    return describe(exc)
