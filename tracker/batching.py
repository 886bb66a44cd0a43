"""One writer task that records items in batches, so that many results share a transaction."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import structlog

from tracker.errors import clip, first_line

log = structlog.get_logger("tracker.batching")

T = TypeVar("T")


class BatchWriter(Generic[T]):
    """Collects items and hands them to ``write`` in batches of at most ``size``.

    After the first item of a batch it waits ``linger`` seconds for more, so that results which
    arrive one at a time still share one transaction.

    A failed write is logged and dropped: the items' leases expire and the work is done again,
    which is what makes the daemon safe to kill at any moment. With ``split``, a batch whose
    write failed with an error that ``split`` accepts (one a single item may have caused, not
    a database gone) is written again one item at a time, so that one item the database
    refuses cannot drop the others; ``write`` then hears of each item alone, and an item that
    fails alone is ``write``'s to report (it is logged here only if ``write`` raises).
    """

    def __init__(
        self,
        write: Callable[[list[T]], Awaitable[None]],
        *,
        name: str,
        size: int = 200,
        linger: float = 0.02,
        split: Callable[[Exception], bool] | None = None,
    ) -> None:
        self._write = write
        self._name = name
        self._size = size
        self._linger = linger
        self._split = split
        self._queue: asyncio.Queue[T | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the writer task."""
        self._task = asyncio.create_task(self._run())

    def put(self, item: T) -> None:
        """Queue one item for the next batch."""
        self._queue.put_nowait(item)

    async def close(self) -> None:
        """Write what is queued, then stop."""
        self._queue.put_nowait(None)
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        done = False
        while not done:
            batch: list[T] = []
            item = await self._queue.get()
            if item is not None and self._queue.qsize() < self._size:
                # Results trickle in one by one; a short wait lets a batch share a transaction.
                await asyncio.sleep(self._linger)
            while item is not None:
                batch.append(item)
                if len(batch) >= self._size or self._queue.empty():
                    break
                item = self._queue.get_nowait()
            done = item is None
            if batch:
                await self._write_batch(batch)

    async def _write_batch(self, batch: list[T]) -> None:
        try:
            await self._write(batch)
        except Exception as exc:
            if len(batch) == 1 or self._split is None or not self._split(exc):
                log.exception("batch_write_failed", writer=self._name, items=len(batch))
                return
            log.warning(
                "batch_write_failed",
                writer=self._name,
                items=len(batch),
                error=clip(first_line(exc)),
                then="writing each alone",
            )
        else:
            return
        for item in batch:
            try:
                await self._write([item])
            except Exception:
                log.exception("batch_write_failed", writer=self._name, items=1)


class WriteFailures:
    """Writes that failed in a row, to tell when nothing can be written any more.

    One poison item makes a run of two (its batch, then the item alone) that the next write
    which lands ends; only writes failing with nothing landing between them make a longer
    run, or a fallback that fails too (:meth:`exhausted`). Failures of a database gone are not
    counted: an outage is told apart.
    """

    def __init__(self, *, limit: int) -> None:
        self._limit = limit
        self._run = 0
        self._error = ""

    def failed(self, exc: BaseException) -> None:
        """A write failed with ``exc``."""
        self._run += 1
        self._error = clip(first_line(exc))

    def exhausted(self) -> None:
        """Even the fallback write failed (an order's failure, after its result): nothing that
        could be written was, so the run counts as long enough."""
        self._run = max(self._run, self._limit)

    def succeeded(self) -> None:
        """A write landed: the run ends."""
        self._run = 0

    def describe(self) -> str | None:
        """Why nothing can be written, once ``limit`` writes in a row failed; else ``None``."""
        if self._run < self._limit:
            return None
        return f"results cannot be recorded: {self._error}"
