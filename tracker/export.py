"""``tracker export``: the transitions of a period as CSV or NDJSON, streamed for reporting.

Rows come in batches and are written as they come, so the memory an export takes does not grow
with the number of rows. The store reads them (``tracker.store.reports``): ``tracker export``
from one server-side cursor on an engine of its own; the daemon's API in chunks (:func:`chunks`),
each a short keyset-paginated query on a pooled connection that is given back before the chunk
is sent, so a client that reads slowly holds no connection. Each transition's delivery states
are gathered by a correlated subquery, one short string per row, never a join held in memory.
This module checks the request and shapes the rows.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import sys
import tempfile
import unicodedata
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from contextlib import aclosing, contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Literal, TextIO

from tracker.clock import utc_now
from tracker.errors import ConfigError
from tracker.lifecycle import Status, is_known
from tracker.shapes import EXPORT_KEYS, transition_json
from tracker.store import export_rows
from tracker.store import reports as store_reports
from tracker.store.reports import EXPORT_BATCH, ExportQuery, ExportRow, Reading
from tracker.store.reports import export_batches_on as batches_on
from tracker.text import printable

__all__ = [
    "COLUMNS",
    "EXPORT_BATCH",
    "CsvWriter",
    "ExportRequest",
    "ExportRow",
    "NdjsonWriter",
    "batches_on",
    "chunks",
    "day_bounds",
    "day_of",
    "export",
    "export_query",
    "neutralise",
    "output_file",
    "parse_moment",
    "relative_moment",
    "stdout_stream",
    "streamed",
]
#: The columns, in the order of the CSV header and the NDJSON keys.
COLUMNS = (*EXPORT_KEYS, "deliveries")
#: The first characters that make a spreadsheet read a cell as a formula (OWASP, "CSV
#: Injection"), with their full-width forms (some spreadsheets fold them to ASCII); such a
#: cell, and one that starts with any whitespace or control character (which a spreadsheet may
#: skip to find a formula behind it), is written with a single quote before it.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")
#: Unicode categories of a first character that hides what follows: separators (Z: spaces,
#: line and paragraph separators) and others (C: controls, format characters such as
#: zero-width spaces and direction marks, private use, unassigned).
INVISIBLE_STARTS = ("C", "Z")
#: Distinct values of a column (statuses, combinations of delivery states) shaped once each.
SHAPED_VALUES = 4_096
Format = Literal["csv", "ndjson"]
FORMATS: tuple[Format, ...] = ("csv", "ndjson")
_KNOWN_STATUSES = ", ".join(Status)
_DATE_HINT = "use YYYY-MM-DD (midnight UTC) or ISO 8601 with an offset, e.g. 2026-11-29T12:00:00Z"
#: Digits ``Nd`` may have: 9999 days reach back past any stored transition.
MAX_DAYS_DIGITS = 4


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportRequest:
    """What to export: transitions detected in ``[since, until)``, optionally to one status."""

    since: datetime
    until: datetime | None = None
    #: Only transitions that moved to this status.
    status: str | None = None
    format: Format = "csv"

    @classmethod
    def parse(
        cls,
        *,
        since: str | None,
        until: str | None,
        fmt: str,
        status: str | None,
        now: datetime | None = None,
    ) -> ExportRequest:
        """Validate the command line's values, or raise :class:`ConfigError` saying what to do.

        Besides dates, ``today``, ``yesterday`` and ``Nd`` (see :func:`relative_moment`) are
        read against ``now`` (default: the clock's now).
        """
        if since is None:
            raise ConfigError(f"--since DATE is required; {_DATE_HINT}, today, yesterday or 7d")
        at = now or utc_now()
        start = relative_moment(since, at) or parse_moment(since, "--since")
        end = None
        if until is not None:
            end = relative_moment(until, at) or parse_moment(until, "--until")
        if end is not None and start >= end:
            raise ConfigError(
                f"--since {since!r} is not before --until {until!r}, so nothing can match; "
                "--since is inclusive and --until exclusive (for one day, --until the next day)"
            )
        if status is not None and not is_known(status):
            raise ConfigError(
                f"--status {status!r} is not a known status; use one of: {_KNOWN_STATUSES}"
            )
        chosen = next((f for f in FORMATS if f == fmt), None)
        if chosen is None:
            raise ConfigError(f"--format {fmt!r} is not known; use csv or ndjson")
        return cls(since=start, until=end, status=status, format=chosen)


def relative_moment(text: str, now: datetime) -> datetime | None:
    """``today`` and ``yesterday`` as that day's midnight in UTC, ``Nd`` (``7d``) as N times
    24 hours before ``now``; ``None`` for anything else (a date, parsed by
    :func:`parse_moment`)."""
    midnight = datetime.combine(now.astimezone(UTC).date(), time(), UTC)
    if text == "today":
        return midnight
    if text == "yesterday":
        return midnight - timedelta(days=1)
    days = text.removesuffix("d")
    if days != text and days.isascii() and days.isdigit() and len(days) <= MAX_DAYS_DIGITS:
        return now.astimezone(UTC) - timedelta(days=int(days))
    return None


def parse_moment(text: str, option: str) -> datetime:
    """``YYYY-MM-DD`` as midnight UTC, or ISO 8601 with an offset, as an aware UTC datetime."""
    try:
        return datetime.combine(date.fromisoformat(text), time(), UTC)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{option} {text!r} is not a date; {_DATE_HINT}") from None
    if moment.tzinfo is None:
        raise ConfigError(
            f"{option} {text!r} has no UTC offset, so its time is ambiguous; add one "
            "(Z for UTC, or e.g. +01:00) or give a date YYYY-MM-DD"
        )
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise ConfigError(f"{option} {text!r} is out of range; {_DATE_HINT}") from None


def export_query(request: ExportRequest) -> ExportQuery:
    """The transitions of the request, oldest first, each with its deliveries' states."""
    return store_reports.export_query(
        since=request.since, until=request.until, status=request.status
    )


def neutralise(value: str) -> str:
    """``value`` with a single quote before it if a spreadsheet would read it as a formula."""
    if value.startswith(FORMULA_STARTS) or (
        value and unicodedata.category(value[0]).startswith(INVISIBLE_STARTS)
    ):
        return "'" + value
    return value


def _sink_of(entry: str) -> str:
    return entry.partition(":")[0]


# A column holds few distinct values (statuses, combinations of delivery states), so each is
# shaped once; the caches are bounded, so many distinct values cannot grow the memory.
@functools.lru_cache(maxsize=SHAPED_VALUES)
def _entries(aggregated: str | None) -> tuple[str, ...]:
    """``sink:state`` entries ordered by sink (the aggregate's own order is not defined)."""
    return tuple(sorted(aggregated.split(" "), key=_sink_of)) if aggregated else ()


@functools.lru_cache(maxsize=SHAPED_VALUES)
def _csv_states(aggregated: str | None) -> str:
    return " ".join(_entries(aggregated))


@functools.lru_cache(maxsize=SHAPED_VALUES)
def _json_states(aggregated: str | None) -> list[dict[str, str]]:
    # Only ever serialised, never changed, so one list may serve every row.
    return [
        {"sink": sink, "state": state}
        for sink, _, state in (entry.partition(":") for entry in _entries(aggregated))
    ]


@functools.lru_cache(maxsize=SHAPED_VALUES)
def _skipped_list(skipped: str) -> list[str]:
    return [status for status in skipped.split(",") if status]


class CsvWriter:
    """RFC 4180 CSV with a header row; cells from outside are kept from reading as formulas.

    Statuses come from the upstream (an unknown one is stored as it is) and sink names from the
    configuration: those cells get a leading single quote when they start like a formula. On a
    terminal, control characters are shown escaped, as the other commands do.
    """

    def __init__(self, stream: TextIO, *, terminal: bool) -> None:
        self._writer = csv.writer(stream, lineterminator="\r\n")
        shape: Callable[[str], str] = (
            (lambda value: printable(neutralise(value))) if terminal else neutralise
        )
        self._shown = functools.lru_cache(maxsize=SHAPED_VALUES)(shape)
        self._writer.writerow(COLUMNS)

    def write(self, rows: Sequence[ExportRow]) -> None:
        """Write one batch of rows."""
        shown = self._shown
        self._writer.writerows(
            (
                order,
                shown(before),
                shown(after),
                kind,
                skipped.replace(",", " "),
                at,
                event,
                shown(_csv_states(states)),
            )
            for order, before, after, kind, skipped, at, event, states in rows
        )


class NdjsonWriter:
    """One JSON object per line; values exact (JSON escapes every control character)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._dumps = json.JSONEncoder().encode

    def write(self, rows: Sequence[ExportRow]) -> None:
        """Write one batch of rows."""
        dumps = self._dumps
        self._stream.writelines(dumps(_ndjson_row(row)) + "\n" for row in rows)


def _ndjson_row(row: ExportRow) -> dict[str, Any]:
    """One row as the transition's outside shape (``tracker.shapes``), with its deliveries."""
    order, before, after, kind, skipped, at, event, states = row
    data = transition_json(
        EXPORT_KEYS,
        order_id=order,
        from_status=before,
        to_status=after,
        kind=kind,
        skipped=_skipped_list(skipped),
        detected_at=at,
        event_id=event,
    )
    data["deliveries"] = _json_states(states)
    return data


def chunks(
    reading: Reading, request: ExportRequest, size: int = EXPORT_BATCH
) -> AsyncGenerator[Sequence[ExportRow]]:
    """The request's rows in chunks of at most ``size``, each read on a connection of its own
    from ``reading`` (``Store.reading``), given back before the chunk is yielded (see
    :func:`tracker.store.reports.export_chunks`)."""
    return store_reports.export_chunks(reading, export_query(request), size)


async def streamed(reading: Reading, request: ExportRequest) -> AsyncGenerator[str]:
    """The request's export as text pieces, a chunk of rows each (the header comes with the
    first, or alone for an empty period), read as :func:`chunks` reads them: the bytes are
    those ``tracker export`` writes for the same request."""
    buffer = io.StringIO()
    writer = CsvWriter(buffer, terminal=False) if request.format == "csv" else NdjsonWriter(buffer)
    async with aclosing(chunks(reading, request)) as rows:
        async for batch in rows:
            writer.write(batch)
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue()


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """Where ``day`` starts and ends (midnight to midnight, UTC for now): the pages' days all
    come from here, so a display zone changes them in this one place."""
    start = datetime.combine(day, time(), UTC)
    return start, start + timedelta(days=1)


def day_of(moment: datetime) -> date:
    """The day ``moment`` falls on, as :func:`day_bounds` draws days."""
    return moment.astimezone(UTC).date()


async def export(url: str, request: ExportRequest, stream: TextIO, *, terminal: bool) -> int:
    """Write the request's transitions to ``stream``; returns how many rows were written."""
    writer = (
        CsvWriter(stream, terminal=terminal) if request.format == "csv" else NdjsonWriter(stream)
    )
    count = 0
    async with aclosing(export_rows(url, export_query(request))) as rows:
        async for batch in rows:
            writer.write(batch)
            count += len(batch)
    return count


@contextmanager
def output_file(path: Path) -> Iterator[TextIO]:
    """A text stream that becomes ``path`` only once it is complete: never half a report."""
    if path.is_dir():
        raise ConfigError(f"--output {path} is a folder; name a file")
    try:
        handle, temporary = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".part"
        )
    except OSError as exc:
        raise ConfigError(f"--output {path}: cannot write there ({exc.strerror})") from exc
    # mkstemp makes the file private; a report gets the mode `> FILE` would have given it.
    umask = os.umask(0o022)
    os.umask(umask)
    os.fchmod(handle, 0o666 & ~umask)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            yield stream
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@contextmanager
def stdout_stream() -> Iterator[TextIO]:
    """Standard output as UTF-8 text that leaves line ends alone (CSV writes its own CRLF).

    When the reader goes away early (``tracker export ... | head``), what is still buffered
    goes to ``/dev/null`` instead of raising again at exit, and the ``BrokenPipeError`` is
    raised for the caller to end quietly.
    """
    stream = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="")
    try:
        yield stream
        stream.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise
    finally:
        stream.detach()
