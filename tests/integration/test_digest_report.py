"""The weekly report in a digest (``digest_report = "weekly"``): the digest due on a Monday in
the sink's zone carries the seven days before it, with numbers computed by hand here; the
other days' digests do not; a mail shows it as text and as HTML tables.

The clock is the only thing moved (time-machine); polls happen at the times the test sets.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import time_machine

from tests.outbox import FAST, Mailbox, deliver_all, poll, smtp_server
from tests.support import (
    ScriptedUpstream,
    make_settings,
    ok,
    settings_mapping,
    tracker_cli,
    write_config,
)
from tracker.clock import utc_now
from tracker.config import Settings
from tracker.digest import SETTLE, raise_due_digests
from tracker.model import Event
from tracker.service import open_service

#: Every test here runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.usefixtures("database")

A = "prdo_aaaaaaaaaaaaaaaaaaaaaaaa"
B = "prdo_bbbbbbbbbbbbbbbbbbbbbbbb"
Upstream = tuple[ScriptedUpstream, str]
BERLIN = ZoneInfo("Europe/Berlin")
DAY = 86_400.0
#: Wednesday 25 November 2026, noon UTC: the first polls.
START = datetime(2026, 11, 25, 12, tzinfo=UTC)
#: Monday 30 November 2026, 08:00 in Berlin: the digest that carries the week.
MONDAY = datetime(2026, 11, 30, 8, tzinfo=BERLIN).astimezone(UTC)


def weekly_sink(**extra: Any) -> dict[str, Any]:
    """An e-mail digest sink at 08:00 Berlin time with the weekly report."""
    return {
        "name": "mail",
        "type": "email",
        "to": ["ops@example.com"],
        "on": ["*"],
        "digest": "08:00 Europe/Berlin",
        "digest_report": "weekly",
        **extra,
    }


def settings_for(tmp_path: Path, url: str, port: int = 25) -> Settings:
    """Settings with the weekly digest sink and a stuck target for ``ordered`` of 20 hours."""
    return make_settings(
        tmp_path,
        url,
        upstream={"timeout": 10},
        delivery=FAST | {"timeout": 10},
        smtp={"host": "127.0.0.1", "port": port},
        sinks=[weekly_sink()],
        alerts={"stuck": {"ordered": "20h"}},
    )


@pytest.fixture
def clock() -> Iterator[time_machine.Traveller]:
    """The wall clock, held still and moved by each test; it starts at :data:`START`."""
    with time_machine.travel(START, tick=False) as traveller:
        yield traveller


def report_of(event: Event) -> dict[str, Any] | None:
    """The weekly report a stored digest carries, if any."""
    found: dict[str, Any] | None = json.loads(event.payload)["data"]["report"]
    return found


def text_of(mail: EmailMessage, kind: str) -> str:
    """One part of a mail, decoded."""
    part = mail.get_body((kind,))
    assert part is not None
    content: str = part.get_content()
    return content


class TestWeeklyReport:
    """The Monday digest carries the week's durations, lead time, moves, SLA share and trend."""

    async def test_numbers_and_mail(
        self, upstream: Upstream, tmp_path: Path, clock: time_machine.Traveller
    ) -> None:
        """The Monday digest's report has the hand-computed numbers and its mail shows them."""
        scripted, url = upstream
        scripted.script(A, ok("waiting"), ok("ordered"), ok("checked"), ok("installation_planning"))
        scripted.script(B, ok("waiting"), ok("ordered"), ok("activated"), ok("activated"))
        mailbox = Mailbox()
        async with (
            smtp_server(mailbox) as port,
            open_service(settings_for(tmp_path, url, port)) as service,
        ):
            await service.store.orders.watch([A, B], source="cli", now=utc_now())
            # Wed 12:00 first seen (start unknown), Thu 12:00 ordered, Fri 12:00 checked or
            # activated, Sat 18:00 installation_planning.
            for moment in (START, START + timedelta(days=1), START + timedelta(days=2)):
                clock.move_to(moment)
                await poll(service, A, B)
            clock.move_to(START + timedelta(days=3, hours=6))
            await poll(service, A, B)
            clock.move_to(MONDAY - timedelta(days=1) + SETTLE)  # Sunday's digest: no report
            raised = await raise_due_digests(service.store, service.settings, now=utc_now())
            sunday = raised[-1]
            clock.move_to(MONDAY + SETTLE)
            [monday] = await raise_due_digests(service.store, service.settings, now=utc_now())
            await deliver_all(service, 60)
        assert report_of(sunday) is None
        report = report_of(monday)
        assert report is not None
        assert (report["period_start"], report["period_end"]) == (
            "2026-11-23T07:00:00Z",
            "2026-11-30T07:00:00Z",
        )
        # Stays of known start that ended in the week: A and B in ordered (a day each), A in
        # checked (Fri 12:00 to Sat 18:00: 30 hours). The waiting stays began before watching.
        assert report["durations"] == [
            {"status": "checked", "provider": None, "count": 1,
             "median_seconds": 30 * 3600.0, "p90_seconds": 30 * 3600.0},
            {"status": "ordered", "provider": None, "count": 2,
             "median_seconds": DAY, "p90_seconds": DAY},
        ]  # fmt: skip
        assert report["lead_time"] == {
            "provider": None, "count": 1, "median_seconds": DAY, "p90_seconds": DAY,
            "bins": [1] + [0] * 12,
        }  # fmt: skip
        assert [(m["from"], m["to"], m["count"]) for m in report["flow"]] == [
            ("waiting", "ordered", 2),
            ("checked", "installation_planning", 1),
            ("ordered", "activated", 1),
            ("ordered", "checked", 1),
        ]
        # Both ordered stays lasted 24 h, over the 20 h target.
        assert report["over_target"] == [
            {"status": "ordered", "provider": None, "target_seconds": 72_000.0,
             "count": 2, "over": 2, "share": 1.0},
        ]  # fmt: skip
        assert [(w["week"], w["activated"]) for w in report["weeks"]] == [
            ("2026-11-02", 0),
            ("2026-11-09", 0),
            ("2026-11-16", 0),
            ("2026-11-23", 1),
        ]
        mail = next(m for m in mailbox.messages if "30 Nov 2026" in m["Subject"])
        text = text_of(mail, "plain")
        assert "THE WEEK 2026-11-23T07:00:00Z TO 2026-11-30T07:00:00Z (UTC)" in text
        assert "Lead time ordered → activated: median 1d 0h, p90 1d 0h (1 order)" in text
        assert "2 of 2 (100 %) over 20h 0m" in text
        html = text_of(mail, "html")
        assert '<td>checked</td><td align="right">1</td><td>1d 6h</td>' in html
        assert 'bgcolor="#3b6fb6"' in html

    async def test_report_needs_a_digest(self, upstream: Upstream, tmp_path: Path) -> None:
        """``digest_report`` without ``digest`` exits 2 with one line saying what to add."""
        _scripted, url = upstream
        sink = weekly_sink()
        del sink["digest"]
        mapping = settings_mapping(tmp_path, url, sinks=[sink])
        path = write_config(tmp_path / "tracker.toml", mapping)
        ran = await tracker_cli("watch", "list", "--config", str(path))
        assert ran.code == 2
        [line] = ran.err.strip().splitlines()
        assert "digest_report needs a daily digest" in line
