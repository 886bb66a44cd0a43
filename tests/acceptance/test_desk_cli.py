"""``tracker deliveries retry`` narrowed to a sink or an order, run as a user runs it: each
retried delivery is named by event, order and sink; an unknown event, sink or order is one line
and exit 2, with nothing retried."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.outbox import FAST, deliver_all, hook_sink, poll
from tests.support import ScriptedUpstream, ok, settings_mapping, tracker_cli, write_config
from tracker.clock import utc_now
from tracker.config import from_mapping
from tracker.service import Service, open_service

#: Every test here runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.usefixtures("database")

A = "prdo_aaaaaaaaaaaaaaaaaaaaaaaa"
B = "prdo_bbbbbbbbbbbbbbbbbbbbbbbb"
#: A port nothing listens on: every delivery is refused at once, and dies after its attempts.
NOWHERE = "http://127.0.0.1:9/hook"
SINK = "operations-webhook"
Upstream = tuple[ScriptedUpstream, str]


@dataclass
class World:
    """A config file over a database where A and B each moved once, both deliveries dead."""

    config: str
    service: Service
    events: dict[str, str]


@pytest.fixture
async def world(upstream: Upstream, tmp_path: Path) -> AsyncIterator[World]:
    """The database the CLI reads, seeded through the real poller and outbox."""
    scripted, url = upstream
    scripted.script(A, ok("ordered"), ok("checked"))
    scripted.script(B, ok("ordered"), ok("checked"))
    mapping = settings_mapping(
        tmp_path, url, delivery=FAST, sinks=[hook_sink(SINK, NOWHERE, ["*"])]
    )
    config = str(write_config(tmp_path / "c.toml", mapping))
    settings = from_mapping(mapping, {}, origin="test")
    async with open_service(settings) as service:
        await service.store.orders.watch([A, B], source="cli", now=utc_now())
        await poll(service, A, B)
        await poll(service, A, B)
        await deliver_all(service)
        dead = [d async for d in service.store.outbox.deliveries(state="dead")]
        yield World(config=config, service=service, events={d.order_id: d.event_id for d in dead})


async def dead_orders(world: World) -> list[str]:
    """The orders whose deliveries are dead, sorted."""
    found = world.service.store.outbox.deliveries(state="dead")
    return sorted([d.order_id async for d in found])


class TestBulkRetry:
    """`deliveries retry --all-dead [--sink NAME] [--order ID]`."""

    async def test_one_order_of_one_sink(self, world: World) -> None:
        """Only the order's dead delivery is retried, named by event, order and sink."""
        ran = await tracker_cli(
            "deliveries", "retry", "--all-dead", "--sink", SINK, "--order", A,
            "--config", world.config, env={"COLUMNS": "80"},
        )  # fmt: skip
        assert ran.code == 1, ran.err  # the sink still refuses
        assert "1 delivery(ies) pending again" in ran.out
        assert any(
            line.startswith(f"{world.events[A]} {A} {SINK}: ") for line in ran.out.splitlines()
        ), ran.out
        assert world.events[B] not in ran.out
        assert await dead_orders(world) == [B]  # A's is pending its next attempt

    async def test_one_event(self, world: World) -> None:
        """`retry EVENT_ID` names the event's order and sink."""
        ran = await tracker_cli(
            "deliveries", "retry", world.events[B], "--config", world.config, env={"COLUMNS": "80"}
        )
        assert ran.code == 1, ran.err
        assert f"{world.events[B]} {B} {SINK}: " in ran.out
        assert world.events[A] not in ran.out
        assert await dead_orders(world) == [A]

    @pytest.mark.parametrize(
        ("args", "named"),
        [
            (("--all-dead", "--sink", "nosuch"), "nosuch"),
            (("--all-dead", "--order", "prdo_neverwatched"), "prdo_neverwatched"),
            (("--all-dead", "--order", "nonsense"), "nonsense"),
            (("evt_nope",), "evt_nope"),
            (("--sink", SINK), "--all-dead"),
        ],
        ids=["sink", "order", "malformed-order", "event", "sink-without-all-dead"],
    )
    async def test_unknown_is_one_line(
        self, world: World, args: tuple[str, ...], named: str
    ) -> None:
        """An unknown sink, order or event is exit 2 with one line naming it; nothing moves."""
        ran = await tracker_cli("deliveries", "retry", *args, "--config", world.config)
        assert ran.code == 2, ran.out
        assert ran.err.count("\n") == 1, ran.err
        assert named in ran.err
        assert await dead_orders(world) == [A, B]
