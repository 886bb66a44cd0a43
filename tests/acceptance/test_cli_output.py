"""What the command line prints and how it exits, run as a user runs it: ids and statuses whole
at 80 and 120 columns and in a pipe, one line and exit 2 for a name that matches nothing."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.outbox import FAST, deliver_all, hook_sink, poll
from tests.support import Ran, ScriptedUpstream, ok, settings_mapping, tracker_cli, write_config
from tracker import alerts
from tracker.clock import utc_now
from tracker.config import from_mapping
from tracker.export import ExportRequest, relative_moment
from tracker.service import Service, open_service

#: Every test here runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.usefixtures("database")

A = "prdo_aaaaaaaaaaaaaaaaaaaaaaaa"
B = "prdo_bbbbbbbbbbbbbbbbbbbbbbbb"
C = "prdo_cccccccccccccccccccccccc"
#: The longest of the 14 statuses.
LONGEST = "installation_scheduled"
#: A port nothing listens on: every delivery is refused at once, and dies after its attempts.
NOWHERE = "http://127.0.0.1:9/hook"
#: A sink name as long as a status: it must stay whole too.
SINK = "operations-webhook"
#: An escape sequence that makes a terminal draw rich's cut mark, or anything else.
ANSI = re.compile(r"\x1b\[[0-9;]*m")
Upstream = tuple[ScriptedUpstream, str]
WIDTHS = ("80", "120")


@dataclass
class World:
    """A config file over a database with A moved to the longest status (its delivery dead),
    B moved ordered → checked (dead too), C only ordered, and B's stay in checked reported stuck."""

    config: str
    service: Service
    events: dict[str, str]


@pytest.fixture
async def world(upstream: Upstream, tmp_path: Path) -> AsyncIterator[World]:
    """The database the CLI reads, seeded through the real poller and outbox."""
    scripted, url = upstream
    scripted.script(A, ok("ordered"), ok(LONGEST))
    scripted.script(B, ok("ordered"), ok("checked"))
    scripted.script(C, ok("ordered"))
    mapping = settings_mapping(
        tmp_path,
        url,
        delivery=FAST,
        sinks=[hook_sink(SINK, NOWHERE, ["*"])],
        alerts={"stuck": {"checked": "1h"}},
    )
    config = str(write_config(tmp_path / "c.toml", mapping))
    settings = from_mapping(mapping, {}, origin="test")
    async with open_service(settings) as service:
        await service.store.orders.watch([A, B, C], source="cli", now=utc_now())
        await poll(service, A, B, C)
        await poll(service, A, B)
        await deliver_all(service)
        await report_stuck(service, {"checked": timedelta(hours=1)}, later=timedelta(hours=2))
        dead = [d async for d in service.store.outbox.deliveries(state="dead")]
        yield World(config=config, service=service, events={d.order_id: d.event_id for d in dead})


async def report_stuck(
    service: Service, thresholds: dict[str, timedelta], later: timedelta
) -> None:
    """Report, as the daemon's stuck check does, the stays past ``thresholds`` at now+``later``."""
    store = service.store
    now = utc_now() + later
    stays = await store.events.stuck(thresholds, now=now, limit=100)
    made = [
        (s, alerts.stuck(order_id=s.order_id, status=s.status, since=s.since,
                         threshold=thresholds[s.status], now=now, routes={}))
        for s in stays
    ]  # fmt: skip
    await store.events.report_stuck(made)


async def on_terminal(world: World, width: str, *args: str) -> Ran:
    """``tracker ARGS`` on a terminal ``width`` columns wide (rich's ``TTY_COMPATIBLE``)."""
    ran = await tracker_cli(
        *args, "--config", world.config, env={"COLUMNS": width, "TTY_COMPATIBLE": "1"}
    )
    assert ran.code == 0, ran.err
    return Ran(ran.code, ANSI.sub("", ran.out), ran.err)


async def in_pipe(world: World, *args: str) -> list[list[str]]:
    """``tracker ARGS`` writing into a pipe: its tab-separated rows, the header first."""
    ran = await tracker_cli(*args, "--config", world.config, env={"TTY_COMPATIBLE": ""})
    assert ran.code == 0, ran.err
    assert "\x1b" not in ran.out
    return [line.split("\t") for line in ran.out.splitlines()]


def widest_line(text: str) -> int:
    return max(len(line) for line in text.splitlines())


def assert_whole(out: str, *values: str) -> None:
    """Each of ``values`` stands whole on one line of ``out``, and nothing was cut short."""
    for value in values:
        assert any(value in line for line in out.splitlines()), f"{value} is cut or missing"
    assert "…" not in out


class TestTablesOnATerminal:
    """At 80 and 120 columns the tables keep every id, status and sink whole, within the width."""

    @pytest.mark.parametrize("width", WIDTHS)
    async def test_watch_list(self, world: World, width: str) -> None:
        """`watch list` shows every order id and status whole and fits the terminal."""
        ran = await on_terminal(world, width, "watch", "list")
        assert_whole(ran.out, A, B, C, LONGEST, "checked", "ordered")
        assert widest_line(ran.out) <= int(width)

    @pytest.mark.parametrize("width", WIDTHS)
    async def test_deliveries_list(self, world: World, width: str) -> None:
        """`deliveries list` shows event ids, order ids, the sink and the state whole."""
        ran = await on_terminal(world, width, "deliveries", "list")
        assert_whole(ran.out, *world.events.values(), A, B, SINK, "dead")
        assert widest_line(ran.out) <= int(width)

    @pytest.mark.parametrize("width", WIDTHS)
    async def test_status(self, world: World, width: str) -> None:
        """`status` shows statuses and sinks whole in its tables."""
        ran = await on_terminal(world, width, "status")
        assert_whole(ran.out, LONGEST, "checked", "ordered", SINK, "dead")
        assert widest_line(ran.out) <= int(width)

    @pytest.mark.parametrize("width", WIDTHS)
    async def test_history(self, world: World, width: str) -> None:
        """`history` names the order, the statuses and the event id whole."""
        ran = await on_terminal(world, width, "history", A)
        assert_whole(ran.out, A, LONGEST, world.events[A], SINK)

    async def test_too_narrow_for_a_table(self, world: World) -> None:
        """Where the whole columns do not fit side by side (80 columns), each delivery is shown
        as lines of name and value, every one of them there; at 120 it is a table."""
        wide = await on_terminal(world, "120", "deliveries", "list")
        narrow = await on_terminal(world, "80", "deliveries", "list")
        assert wide.out.split()[:4] == ["event", "order", "sink", "state"]  # one header row
        lines = [line.split() for line in narrow.out.splitlines()]
        for order_id, event_id in world.events.items():
            at = lines.index(["event", event_id])
            assert lines[at + 1 : at + 4] == [
                ["order", order_id],
                ["sink", SINK],
                ["state", "dead"],
            ]
            assert lines[at + 4][0] == "attempts"

    async def test_narrow_terminal_drops_columns_not_ids(self, world: World) -> None:
        """At 80 columns `watch list` leaves out less needed columns, never an id or status."""
        wide = await on_terminal(world, "120", "watch", "list")
        narrow = await on_terminal(world, "80", "watch", "list")
        assert "last error" in wide.out
        assert "last error" not in narrow.out
        assert_whole(narrow.out, A, B, C, LONGEST)


class TestTablesInAPipe:
    """Written into a pipe, each table is a header row and one tab-separated row per item."""

    async def test_watch_list(self, world: World) -> None:
        """`watch list` in a pipe is a header and one row per order, statuses whole."""
        header, *rows = await in_pipe(world, "watch", "list")
        assert header == [
            "order", "status", "state", "last_poll", "last_change", "failures", "last_error"
        ]  # fmt: skip
        assert {row[0]: row[1] for row in rows} == {A: LONGEST, B: "checked", C: "ordered"}
        assert {len(row) for row in rows} == {len(header)}

    async def test_deliveries_list(self, world: World) -> None:
        """`deliveries list` in a pipe has every column, with whole event and order ids."""
        header, *rows = await in_pipe(world, "deliveries", "list")
        assert header[:4] == ["event", "order", "sink", "state"]
        assert "next_attempt" in header
        assert {(row[0], row[1], row[2], row[3]) for row in rows} == {
            (world.events[A], A, SINK, "dead"),
            (world.events[B], B, SINK, "dead"),
        }

    async def test_status(self, world: World) -> None:
        """`status` in a pipe is one header-led block per table, a blank line between them."""
        ran = await tracker_cli("status", "--config", world.config, env={"TTY_COMPATIBLE": ""})
        blocks = [block.splitlines() for block in ran.out.split("\n\n")]
        assert [block[0].split("\t")[0] for block in blocks] == [
            "daemon", "status", "sink", "last_successful_poll", "change_sweeps"
        ]  # fmt: skip
        assert blocks[-1][1].startswith("off: no [watch] rule")
        assert f"{LONGEST}\tactive\t1" in blocks[1]
        assert f"{SINK}\tdead\t2" in "\n".join(blocks[2])


class TestUnknownNames:
    """A status, sink, order or event that matches nothing: one line naming it, exit 2."""

    async def test_unknown_status_filter(self, world: World) -> None:
        """`watch list --status blokced` exits 2 naming the status and the known ones."""
        ran = await tracker_cli("watch", "list", "--status", "blokced", "--config", world.config)
        assert ran.code == 2
        assert ran.out == ""
        assert ran.err.count("\n") == 1
        assert "--status 'blokced' is not a known status" in ran.err
        assert "blocked_wim" in ran.err

    async def test_known_status_with_no_orders(self, world: World) -> None:
        """A known status that no order has is an empty list, not an error."""
        ran = await tracker_cli("watch", "list", "--status", "blocked", "--config", world.config)
        assert ran.code == 0, ran.err

    async def test_unknown_sink_filter(self, world: World) -> None:
        """`deliveries list --sink nope` exits 2 naming it and the configured sinks."""
        ran = await tracker_cli("deliveries", "list", "--sink", "nope", "--config", world.config)
        assert ran.code == 2
        assert ran.err.count("\n") == 1
        assert "--sink 'nope'" in ran.err
        assert SINK in ran.err

    async def test_unknown_order_in_remove(self, world: World) -> None:
        """`watch remove` with a never-watched id exits 2 naming it, and removes nothing."""
        unknown = "prdo_unknown000000000000000"
        ran = await tracker_cli("watch", "remove", A, unknown, "--config", world.config)
        assert ran.code == 2
        assert ran.err.count("\n") == 1
        assert f"never watched: {unknown}" in ran.err
        order = await world.service.store.orders.get(A)
        assert order is not None
        assert order.active  # nothing was changed

    async def test_unknown_event_in_retry(self, world: World) -> None:
        """`deliveries retry evt_nope` exits 2 naming the event; the dead ones stay dead."""
        ran = await tracker_cli("deliveries", "retry", "evt_nope", "--config", world.config)
        assert ran.code == 2
        assert ran.err.count("\n") == 1
        assert "evt_nope" in ran.err
        states = {d.state.value async for d in world.service.store.outbox.deliveries()}
        assert states == {"dead"}

    async def test_bare_tracker_prints_help(self) -> None:
        """`tracker` alone prints the help and exits 2."""
        ran = await tracker_cli()
        assert ran.code == 2
        assert "Usage:" in ran.out + ran.err
        assert "watch" in ran.out + ran.err


class TestRetryNamesWhatItRetried:
    """`deliveries retry --all-dead` says, for each delivery, its event, order and sink."""

    async def test_all_dead(self, world: World) -> None:
        """Each attempt's line names event id, order id and sink, and no internal id."""
        ran = await tracker_cli(
            "deliveries", "retry", "--all-dead", "--config", world.config, env={"COLUMNS": "80"}
        )
        assert ran.code == 1  # the sink still refuses
        assert "2 delivery(ies) pending again" in ran.out
        for order_id in (A, B):
            line = f"{world.events[order_id]} {order_id} {SINK}: "
            assert any(row.startswith(line) for row in ran.out.splitlines()), ran.out
        assert "delivery " not in ran.out.replace("delivery(ies)", "")


class TestStuckOrders:
    """`watch list --stuck`: the orders stuck now, longest first, with since when and how long."""

    @pytest.mark.parametrize("width", WIDTHS)
    async def test_on_a_terminal(self, world: World, width: str) -> None:
        """Only the stuck order is listed, its id and status whole, within the width."""
        ran = await on_terminal(world, width, "watch", "list", "--stuck")
        assert_whole(ran.out, B, "checked")
        assert A not in ran.out
        assert C not in ran.out
        assert widest_line(ran.out) <= int(width)
        assert "1h 0m" in ran.out  # the threshold

    async def test_json_and_pipe(self, world: World) -> None:
        """`--json` is the watched order's object with `stuck`; a pipe gets the table's rows."""
        ran = await tracker_cli("watch", "list", "--stuck", "--json", "--config", world.config)
        assert ran.code == 0, ran.err
        [listed] = json.loads(ran.out)
        order = await world.service.store.orders.get(B)
        assert order is not None
        assert listed["order_id"] == B
        assert listed["status"] == "checked"
        assert listed["stuck"]["threshold_seconds"] == 3600
        since = datetime.fromisoformat(listed["stuck"]["since"])
        assert since == order.last_change_at
        header, *rows = await in_pipe(world, "watch", "list", "--stuck")
        assert header == ["order", "status", "since", "for", "threshold"]
        assert [row[:2] for row in rows] == [[B, "checked"]]

    async def test_with_a_status(self, world: World) -> None:
        """`--stuck --status` narrows the list; a status that matches nothing exits 2."""
        none = await tracker_cli(
            "watch", "list", "--stuck", "--status", "ordered", "--json", "--config", world.config
        )
        assert json.loads(none.out) == []
        typo = await tracker_cli(
            "watch", "list", "--stuck", "--status", "chekced", "--config", world.config
        )
        assert typo.code == 2
        assert "--status 'chekced'" in typo.err


class TestExportPeriods:
    """`export --since today|yesterday|7d`: midnight UTC, or N days before now."""

    def test_words_against_a_held_clock(self) -> None:
        """today and yesterday are midnights in UTC, 7d is a week before now, others are dates."""
        now = datetime(2026, 11, 29, 0, 30, tzinfo=UTC)
        assert relative_moment("today", now) == datetime(2026, 11, 29, tzinfo=UTC)
        assert relative_moment("yesterday", now) == datetime(2026, 11, 28, tzinfo=UTC)
        assert relative_moment("7d", now) == datetime(2026, 11, 22, 0, 30, tzinfo=UTC)
        assert relative_moment("2026-11-29", now) is None
        assert relative_moment("d", now) is None
        asked = ExportRequest.parse(
            since="yesterday", until="today", fmt="csv", status=None, now=now
        )
        assert (asked.since, asked.until) == (
            datetime(2026, 11, 28, tzinfo=UTC),
            datetime(2026, 11, 29, tzinfo=UTC),
        )

    async def test_today_and_7d_on_the_command_line(self, world: World) -> None:
        """`--since today` and `--since 7d` export the transitions just detected;
        `--until yesterday` none of them."""
        day = utc_now().date()
        today = await tracker_cli("export", "--since", "today", "--format", "ndjson",
                                  "--config", world.config)  # fmt: skip
        week = await tracker_cli("export", "--since", "7d", "--format", "ndjson",
                                 "--config", world.config)  # fmt: skip
        before = await tracker_cli("export", "--since", "2000-01-01", "--until", "yesterday",
                                   "--format", "ndjson", "--config", world.config)  # fmt: skip
        assert today.code == week.code == before.code == 0, today.err + week.err + before.err
        if utc_now().date() != day:  # midnight passed while the exports ran: today moved
            return
        moved = {(A, LONGEST), (B, "checked")}
        for ran in (today, week):
            rows = [json.loads(line) for line in ran.out.splitlines()]
            assert {(r["order_id"], r["to_status"]) for r in rows} == moved
        assert before.out == ""

    async def test_a_word_it_does_not_know(self, world: World) -> None:
        """`--since tomorrow` exits 2 saying which forms there are."""
        ran = await tracker_cli("export", "--since", "tomorrow", "--config", world.config)
        assert ran.code == 2
        assert "--since 'tomorrow' is not a date" in ran.err
