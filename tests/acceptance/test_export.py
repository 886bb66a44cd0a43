"""`tracker export` as a user runs it: transitions made by real polls, exported in a subprocess."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import pty
import re
import sys
import tty
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import Response

from tests.support import (
    ROOT,
    WEBHOOK_SECRET,
    ScriptedUpstream,
    ok,
    settings_mapping,
    tracker_cli,
    write_config,
)
from tracker.demo.serving import catch_all, serve
from tracker.errors import ConfigError
from tracker.export import ExportRequest

#: Every test here runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.usefixtures("database")

A = "prdo_aaaaaaaaaaaaaaaaaaaaaaaa"
B = "prdo_bbbbbbbbbbbbbbbbbbbbbbbb"
Upstream = tuple[ScriptedUpstream, str]
#: A status outside the 14, as an upstream may send it (control characters are refused where
#: it is parsed): it starts with the full-width equals sign, which a spreadsheet may read as
#: "=", and holds a comma, double quotes and a space.
ODD = '\uff1dHYPERLINK("http://x.invalid/?a,b") next'
HEADER = "order_id,from_status,to_status,kind,skipped,detected_at,event_id,deliveries"
#: What each sink's receiver answers: delivered, dead at once (410 Gone), failed and pending.
ANSWERS = {"/ok": 204, "/gone": 410, "/flaky": 500}


async def receiver(request: Request) -> Response:
    """Webhook receivers on one server, each path answering its own way."""
    return Response(status_code=ANSWERS[request.url.path])


def sink(name: str, url: str, on: list[str]) -> dict[str, Any]:
    return {"name": name, "type": "webhook", "url": url, "secret": WEBHOOK_SECRET, "on": on}


@pytest.fixture
async def exported(upstream: Upstream, tmp_path: Path) -> AsyncIterator[str]:
    """A config whose database holds four transitions made by `tracker poll`, with deliveries.

    Two passes of ``poll --all`` after the first snapshots: A ordered → checked, B ordered →
    ODD; then A checked → installation_planning, B ODD → cancelled. ``deliveries retry``
    attempts them once: ops takes every one (delivered), gone the cancellation (410: dead),
    flaky the check (500: pending, its next attempt an hour away).
    """
    scripted, url = upstream
    scripted.script(A, ok("ordered"), ok("checked"), ok("installation_planning"))
    scripted.script(B, ok("ordered"), ok(ODD), ok("cancelled"))
    async with serve(catch_all(receiver)) as hooks:
        sinks = [
            sink("ops", f"{hooks.url}/ok", ["*"]),
            sink("gone", f"{hooks.url}/gone", ["*->cancelled"]),
            sink("flaky", f"{hooks.url}/flaky", ["*->checked"]),
        ]
        mapping = settings_mapping(
            tmp_path,
            url,
            sinks=sinks,
            watch={"orders": [A, B]},
            delivery={"backoff": ["1h"], "timeout": 2},
        )
        path = str(write_config(tmp_path / "c.toml", mapping))
        for _ in range(3):
            ran = await tracker_cli("poll", "--all", "--config", path)
            assert ran.code == 0, ran.err
        ran = await tracker_cli("deliveries", "retry", "--all-dead", "--config", path)
        assert ran.code == 1, ran.err  # gone and flaky failed
        yield path


def table(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def records(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def on_terminal(*args: str) -> str:
    """Run the CLI with its stdout on a pseudo-terminal, as a person at a shell would.

    The terminal is raw (no CRLF for LF), so the bytes read are the bytes written; they are a
    few hundred, well within what the terminal buffers until they are read.
    """
    controller, terminal = pty.openpty()
    tty.setraw(terminal)
    try:
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tracker", *args, stdout=terminal, cwd=ROOT
            )
        finally:
            os.close(terminal)
        assert await asyncio.wait_for(process.wait(), 60) == 0
        chunks = []
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the terminal's other side is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks).decode()
    finally:
        os.close(controller)


class TestExport:
    """Transitions of a period, oldest first, with their delivery states, as CSV and NDJSON."""

    async def test_formats_periods_and_filters(self, exported: str, tmp_path: Path) -> None:
        """CSV and NDJSON hold the same defused rows in order and honour the period and status."""
        every = ("export", "--since", "2000-01-01", "--config", exported)
        output = tmp_path / "report.csv"
        ndjson_all, to_file = await asyncio.gather(
            tracker_cli(*every, "--format", "ndjson"), tracker_cli(*every, "--output", str(output))
        )
        assert ndjson_all.code == to_file.code == 0, ndjson_all.err + to_file.err
        assert to_file.out == ""
        csv_all = output.read_bytes().decode()

        # CSV: a header row, CRLF line ends (RFC 4180), the odd status quoted and defused.
        assert csv_all.startswith(HEADER + "\r\n")
        assert '"\'\uff1dHYPERLINK(""http://x.invalid/?a,b"") next"' in csv_all
        rows = table(csv_all)
        changes = [(r["order_id"], r["from_status"], r["to_status"]) for r in rows]
        odd_in_csv = "'" + ODD
        assert sorted(changes[:2]) == [(A, "ordered", "checked"), (B, "ordered", odd_in_csv)]
        assert sorted(changes[2:]) == [
            (A, "checked", "installation_planning"),
            (B, odd_in_csv, "cancelled"),
        ]
        by_change = {(r["order_id"], r["to_status"]): r for r in rows}
        assert by_change[A, "checked"]["deliveries"] == "flaky:pending ops:delivered"
        assert by_change[A, "checked"]["kind"] == "advance"
        assert by_change[B, odd_in_csv]["deliveries"] == "ops:delivered"
        assert by_change[B, odd_in_csv]["kind"] == "unknown"
        assert by_change[B, "cancelled"]["deliveries"] == "gone:dead ops:delivered"
        assert all(r["event_id"].startswith("evt_") for r in rows)

        # NDJSON: the same rows in the same order, values exact.
        objects = records(ndjson_all.out)
        assert [o["event_id"] for o in objects] == [r["event_id"] for r in rows]
        assert [o["detected_at"] for o in objects] == [r["detected_at"] for r in rows]
        cancelled = next(o for o in objects if o["to_status"] == "cancelled")
        assert cancelled == {
            "order_id": B,
            "from_status": ODD,
            "to_status": "cancelled",
            "kind": "unknown",
            "skipped": [],
            "detected_at": cancelled["detected_at"],
            "event_id": cancelled["event_id"],
            "deliveries": [
                {"sink": "gone", "state": "dead"},
                {"sink": "ops", "state": "delivered"},
            ],
        }
        times = [moment(o["detected_at"]) for o in objects]
        assert times == sorted(times)
        assert all(t.utcoffset() == timedelta(0) for t in times)

        # --since inclusive and --until exclusive, to the microsecond, in any offset (here on a
        # terminal); --status: the status moved to.
        # The third is the first of the second pass: later than the second, whatever the clock.
        first, third = objects[0]["detected_at"], objects[2]["detected_at"]
        assert moment(third) > moment(objects[1]["detected_at"])
        in_berlin = moment(third).astimezone(timezone(timedelta(hours=2))).isoformat()
        cancellations = ("--since", cancelled["detected_at"], "--status", "cancelled")
        on_screen, cancelled_only = await asyncio.gather(
            on_terminal("export", "--since", first, "--until", in_berlin, "--config", exported),
            tracker_cli("export", *cancellations, "--format", "ndjson", "--config", exported),
        )
        assert on_screen.startswith(HEADER + "\r\n")
        assert [r["event_id"] for r in table(on_screen)] == [o["event_id"] for o in objects[:2]]
        assert '\'\uff1dHYPERLINK(""http://x.invalid/?a,b"") next' in on_screen
        assert cancelled_only.code == 0, cancelled_only.err
        assert records(cancelled_only.out) == [cancelled]

    async def test_wrong_values_are_one_line_and_exit_2(self) -> None:
        """A bad date, an empty period or an unknown status exits 2 with one line on stderr."""
        # The values are checked before the configuration is read: no file is needed.
        cases = {
            ("--since", "2026-13-01"): "--since '2026-13-01' is not a date; use YYYY-MM-DD",
            ("--since", "2026-02-01", "--until", "2026-01-01T00:00:00Z"): (
                "--since '2026-02-01' is not before --until '2026-01-01T00:00:00Z'"
            ),
            ("--since", "2026-01-01", "--status", "shipped"): (
                "--status 'shipped' is not a known status; use one of: intended"
            ),
        }
        runs = await asyncio.gather(*(tracker_cli("export", *args) for args in cases))
        for (args, expected), ran in zip(cases.items(), runs, strict=True):
            assert ran.code == 2, (args, ran.err)
            assert ran.out == ""
            assert ran.err.count("\n") == 1, ran.err
            assert ran.err.startswith("tracker: error: "), ran.err
            assert expected in ran.err, ran.err

    @pytest.mark.parametrize(
        ("since", "until", "expected"),
        [
            ("2026-01-01", "2026-01-01", "is not before --until"),
            ("2026-01-01T10:00", None, "has no UTC offset, so its time is ambiguous"),
            ("tomorrow", None, "is not a date; use YYYY-MM-DD (midnight UTC) or ISO 8601"),
            ("0001-01-01T00:00:00+01:00", None, "is out of range"),
            (None, "2026-01-01", "--since DATE is required"),
        ],
    )
    def test_more_wrong_dates(self, since: str | None, until: str | None, expected: str) -> None:
        """The same check the command runs (its ConfigError is the one line with exit 2)."""
        with pytest.raises(ConfigError, match=re.escape(expected)):
            ExportRequest.parse(since=since, until=until, fmt="csv", status=None)

    def test_dates_and_offsets(self) -> None:
        """A date is midnight UTC; a time with an offset is that moment, in UTC."""

        def since(text: str) -> datetime:
            return ExportRequest.parse(since=text, until=None, fmt="csv", status=None).since

        assert since("2026-11-29") == datetime(2026, 11, 29, tzinfo=UTC)
        assert since("2026-11-29T12:00:00+01:00") == datetime(2026, 11, 29, 11, tzinfo=UTC)
        assert since("2026-11-29T12:00:00.000001Z") == datetime(2026, 11, 29, 12, 0, 0, 1, UTC)
