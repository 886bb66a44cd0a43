"""The API's export reader: keyset chunks, each on a pooled connection given back before it is
yielded, with the rows and the order of the one-query export."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tracker.export import ExportRequest, ExportRow, batches_on, chunks, export_query
from tracker.store import upgrade
from tracker.store.db import _ASYNC_DRIVERS, _with_driver
from tracker.store.tables import deliveries, snapshots, transitions, watched_orders

A = "prdo_aaaaaaaaaaaaaaaaaaaaaaaa"
T0 = datetime(2026, 11, 2, 9, 30, 15, 123456, tzinfo=UTC)
#: Rows to export: several chunks of the small size the tests read with, and a part one.
ROWS = 23
SIZE = 5
EVERYTHING = ExportRequest(since=T0 - timedelta(days=1))
STATUSES = ("checked", "waiting", "cancelled")


@pytest.fixture
async def engine(database: str) -> AsyncIterator[AsyncEngine]:
    """A migrated database on one pooled connection at most: a held one starves any other."""
    upgrade(database)
    engine = create_async_engine(
        _with_driver(database, _ASYNC_DRIVERS), pool_size=1, max_overflow=0, pool_timeout=2
    )
    async with engine.begin() as conn:
        await conn.execute(
            insert(watched_orders).values(order_id=A, active=True, source="cli", added_at=T0)
        )
        await conn.execute(insert(snapshots).values(id=1, order_id=A, observed_at=T0, body=b""))
    try:
        yield engine
    finally:
        await engine.dispose()


async def add(engine: AsyncEngine, numbers: Sequence[int], *, at: datetime = T0) -> None:
    """Transitions numbered ``numbers``, three to a second: many share their ``detected_at``,
    and their ids (insertion order, shuffled) follow a different order than their times."""
    async with engine.begin() as conn:
        for number in numbers:
            event = f"evt_{number:06d}"
            await conn.execute(
                insert(transitions).values(
                    event_id=event,
                    order_id=A,
                    from_status="ordered",
                    to_status=STATUSES[number % len(STATUSES)],
                    kind="forward",
                    skipped="",
                    detected_at=at + timedelta(seconds=number // 3),
                    snapshot_id=1,
                )
            )
            if number % 2:
                await conn.execute(
                    insert(deliveries).values(
                        event_id=event,
                        sink="ops",
                        state="delivered",
                        attempts=1,
                        created_at=at,
                        next_attempt_at=at,
                    )
                )


async def seeded(engine: AsyncEngine, rows: int = ROWS) -> None:
    numbers = list(range(rows))
    random.Random(17).shuffle(numbers)
    await add(engine, numbers)


async def one_query(engine: AsyncEngine, request: ExportRequest) -> list[ExportRow]:
    """What the export reads in one query on one connection (``tracker export``)."""
    async with engine.connect() as conn:
        return [row async for batch in batches_on(conn, export_query(request)) for row in batch]


async def chunked(engine: AsyncEngine, request: ExportRequest, size: int) -> list[list[ExportRow]]:
    async with aclosing(chunks(engine.connect, request, size)) as reader:
        return [list(chunk) async for chunk in reader]


class TestChunks:
    """Chunks hold the one-query export's rows, in its order, each once."""

    @pytest.mark.parametrize(
        "request_",
        [
            EVERYTHING,
            ExportRequest(since=T0 + timedelta(seconds=2), until=T0 + timedelta(seconds=6)),
            ExportRequest(since=T0, status="checked"),
        ],
        ids=["everything", "period", "status"],
    )
    async def test_same_rows_as_one_query(
        self, engine: AsyncEngine, request_: ExportRequest
    ) -> None:
        """Chunks of at most ``size`` rows, joined, are the one-query export exactly."""
        await seeded(engine)
        expected = await one_query(engine, request_)
        got = await chunked(engine, request_, SIZE)
        assert all(1 <= len(chunk) <= SIZE for chunk in got)
        rows = [row for chunk in got for row in chunk]
        assert [tuple(row) for row in rows] == [tuple(row) for row in expected]
        assert len({row[6] for row in rows}) == len(rows)  # every event id once
        assert [row[5] for row in rows] == sorted(row[5] for row in rows)

    async def test_exact_multiple_and_empty(self, engine: AsyncEngine) -> None:
        """A last full chunk ends the export, and an empty table yields no chunk at all."""
        assert await chunked(engine, EVERYTHING, SIZE) == []
        await seeded(engine, rows=2 * SIZE)
        assert [len(chunk) for chunk in await chunked(engine, EVERYTHING, SIZE)] == [SIZE, SIZE]
        assert await chunked(engine, ExportRequest(since=T0 + timedelta(days=1)), SIZE) == []

    async def test_no_connection_held_between_chunks(self, engine: AsyncEngine) -> None:
        """With a pool of one, another query runs while an unfinished export waits."""
        await seeded(engine)
        async with aclosing(chunks(engine.connect, EVERYTHING, SIZE)) as reader:
            first = await anext(reader)
            assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
            # A held connection would make this wait for the pool and time out.
            async with engine.connect() as conn:
                assert (await conn.execute(select(1))).scalar() == 1
            rest = [row async for chunk in reader for row in chunk]
        assert len(first) + len(rest) == ROWS

    async def test_rows_added_during_an_export(self, engine: AsyncEngine) -> None:
        """Rows added mid-export (before, at and after the cursor) repeat and skip nothing."""
        await seeded(engine)
        expected = await one_query(engine, EVERYTHING)
        async with aclosing(chunks(engine.connect, EVERYTHING, SIZE)) as reader:
            rows = list(await anext(reader))
            # From the last second of the first chunk on, and before all of it.
            await add(engine, range(ROWS, ROWS + 9), at=T0 - timedelta(seconds=ROWS // 3 - 1))
            await add(engine, range(ROWS + 9, ROWS + 12), at=T0 - timedelta(hours=1))
            rows += [row async for chunk in reader for row in chunk]
        assert [tuple(row) for row in rows] == [tuple(row) for row in expected]
