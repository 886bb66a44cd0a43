"""What every command shares: the ``--config`` option, the console, loading the settings,
opening the store for one piece of work, and printing rows for people, pipes or JSON.

Like :mod:`tracker.cli`, it imports the configuration, the store and the views inside the
functions that use them, so that ``--help`` and ``--version`` load none of them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console

if TYPE_CHECKING:
    from tracker.config import Settings
    from tracker.store import Store
    from tracker.views import Cells, Column

T = TypeVar("T")
R = TypeVar("R")

ConfigOption = Annotated[
    str | None,
    typer.Option(
        "--config",
        metavar="PATH",
        help="Configuration file (default: $TRACKER_CONFIG, else ./tracker.toml).",
    ),
]
out = Console(highlight=False, soft_wrap=True)


def settings_of(ctx: typer.Context, config: str | None, *, logs: bool = True) -> Settings:
    """Load the settings named after the command, else before it, else the default path.

    A reading command (``logs=False``) writes no log line, so it does not load structlog.
    """
    from tracker import config as config_module

    settings = config_module.load(config_path(ctx, config))
    if logs:
        from tracker.logs import configure as configure_logs

        configure_logs(settings.log, stream=sys.stderr)
    return settings


def config_path(ctx: typer.Context, config: str | None) -> Path:
    """The configuration file named after the command, else before it, else the default."""
    from tracker import config as config_module

    chosen = config or (ctx.find_root().obj or {}).get("config")
    return config_module.resolve_path(chosen, os.environ)


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    import asyncio

    return asyncio.run(coroutine)


def with_store(
    settings: Settings, work: Callable[[Store], Awaitable[T]], *, reading: bool = False
) -> T:
    """Open the store on the configured database (migrated first), run ``work``, close it.

    A reading command (``reading=True``) reads on plain connections: it loads neither
    SQLAlchemy's asyncio extension nor the ORM that comes with it.
    """
    from tracker.store import open_store

    async def with_store() -> T:
        async with open_store(settings.database.url, plain=reading) as store:
            return await work(store)

    return run_async(with_store())


def list_rows(
    settings: Settings,
    rows_of: Callable[[Store], AsyncIterator[R]],
    as_dict: Callable[[R], dict[str, Any]],
    columns: Sequence[Column],
    cells: Callable[[R], Cells],
    *,
    as_json: bool,
    check: Callable[[Store], Awaitable[None]] | None = None,
) -> None:
    """Stream rows from the store as a JSON array, as tab-separated rows when stdout is not a
    terminal, or as a table that fits the terminal without cutting ids or statuses.

    ``check`` runs first, on the same store: it refuses a filter that names nothing known.
    """
    from tracker.views import json_array, show, write_tsv

    async def listing(store: Store) -> None:
        if check is not None:
            await check(store)
        rows = rows_of(store)
        if as_json:
            await json_array(rows, as_dict, sys.stdout)
        elif not out.is_terminal:
            await write_tsv(columns, (cells(row) async for row in rows), sys.stdout)
        else:
            show(out, columns, [cells(row) async for row in rows])

    with_store(settings, listing, reading=True)
