"""The order page's journey, field changes and alerts, and ``tracker history``'s alerts, on a
real server over both databases, with an order polled across days (the clock moved)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import markupsafe
import pytest
import time_machine

from tests.outbox import hook_sink, poll
from tests.support import (
    ScriptedUpstream,
    app_client,
    ok,
    settings_mapping,
    tracker_cli,
    write_config,
)
from tracker import alerts
from tracker.clock import utc_now
from tracker.config import from_mapping
from tracker.service import Service, open_service
from tracker.web import Metrics, build_app

#: Every test here runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.usefixtures("database")

J = "prdo_jjjjjjjjjjjjjjjjjjjjjjjj"
READ_TOKEN = "read-token-3c9e1a7f5b2d8e4a"
USERS = [{"name": "support-ui", "token": READ_TOKEN, "role": "read"}]
NOWHERE = "http://127.0.0.1:9/hook"
HOSTILE = "<img src=x onerror=alert(1)>" + "x" * 400
#: J's answers, days before now: seen first in ordered, a detour through blocked_wim, back to
#: checked (its second visit), then a nested field and a hostile long field change.
SCRIPT = [
    (-10.0, "ordered", {}),
    (-8.0, "checked", {}),
    (-6.0, "blocked_wim", {}),
    (-2.0, "checked", {}),
    (
        -1.0,
        "checked",
        {
            "updated_at": "2026-11-30T08:00:00Z",  # a tracked field: a new snapshot is stored
            "address": {"city": "Bonn", "zip": "50667"},
            "note": HOSTILE,
        },
    ),
]
Upstream = tuple[ScriptedUpstream, str]


@dataclass
class World:
    """J polled at its script's times with alerts raised, the pages served, a config file."""

    client: httpx.AsyncClient
    service: Service
    config: Path


async def raise_alerts(service: Service) -> None:
    """Polls of J failing (5 days ago), then polled again, then stuck in checked (now)."""
    now = utc_now()
    failing = alerts.poll_failing(
        order_id=J, status="blocked_wim", failures=3, error_kind="server_error",
        error="scripted 503", now=now - timedelta(days=5), routes={},
    )  # fmt: skip
    back = alerts.poll_recovered(
        order_id=J, status="blocked_wim", failures=3, now=now - timedelta(days=4), routes={}
    )
    stuck = alerts.stuck(
        order_id=J, status="checked", since=now - timedelta(days=2),
        threshold=timedelta(days=1), now=now, routes={},
    )  # fmt: skip
    await service.store.events.raise_events([stuck, failing, back])


@pytest.fixture
async def world(upstream: Upstream, tmp_path: Path) -> AsyncIterator[World]:
    """The order J through its script, its alerts, the pages, and a config file for the CLI."""
    scripted, url = upstream
    base = {"address": {"city": "Köln", "zip": "50667"}, "note": "short"}
    scripted.script(J, *(ok(status, **(base | changes)) for _days, status, changes in SCRIPT))
    mapping = settings_mapping(
        tmp_path,
        url,
        sinks=[hook_sink("ops", NOWHERE, ["*->cancelled"])],
        http={"listen": "127.0.0.1:0", "users": USERS},
    )
    config = write_config(tmp_path / "c.toml", mapping)
    settings = from_mapping(mapping, {}, origin="test")
    now = utc_now()
    async with open_service(settings) as service:
        with time_machine.travel(now + timedelta(days=SCRIPT[0][0], minutes=-5), tick=True):
            await service.store.orders.watch([J], source="cli", now=utc_now())
        for days, _status, _changes in SCRIPT:
            with time_machine.travel(now + timedelta(days=days), tick=False):
                await poll(service, J)
        await raise_alerts(service)
        app = build_app(store=service.store, metrics=Metrics(), users=settings.http.users)
        async with app_client(app) as (_base, client):
            answer = await client.post("/login", data={"token": READ_TOKEN})
            assert answer.status_code == 303
            yield World(client=client, service=service, config=config)


def section(text: str, start: str, end: str) -> str:
    return text[text.index(start) : text.index(end, text.index(start))]


def step(path: str, status: str) -> str:
    """The ``<li>`` of ``status`` in a journey path's HTML."""
    found = re.search(rf'<li class="jstep [^"]*"[^>]*data-status="{status}">(.*?)</li>', path, re.S)
    assert found is not None, status
    return found.group(0)


class TestJourney:
    """The journey shows each step's place and time, the detour apart and the route."""

    async def test_steps_times_and_detour(self, world: World) -> None:
        """Before watching and ordered are unknown, checked adds its two visits and runs to now,
        blocked_wim is a detour of 4 days, the rest are not reached."""
        page = await world.client.get(f"/orders/{J}")
        assert page.status_code == 200
        journey = section(page.text, 'class="journey"', "</section>")
        main = section(journey, 'aria-label="main path"', "</ol>")
        assert re.findall(r'data-status="(\w+)"', main) == [
            "intended", "waiting", "ordered", "checked", "installation_planning",
            "installation_scheduled", "installation_waiting", "installation_finished",
            "installed", "activated",
        ]  # fmt: skip
        intended = step(main, "intended")
        assert "place-before_watching" in intended
        assert "unknown" in intended
        ordered = step(main, "ordered")
        assert "place-passed" in ordered
        assert '<span class="time">unknown</span>' in ordered
        checked = step(main, "checked")
        assert 'aria-current="step"' in checked
        assert "4d 0h so far" in checked  # 8→6 days ago and 2 days ago → now
        assert "2 visits" in checked
        assert "place-ahead" in step(main, "activated")
        detours = section(journey, 'aria-label="detours"', "</ul>")
        assert "4d 0h" in step(detours, "blocked_wim")
        assert "blocked_wim" not in main
        route = section(journey, 'class="route"', "</ol>")
        assert route.count("<li") == 4
        assert "from before watching began" in route

    async def test_changed_fields_are_escaped_and_clipped(self, world: World) -> None:
        """The last snapshot lists address.city "Köln" → "Bonn" and the hostile note, escaped
        and clipped with its length said."""
        page = await world.client.get(f"/orders/{J}")
        timeline = page.text[page.text.index('class="timeline"') :]
        assert timeline.count('class="changes"') == 4  # every snapshot after the first
        last = timeline[timeline.rindex('class="changes"') :]
        row = section(last, "address.city", "</tr>")
        assert "&#34;Köln&#34;" in row
        assert "&#34;Bonn&#34;" in row
        assert "changed" in row
        assert "address.zip" not in last  # unchanged
        assert "&#34;2026-11-30T08:00:00Z&#34;" in section(last, ">updated_at<", "</tr>")
        note = section(last, ">note<", "</tr>")
        assert "<img" not in page.text
        assert str(markupsafe.escape('"<img src=x onerror=alert(1)>')) in note
        assert f"clipped: {len(json.dumps(HOSTILE))} characters in all" in note

    async def test_alerts_in_time_order(self, world: World) -> None:
        """The three alerts sit on the timeline, marked, among the transitions by time."""
        page = await world.client.get(f"/orders/{J}")
        timeline = page.text[page.text.index('class="timeline"') :]
        marks = re.findall(r'data-alert="(\w+)"|class="(move|snap)"', timeline)
        order = [alert or kind for alert, kind in marks]
        assert order == [
            "snap", "move", "move", "poll_failing", "poll_recovered", "move", "snap", "stuck",
        ]  # fmt: skip
        assert timeline.count('<span class="alert-mark">Alert</span>') == 3
        assert "3 failed polls in a row: server_error: scripted 503" in timeline
        assert "stuck in checked since" in timeline


class TestHistoryAlerts:
    """``tracker history`` shows the order's alerts: marked in the table, listed in --json."""

    async def test_table_and_json(self, world: World) -> None:
        """--json lists the alerts oldest first, marked; the table puts them among the
        transitions in time order, each marked ALERT."""
        ran = await tracker_cli("history", J, "--json", "--config", str(world.config))
        assert ran.code == 0, ran.err
        found = json.loads(ran.out)
        assert [a["kind"] for a in found["alerts"]] == ["poll_failing", "poll_recovered", "stuck"]
        assert all(a["alert"] is True for a in found["alerts"])
        assert found["alerts"][0]["details"]["failures"] == 3
        assert found["alerts"][2]["details"]["threshold"] == "P1D"
        assert len(found["transitions"]) == 3
        ran = await tracker_cli("history", J, "--config", str(world.config))
        assert ran.code == 0, ran.err
        lines = ran.out.splitlines()
        marked = [n for n, line in enumerate(lines) if "ALERT" in line]
        moves = [n for n, line in enumerate(lines) if "→" in line and "ALERT" not in line]
        assert len(marked) == 3
        assert "ALERT poll_failing" in lines[marked[0]]
        assert moves[1] < marked[0] < marked[1] < moves[2] < marked[2]
