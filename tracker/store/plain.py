"""A plain (sync) engine that the repositories can use as they use the async one.

The reading commands (``history``, ``status``, ``watch list``, ``deliveries list``, ``export``)
run one query after another and nothing beside them: they need no event loop between the
database and Python. SQLAlchemy's asyncio extension would bring the ORM with it (some 60 ms
and 7 MiB per command), so they read through this adapter instead: the same repository code,
the same statements, executed on a plain connection. Each ``await`` returns at once.
``tracker poll`` writes through it too: it writes between its windows of requests, when none
is in flight (``tracker.app.open_polling``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import (
        URL,
        Connection,
        CursorResult,
        Dialect,
        Engine,
        Executable,
        Row,
        ScalarResult,
    )
    from sqlalchemy.engine.interfaces import _CoreAnyExecuteParams


class PlainEngine:
    """The surface of ``AsyncEngine`` the repositories use, over a sync ``Engine``."""

    def __init__(self, engine: Engine) -> None:
        self.sync_engine = engine

    @property
    def url(self) -> URL:
        """The database's URL."""
        return self.sync_engine.url

    @property
    def dialect(self) -> Dialect:
        """The database's dialect."""
        return self.sync_engine.dialect

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[PlainConnection]:
        """A connection whose transaction is rolled back when it closes."""
        with self.sync_engine.connect() as conn:
            yield PlainConnection(conn)

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[PlainConnection]:
        """A connection in a transaction, committed when the block ends without an error."""
        with self.sync_engine.begin() as conn:
            yield PlainConnection(conn)

    async def dispose(self) -> None:
        """Close the pool's connections."""
        self.sync_engine.dispose()


class PlainConnection:
    """The surface of ``AsyncConnection`` the repositories use, over a sync ``Connection``."""

    def __init__(self, conn: Connection) -> None:
        self.sync_connection = conn

    @property
    def dialect(self) -> Dialect:
        """The database's dialect."""
        return self.sync_connection.dialect

    async def execute(
        self, statement: Executable, parameters: _CoreAnyExecuteParams | None = None
    ) -> CursorResult[*tuple[Any, ...]]:
        """Run ``statement``; its rows are read as they are asked for."""
        return self.sync_connection.execute(statement, parameters)

    async def exec_driver_sql(
        self, statement: str, parameters: Any = None
    ) -> CursorResult[*tuple[Any, ...]]:
        """Run SQL text as the driver takes it."""
        return self.sync_connection.exec_driver_sql(statement, parameters)

    async def scalar(self, statement: Executable) -> Any:
        """The first column of the first row of ``statement``."""
        return self.sync_connection.scalar(statement)

    async def scalars(self, statement: Executable) -> ScalarResult[Any]:
        """The first column of every row of ``statement``."""
        return self.sync_connection.scalars(statement)

    async def commit(self) -> None:
        """Commit the transaction begun by the first statement."""
        self.sync_connection.commit()

    async def stream(self, statement: Executable) -> PlainResult:
        """Run ``statement`` for rows fetched in batches (its ``yield_per``), as they are read."""
        return PlainResult(self.sync_connection.execute(statement))

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[PlainTransaction]:
        """A transaction on this connection, committed unless rolled back or failed."""
        with self.sync_connection.begin() as tx:
            yield PlainTransaction(tx)


class PlainTransaction:
    """The surface of ``AsyncTransaction`` the repositories use."""

    def __init__(self, tx: Any) -> None:
        self._tx = tx

    async def rollback(self) -> None:
        """Undo what the transaction wrote."""
        self._tx.rollback()


class PlainResult:
    """The surface of ``AsyncResult`` the repositories use: rows one by one, or in batches."""

    def __init__(self, result: CursorResult[Any]) -> None:
        self._result = result

    def __aiter__(self) -> AsyncIterator[Row[Any]]:
        return _rows(iter(self._result))

    def partitions(self) -> AsyncIterator[Sequence[Row[Any]]]:
        """The rows in the batches the statement's ``yield_per`` asked for."""
        return _rows(self._result.partitions())


async def _rows(items: Iterator[Any]) -> AsyncIterator[Any]:
    for item in items:
        yield item
