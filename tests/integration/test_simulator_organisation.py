"""The simulated organisation on a local server: change and creation sweeps, on a held clock."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.support import ROOT
from tracker.demo.organisation import Organisation, Script, next_status, timestamp
from tracker.demo.serving import serve
from tracker.demo.simulator import API_VERSION, Simulator
from tracker.errors import ConfigError

TOKEN = "nom_organisation_test_token"
#: The wall-clock moment the simulator starts, on the clocks the tests hold.
START = datetime(2026, 11, 25, 12, tzinfo=UTC).timestamp()
HOUR = 3600.0
Item = dict[str, Any]


@dataclass
class Clocks:
    """The simulator's two clocks, moved by hand: what has happened is what the test says."""

    now: dict[str, float] = field(default_factory=lambda: {"monotonic": 500.0, "wall": START})

    def monotonic(self) -> float:
        """The simulator's monotonic clock."""
        return self.now["monotonic"]

    def wall(self) -> float:
        """The simulator's wall clock."""
        return self.now["wall"]

    def forward(self, seconds: float) -> None:
        """Move both clocks ``seconds`` on."""
        for which in self.now:
            self.now[which] += seconds


@dataclass
class Upstream:
    """A running simulator with an organisation, its held clocks and a client on it."""

    simulator: Simulator
    organisation: Organisation
    clocks: Clocks
    client: httpx.AsyncClient


@contextlib.asynccontextmanager
async def upstream(
    organisation: Organisation, scripts: list[Script] | None = None, **kwargs: Any
) -> AsyncIterator[Upstream]:
    """``organisation`` (and ``scripts``) served on a local port, on clocks the test holds."""
    clocks = Clocks()
    simulator = Simulator(
        scripts or [],
        organisation=organisation,
        static_token=TOKEN,
        clock=clocks.monotonic,
        wall_clock=clocks.wall,
        **kwargs,
    )
    async with (
        serve(simulator.app) as server,
        httpx.AsyncClient(
            base_url=server.url,
            headers={"Authorization": f"Bearer {TOKEN}", "X-API-Version": API_VERSION},
            timeout=10,
            trust_env=False,
        ) as client,
    ):
        yield Upstream(simulator, organisation, clocks, client)


async def sweep(
    client: httpx.AsyncClient, between: Callable[[int], None] | None = None, /, **params: Any
) -> list[Item]:
    """Every item of a list, page after page; ``between(n)`` runs after page ``n`` (from 1)."""
    items: list[Item] = []
    cursor: str | None = None
    pages = 0
    while True:
        paging = {"cursor": cursor} if cursor else {}
        answer = await client.get("/meter-orders", params={**params, **paging})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        items += body["items"]
        pages += 1
        cursor = body["next_page"]
        if cursor is None:
            return items
        if between is not None:
            between(pages)


def ids(items: list[Item]) -> list[str]:
    """The order ids of ``items``, in order."""
    return [item["id"] for item in items]


def newest_first(items: list[Item]) -> bool:
    """Whether ``items`` are newest first by created_at (ties: id descending)."""
    keys = [(item["created_at"], item["id"]) for item in items]
    return keys == sorted(keys, reverse=True)


class TestChangeSweeps:
    """``filter[updated_at][gte]`` returns exactly the orders changed since, or nothing if stale."""

    async def test_updated_since_is_exactly_the_orders_changed_since(self) -> None:
        """updated_at gte T returns exactly the orders changed since T, newest first, over pages."""
        async with upstream(Organisation(2000, change_share_per_hour=0.05)) as up:
            up.clocks.forward(HOUR / 2)
            since = timestamp(up.clocks.wall())
            up.clocks.forward(HOUR / 2)
            everything = await sweep(up.client, limit=100)
            found = await sweep(up.client, limit=7, **{"filter[updated_at][gte]": since})
        changes = up.simulator.changes
        assert len(changes) == 100
        changed = {c.order_id for c in changes if timestamp(c.wall) >= since}
        assert 40 <= len(changed) <= 51
        assert ids(found) == [item["id"] for item in everything if item["id"] in changed]
        assert newest_first(found)
        assert all(item["updated_at"] >= since for item in found)

    async def test_stale_updated_at_hides_status_changes_from_change_sweeps(self) -> None:
        """With stale_updated_at, orders change status but updated_at gte the start finds none."""
        organisation = Organisation(2000, change_share_per_hour=0.05, stale_updated_at=True)
        script = Script(
            order_id="prdo_" + "s" * 24, provider="metrify", steps=(("waiting", 60), ("ordered", 0))
        )
        async with upstream(organisation, [script], stale_updated_at=True) as up:
            started = timestamp(up.clocks.wall())
            up.clocks.forward(HOUR)
            after = timestamp(START + 1)
            found = await sweep(up.client, limit=100, **{"filter[updated_at][gte]": after})
            changed = organisation.changes[-1]
            answer = (await up.client.get(f"/meter-orders/{changed.order_id}")).json()
            scripted = (await up.client.get(f"/meter-orders/{script.order_id}")).json()
        assert len(organisation.changes) == 100
        assert len(up.simulator.changes) == 101
        assert found == []
        assert answer["status"] == up.simulator.status_of(changed.order_id) == changed.status
        assert answer["updated_at"] == answer["created_at"] < started
        assert (scripted["status"], scripted["updated_at"]) == ("ordered", started)

    async def test_an_ignored_updated_at_filter_returns_everything(self) -> None:
        """With the updated_at filter ignored, a change sweep gets the whole list back."""
        async with upstream(Organisation(300), ignore_filters=("updated_at",)) as up:
            up.clocks.forward(HOUR)
            found = await sweep(
                up.client, limit=100, **{"filter[updated_at][gte]": timestamp(up.clocks.wall())}
            )
            everything = await sweep(up.client, limit=100)
        assert len(found) == 300
        assert found == everything

    async def test_a_page_reads_about_the_items_it_returns(self) -> None:
        """A change sweep over 50,000 orders reads the changed orders only, not the whole list."""
        read: list[str] = []

        class Counted(Organisation):
            def body(self, order: str) -> dict[str, str]:
                read.append(order)
                return super().body(order)

        async with upstream(Counted(50_000, change_share_per_hour=0.001)) as up:
            up.clocks.forward(HOUR)
            found = await sweep(
                up.client, limit=10, **{"filter[updated_at][gte]": timestamp(START + 1)}
            )
            read.clear()
            month = await sweep(
                up.client, limit=100, **{"filter[updated_at][gte]": "2026-11-01T00:00:00Z"}
            )
        assert len(found) == len({c.order_id for c in up.simulator.changes}) > 40
        # The orders created since November 1st, and the ones changed since: a few thousand,
        # each read once, but for the first of each next page (read to know there is one).
        pages = -(-len(month) // 100)
        assert len(read) == len(month) + pages - 1
        assert 1000 < len(month) < 50_000 // 5


class TestCreationSweeps:
    """New orders appear at the front; ``filter[created_at][gte]`` finds them; cursors hold."""

    async def test_created_since_finds_the_new_orders(self) -> None:
        """created_at gte the start finds the scheduled and the created orders, newest first."""
        async with upstream(Organisation(1000, new_per_hour=60)) as up:
            up.clocks.forward(630)
            made = up.organisation.create(2)
            up.clocks.forward(1)
            started = timestamp(START)
            found = await sweep(up.client, limit=3, **{"filter[created_at][gte]": started})
            updated = await sweep(up.client, limit=3, **{"filter[updated_at][gte]": started})
            answers = [(await up.client.get(f"/meter-orders/{order}")).json() for order in made]
        creations = up.organisation.creations
        assert len(creations) == 12
        assert set(ids(found)) == {c.order_id for c in creations}
        assert set(made) < set(ids(found))
        assert newest_first(found)
        assert ids(found)[:2] == sorted(made, reverse=True)
        assert updated == found
        assert [a["status"] for a in answers] == ["waiting", "waiting"]
        assert {a["created_at"] for a in answers} == {timestamp(START + 630)}

    async def test_cursors_survive_new_orders_mid_sweep(self) -> None:
        """New orders created during a sweep lose no listed order and repeat none."""
        async with upstream(Organisation(500)) as up:

            def create(page: int) -> None:
                up.clocks.forward(30)
                up.organisation.create(page % 3)

            before = await sweep(up.client, limit=100)
            during = await sweep(up.client, create, limit=9)
            after = await sweep(up.client, limit=100)
        assert len(during) == len(set(ids(during))) == 500
        assert ids(during) == ids(before)
        assert len(after) == 500 + len(up.organisation.creations) > 500
        assert ids(after)[-500:] == ids(before)


class TestChangesOnTheClock:
    """A share of the orders changes per hour, one main-path step each, at exact moments."""

    async def test_the_configured_share_changes_per_hour(self) -> None:
        """A 1,000-order organisation at 10 % an hour changes 100 orders each simulated hour."""
        async with upstream(Organisation(1000, change_share_per_hour=0.1)) as up:
            first = {item["id"]: item["status"] for item in await sweep(up.client, limit=100)}
            for _minute in range(60):
                up.clocks.forward(60)
                await up.client.get("/meter-orders", params={"limit": 1})
            one_hour = up.simulator.changes
            up.clocks.forward(HOUR)
            two_hours = up.simulator.changes
        assert len(one_hour) == 100
        assert len(two_hours) == 200
        assert [c.monotonic - 500.0 for c in one_hour[:3]] == [36.0, 72.0, 108.0]
        assert all(c.wall - c.monotonic == START - 500.0 for c in two_hours)
        status = dict(first)
        for change in two_hours:
            assert change.status == next_status(status[change.order_id])
            status[change.order_id] = change.status

    async def test_explicit_change_and_create(self) -> None:
        """change() moves an order now (a step, or to a given status); create() adds orders now."""
        organisation = Organisation(30, change_share_per_hour=0)
        async with upstream(organisation) as up:
            order = organisation.order_ids()[0]
            before = (await up.client.get(f"/meter-orders/{order}")).json()
            up.clocks.forward(90)
            stepped = organisation.change(order)
            stepped_body = (await up.client.get(f"/meter-orders/{order}")).json()
            up.clocks.forward(10)
            blocked = organisation.change(order, "blocked")
            final = organisation.change(order, "cancelled")
            with pytest.raises(ValueError, match="final"):
                organisation.change(order)
            with pytest.raises(KeyError, match="not an order"):
                organisation.change("prdo_" + "x" * 24)
            (made,) = organisation.create()
            made_body = (await up.client.get(f"/meter-orders/{made}")).json()
            unknown = await up.client.get(f"/meter-orders/{'prdo_' + 'x' * 24}")
        assert stepped.status == stepped_body["status"] == next_status(before["status"])
        assert stepped_body["updated_at"] == timestamp(START + 90)
        assert (blocked.status, final.status) == ("blocked", "cancelled")
        assert up.simulator.changes == [stepped, blocked, final]
        assert stepped.monotonic == 590.0
        assert (made_body["status"], made_body["created_at"]) == ("waiting", timestamp(START + 100))
        assert organisation.size == 31
        assert unknown.status_code == 404

    def test_bad_sizes_are_refused_with_one_line(self) -> None:
        """A negative size, share or rate is refused with a message naming them."""
        with pytest.raises(ConfigError, match="must not be negative"):
            Organisation(-1)


class TestCommandLine:
    """``python -m tracker.demo.simulator --organisation N`` serves it and announces it."""

    async def test_an_organisation_from_the_command_line(self) -> None:
        """--organisation serves N orders, announcing the first hundred ids and the count."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tracker.demo.simulator",
            *("--organisation", "2500", "--change-share", "0.5", "--new-per-hour", "10"),
            *("--stale-updated-at", "--port", "0", "--token", TOKEN),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        assert process.stdout is not None
        try:
            announced = json.loads(await asyncio.wait_for(process.stdout.readline(), 60))
            async with httpx.AsyncClient(
                base_url=announced["url"],
                headers={"Authorization": f"Bearer {TOKEN}", "X-API-Version": API_VERSION},
                timeout=10,
                trust_env=False,
            ) as client:
                first = (await client.get(f"/meter-orders/{announced['orders'][0]}")).json()
                listed = (await client.get("/meter-orders", params={"limit": 100})).json()
        finally:
            process.terminate()
            await process.wait()
        assert announced["organisation"] == 2500
        assert len(announced["orders"]) == 100
        assert first["id"] == announced["orders"][0]
        assert len(listed["items"]) == 100
        assert listed["has_more"] is True
