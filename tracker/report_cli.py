"""``tracker report durations|lead-time|flow``: the reports' numbers on the command line.

Thin like ``tracker.cli``: parses, reads through ``tracker.insight`` (the layer the API and the
page use, so the numbers are the same) on a plain store, and prints a table, CSV or JSON.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tracker.cli_base import ConfigOption, out, settings_of, with_store
from tracker.clock import utc_now
from tracker.errors import ConfigError

if TYPE_CHECKING:
    from tracker.insight import Period

report_app = typer.Typer(
    no_args_is_help=True, help="Durations, lead times and the flow between statuses."
)

FORMATS = ("table", "csv", "json")
#: Columns whose values are seconds: a table shows them for people as well (``3d 4h``).
SECONDS = ("median_seconds", "p90_seconds")

SinceOption = Annotated[
    str | None,
    typer.Option(
        "--since",
        metavar="DATE",
        help="From DATE on, inclusive: YYYY-MM-DD (midnight UTC) or ISO 8601 with an offset "
        "(default: 12 weeks before --until).",
        show_default=False,
    ),
]
UntilOption = Annotated[
    str | None,
    typer.Option("--until", metavar="DATE", help="Before DATE, exclusive (default: now)."),
]
ByOption = Annotated[
    str | None, typer.Option("--by", metavar="provider", help="One row per provider.")
]
FormatOption = Annotated[
    str, typer.Option("--format", metavar="table|csv|json", help="How to print the rows.")
]


@report_app.command("durations")
def durations(
    ctx: typer.Context,
    *,
    since: SinceOption = None,
    until: UntilOption = None,
    by: ByOption = None,
    fmt: FormatOption = "table",
    config: ConfigOption = None,
) -> None:
    """Time in each status: count, median and p90 of the stays that ended in the period."""
    _report(ctx, "durations", since=since, until=until, by=by, fmt=fmt, config=config)


@report_app.command("lead-time")
def lead_time(
    ctx: typer.Context,
    *,
    since: SinceOption = None,
    until: UntilOption = None,
    by: ByOption = None,
    fmt: FormatOption = "table",
    config: ConfigOption = None,
) -> None:
    """Lead time from ordered to activated of the orders first activated in the period."""
    _report(ctx, "lead-time", since=since, until=until, by=by, fmt=fmt, config=config)


@report_app.command("flow")
def flow(
    ctx: typer.Context,
    *,
    since: SinceOption = None,
    until: UntilOption = None,
    by: ByOption = None,
    fmt: FormatOption = "table",
    config: ConfigOption = None,
) -> None:
    """How many orders took each transition in the period, detours included."""
    _report(ctx, "flow", since=since, until=until, by=by, fmt=fmt, config=config)


def _report(
    ctx: typer.Context,
    name: str,
    *,
    since: str | None,
    until: str | None,
    by: str | None,
    fmt: str,
    config: str | None,
) -> None:
    from tracker.insight import COLUMNS, Period, by_provider, report_items

    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    period = Period.parse(since, until, now=utc_now())
    grouped = by_provider(by)
    settings = settings_of(ctx, config, logs=False)
    items = with_store(
        settings,
        lambda store: report_items(store, name, period, by=grouped),
        reading=True,
    )
    columns = COLUMNS[name]
    if fmt == "json":
        sys.stdout.write(json.dumps({"items": items}, indent=2) + "\n")
    elif fmt == "csv":
        from tracker.insight import csv_text

        sys.stdout.write(csv_text(columns, items))
    else:
        _table(name, period, columns, items)


def _table(
    name: str, period: Period, columns: tuple[str, ...], items: list[dict[str, Any]]
) -> None:
    """A table for people on a terminal; tab-separated rows with a header row in a pipe."""
    from tracker.insight import cell, utc_day
    from tracker.text import human, printable

    def shown(key: str, value: Any) -> str:
        if key in SECONDS and value is not None:
            return f"{human(value)} ({value:g} s)" if sys.stdout.isatty() else f"{value:g}"
        return printable(cell(value))

    rows = [[shown(key, item[key]) for key in columns] for item in items]
    if not sys.stdout.isatty():
        sys.stdout.write("\t".join(columns) + "\n")
        sys.stdout.writelines("\t".join(row) + "\n" for row in rows)
        return
    from rich.table import Table

    table = Table(title=f"{name}, {utc_day(period.since)} to {utc_day(period.until)} (UTC)")
    for key in columns:
        table.add_column(key, no_wrap=key in ("status", "from", "to", "provider"))
    for row in rows:
        table.add_row(*row)
    out.print(table)
