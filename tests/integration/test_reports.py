"""The reports' numbers from a small history computed by hand, on SQLite and PostgreSQL.

The history (days after ``D0``, a Monday at midnight UTC):

- A (metrify) goes the whole way: seen ``waiting`` at 0, ``ordered`` 1, ``checked`` 3,
  ``installation_planning`` 6, ``activated`` 20.
- B (inexogy) comes back to ``ordered`` twice: seen ``waiting`` 0, ``ordered`` 2, ``blocked`` 3,
  ``ordered`` 5, ``blocked`` 9, ``ordered`` 10, ``checked`` 14, ``cancelled`` 15.
- C (metrify) never leaves the status it was first seen in: ``installation_planning`` at 1.
- D (metrify) was watched mid-journey: seen ``checked`` 2, ``installation_planning`` 4,
  ``activated`` 9.

Stays of known length (days): ordered A 2, B 1, 4, 4; checked A 3, B 1; installation_planning
A 14, D 5; blocked B 2, 1. The first stay of each order has no known start and no length.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.histories import D0, DAY, History, holding
from tests.schema import assert_no_drift, downgrade_to, engine_for
from tests.support import settings_mapping, tracker_cli, write_config
from tracker.config import Address, HttpUser
from tracker.insight import Period, durations, flow, lead_times, over_target, weekly
from tracker.store import Store, upgrade
from tracker.store.db import SCHEMA_HEAD
from tracker.store.tables import stays
from tracker.web import Metrics, build_app, listening

#: Every test here runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.usefixtures("database")

DAY_S = 86_400.0
A = "prdo_aaaaaaaaaaaaaaaaaaaaaaaa"
B = "prdo_bbbbbbbbbbbbbbbbbbbbbbbb"
C = "prdo_cccccccccccccccccccccccc"
D = "prdo_dddddddddddddddddddddddd"
HISTORY: History = {
    A: (
        "metrify",
        [
            (0, "waiting"),
            (1, "ordered"),
            (3, "checked"),
            (6, "installation_planning"),
            (20, "activated"),
        ],
    ),
    B: (
        "inexogy",
        [
            (0, "waiting"),
            (2, "ordered"),
            (3, "blocked"),
            (5, "ordered"),
            (9, "blocked"),
            (10, "ordered"),
            (14, "checked"),
            (15, "cancelled"),
        ],
    ),
    C: ("metrify", [(1, "installation_planning")]),
    D: ("metrify", [(2, "checked"), (4, "installation_planning"), (9, "activated")]),
}
#: Four weeks from D0.
PERIOD = Period(since=D0, until=D0 + 28 * DAY)


@pytest.fixture
async def store(database: str) -> AsyncIterator[Store]:
    """A migrated store holding :data:`HISTORY`."""
    async with holding(database, HISTORY) as opened:
        yield opened


def stay_rows(url: str) -> list[tuple[Any, ...]]:
    """Every stay, without its id, in a stable order."""
    engine = engine_for(url)
    s = stays
    with engine.connect() as conn:
        found = conn.execute(
            sa.select(
                s.c.order_id,
                s.c.status,
                s.c.provider,
                s.c.started_at,
                s.c.seen_at,
                s.c.ended_at,
                s.c.micros,
                s.c.next_status,
            ).order_by(s.c.order_id, s.c.seen_at)
        ).all()
    engine.dispose()
    return [tuple(row) for row in found]


class TestStays:
    """Recording a poll keeps each order's stays, and the migration builds the same ones."""

    async def test_stays_follow_the_transitions(self, store: Store, database: str) -> None:
        """Each order's first stay has no start, each transition ends one stay and begins
        the next, and the current stay is open."""
        rows = [r for r in stay_rows(database) if r[0] in (C, D)]
        day = 86_400_000_000
        assert rows == [
            (C, "installation_planning", "metrify", None, D0 + DAY, None, None, None),
            (D, "checked", "metrify", None, D0 + 2 * DAY, D0 + 4 * DAY, None,
             "installation_planning"),
            (D, "installation_planning", "metrify", D0 + 4 * DAY, D0 + 4 * DAY, D0 + 9 * DAY,
             5 * day, "activated"),
            (D, "activated", "metrify", D0 + 9 * DAY, D0 + 9 * DAY, None, None, None),
        ]  # fmt: skip
        b = [(r[1], r[6]) for r in stay_rows(database) if r[0] == B]
        assert b == [
            ("waiting", None),
            ("ordered", 1 * day),
            ("blocked", 2 * day),
            ("ordered", 4 * day),
            ("blocked", 1 * day),
            ("ordered", 4 * day),
            ("checked", 1 * day),
            ("cancelled", None),
        ]

    async def test_migration_backfills_the_same_stays(self, store: Store, database: str) -> None:
        """Downgrading to 0008 and upgrading again rebuilds every stay exactly as recorded."""
        recorded = stay_rows(database)
        await store.close()
        downgrade_to(database, "0008")
        assert upgrade(database) == [f"0008 -> {SCHEMA_HEAD}"]
        assert_no_drift(database)
        assert stay_rows(database) == recorded
        assert len(recorded) == 5 + 8 + 1 + 3


class TestDurations:
    """Median, p90 and count of the finished stays of known length that ended in the period."""

    async def test_per_status(self, store: Store) -> None:
        """Overall per status, interpolating linearly between closest ranks."""
        found = [
            (d.status, d.provider, d.count, d.median_seconds / DAY_S, d.p90_seconds / DAY_S)
            for d in await durations(store, PERIOD, by=False)
        ]
        assert found == [
            ("blocked", None, 2, 1.5, 1.9),
            ("checked", None, 2, 2.0, 2.8),
            ("installation_planning", None, 2, 9.5, 13.1),
            ("ordered", None, 4, 3.0, 4.0),
        ]

    async def test_per_provider(self, store: Store) -> None:
        """Per status and provider; the order that came back to ordered counts each stay."""
        found = [
            (d.status, d.provider, d.count, d.median_seconds / DAY_S, d.p90_seconds / DAY_S)
            for d in await durations(store, PERIOD, by=True)
        ]
        assert found == [
            ("blocked", "inexogy", 2, 1.5, 1.9),
            ("checked", "inexogy", 1, 1.0, 1.0),
            ("checked", "metrify", 1, 3.0, 3.0),
            ("installation_planning", "metrify", 2, 9.5, 13.1),
            ("ordered", "inexogy", 3, 4.0, 4.0),
            ("ordered", "metrify", 1, 2.0, 2.0),
        ]

    async def test_period_bounds(self, store: Store) -> None:
        """A stay counts in the period its end falls in: since inclusive, until exclusive."""
        period = Period(since=D0 + 5 * DAY, until=D0 + 10 * DAY)
        found = [
            (d.status, d.count, d.median_seconds / DAY_S)
            for d in await durations(store, period, by=False)
        ]
        assert found == [
            ("blocked", 1, 2.0),
            ("checked", 1, 3.0),
            ("installation_planning", 1, 5.0),
            ("ordered", 1, 4.0),
        ]

    async def test_empty_period(self, store: Store) -> None:
        """A period with no finished stay has no rows."""
        period = Period(since=D0 - 10 * DAY, until=D0)
        assert await durations(store, period, by=True) == []


class TestOtherReports:
    """Lead time, flow, weekly trend and the share over target, from the same history."""

    async def test_lead_time(self, store: Store) -> None:
        """Only A entered ordered by a transition before it was activated: 19 days; D's
        start is unknown (seen first in checked) and B was never activated."""
        [lead] = await lead_times(store, PERIOD, by=False)
        assert (lead.provider, lead.count, lead.median_seconds, lead.p90_seconds) == (
            None,
            1,
            19 * DAY_S,
            19 * DAY_S,
        )
        assert lead.bins == (0, 1, *([0] * 11))
        [by] = await lead_times(store, PERIOD, by=True)
        assert (by.provider, by.count) == ("metrify", 1)

    async def test_flow(self, store: Store) -> None:
        """Each transition of the period once, detours and returns included, most first."""
        found = [(f.from_status, f.to_status, f.count) for f in await flow(store, PERIOD, by=False)]
        assert found == [
            ("blocked", "ordered", 2),
            ("checked", "installation_planning", 2),
            ("installation_planning", "activated", 2),
            ("ordered", "blocked", 2),
            ("ordered", "checked", 2),
            ("waiting", "ordered", 2),
            ("checked", "cancelled", 1),
        ]

    async def test_weekly(self, store: Store) -> None:
        """Activations, cancellations and blocks (blocked and blocked_wim) per Monday week,
        every week of the period listed."""
        assert D0.weekday() == 0
        found = [
            (w.week.isoformat(), w.activated, w.cancelled, w.blocked)
            for w in await weekly(store, PERIOD)
        ]
        assert found == [
            ("2026-10-05", 0, 0, 1),
            ("2026-10-12", 1, 0, 1),
            ("2026-10-19", 1, 1, 0),
            ("2026-10-26", 0, 0, 0),
        ]

    async def test_over_target(self, store: Store) -> None:
        """Per status with a target, overall then per provider: how many stays were longer."""
        targets = {"ordered": 3 * DAY, "installation_planning": 7 * DAY}
        found = [
            (o.status, o.provider, o.count, o.over, o.share)
            for o in await over_target(store, PERIOD, targets)
        ]
        assert found == [
            ("installation_planning", None, 2, 1, 0.5),
            ("ordered", None, 4, 2, 0.5),
            ("installation_planning", "metrify", 2, 1, 0.5),
            ("ordered", "inexogy", 3, 2, 0.6667),
            ("ordered", "metrify", 1, 0, 0.0),
        ]


TOKEN = "reports-read-token-7d2f"
READ = {"Authorization": f"Bearer {TOKEN}"}
QUERY = {"since": "2026-10-05", "until": "2026-11-02"}


class TestSameNumbersEverywhere:
    """The CLI, the API and the page show the same numbers for the same period."""

    async def test_cli_api_and_page_agree(self, store: Store, tmp_path: Path) -> None:
        """durations, lead-time and flow: CLI JSON equals the API's items; the page's tables
        and CSV links hold the same values."""
        path = write_config(tmp_path / "c.toml", settings_mapping(tmp_path, "http://127.0.0.1:9"))
        users = [HttpUser.model_validate({"name": "reader", "token": TOKEN, "role": "read"})]
        targets = {"ordered": 3 * DAY}
        app = build_app(store=store, metrics=Metrics(), users=users, targets=lambda: targets)
        async with (
            listening(app, Address("127.0.0.1", 0)) as url,
            httpx.AsyncClient(base_url=url, headers=READ) as client,
        ):
            for name in ("durations", "lead-time", "flow"):
                for by in ([], ["--by", "provider"]):
                    ran = await tracker_cli(
                        "report", name, "--since", QUERY["since"], "--until", QUERY["until"],
                        *by, "--format", "json", "--config", str(path),
                    )  # fmt: skip
                    assert ran.code == 0, ran.err
                    cli_items = json.loads(ran.out)["items"]
                    params = QUERY | ({"by": "provider"} if by else {})
                    answer = await client.get(f"/api/v1/reports/{name}", params=params)
                    assert answer.status_code == 200, answer.text
                    assert answer.json()["items"] == cli_items
                    assert cli_items  # the history has something for each
                    sheet = await client.get(f"/reports/{name}.csv", params=params)
                    assert sheet.status_code == 200
                    rows = list(csv.DictReader(io.StringIO(sheet.text)))
                    assert len(rows) == len(cli_items)
                    for row, item in zip(rows, cli_items, strict=True):
                        assert int(row["count"]) == item["count"]
                        if "median_seconds" in item:
                            assert float(row["median_seconds"]) == item["median_seconds"]
                            assert float(row["p90_seconds"]) == item["p90_seconds"]
            page = await client.get("/reports", params=QUERY)
            assert page.status_code == 200
            durations_json = (await client.get("/api/v1/reports/durations", params=QUERY)).json()[
                "items"
            ]
            # Status names may break after an underscore on a phone: <wbr> is no text.
            shown = page.text.replace("<wbr>", "")
            table = shown.split('data-table="durations"', 1)[1].split("</table>", 1)[0]
            overall = re.findall(
                r'<tr class="overall"><td>([a-z_]+)</td><td>all</td><td class="num">(\d+)</td>'
                r'<td class="num" data-seconds="([0-9.]+)">.*?data-seconds="([0-9.]+)"',
                table,
            )
            assert [(s, int(n), float(m), float(p)) for s, n, m, p in overall] == [
                (i["status"], i["count"], i["median_seconds"], i["p90_seconds"])
                for i in durations_json
            ]
            flow_table = shown.split('data-table="flow"', 1)[1].split("</table>", 1)[0]
            moves = re.findall(
                r"<tr><td>([a-z_]+)</td><td>([a-z_]+)</td><td class=\"num\">(\d+)</td>",
                flow_table,
            )
            flow_json = (await client.get("/api/v1/reports/flow", params=QUERY)).json()["items"]
            assert [(f, t, int(n)) for f, t, n in moves] == [
                (i["from"], i["to"], i["count"]) for i in flow_json
            ]
            assert 'data-chart="flow"' in page.text
            assert "<script" not in page.text

    async def test_api_refuses_a_bad_period(self, store: Store) -> None:
        """A malformed date, since after until, an unknown by or parameter: 422 each."""
        users = [HttpUser.model_validate({"name": "reader", "token": TOKEN, "role": "read"})]
        app = build_app(store=store, metrics=Metrics(), users=users)
        async with (
            listening(app, Address("127.0.0.1", 0)) as url,
            httpx.AsyncClient(base_url=url, headers=READ) as client,
        ):
            for params in (
                {"since": "yesterday-ish"},
                {"since": "2026-11-02", "until": "2026-10-05"},
                {"by": "customer"},
                {"q": "x"},
            ):
                answer = await client.get("/api/v1/reports/durations", params=params)
                assert answer.status_code == 422, params
            assert (await client.get("/api/v1/reports/durations")).status_code == 200
            anonymous = await client.get("/api/v1/reports/durations", headers={"Authorization": ""})
            assert anonymous.status_code == 401
