"""One writer task that records items in batches, so that many results share a transaction."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import structlog

log = structlog.get_logger("tracker.batching")

T = TypeVar("T")


class BatchWriter(Generic[T]):
    """Collects items and hands them to ``write`` in batches of at most ``size``.

    After the first item of a batch it waits ``linger`` seconds for more, so that results which
    arrive one at a time still share one transaction.

    A failed write is logged and dropped: the items' leases expire and the work is done again,
    which is what makes the daemon safe to kill at any moment.
    """

    def __init__(
        self,
        write: Callable[[list[T]], Awaitable[None]],
        *,
        name: str,
        size: int = 200,
        linger: float = 0.02,
    ) -> None:
        self._write = write
        self._name = name
        self._size = size
        self._linger = linger
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
                try:
                    await self._write(batch)
                except Exception:
                    log.exception("batch_write_failed", writer=self._name, items=len(batch))
