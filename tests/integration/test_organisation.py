"""Watching the organisation against the simulated upstream: rules, change sweeps, trust."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from sqlalchemy import func, select
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.processes import start_daemon
from tests.processes import stop as stop_daemon
from tests.support import (
    STATIC_TOKEN,
    app_client,
    make_settings,
    run_until,
    settings_mapping,
    tracker_cli,
    write_config,
)
from tracker.clock import utc_now
from tracker.demo.hints import HintTarget
from tracker.demo.organisation import Organisation
from tracker.demo.serving import serve
from tracker.demo.simulator import Script, Simulator, order_id, steady_scripts
from tracker.organisation import STATE
from tracker.service import Service, open_service
from tracker.store.tables import snapshots, transitions, watched_orders
from tracker.trust import SweepState
from tracker.web import Metrics, build_app

#: Orders that move while a test runs: ordered, then checked a few seconds after the start.
MOVING = [
    Script(
        order_id=order_id(f"org-moving-{i}"),
        provider="metrify",
        steps=(("ordered", 4.0 + i), ("checked", 0.0)),
    )
    for i in range(3)
]
#: Polls by id only every hour: whatever changes is learned from the organisation's sweeps.
SLOW_POLLS = {"interval": 3600, "jitter": 0, "changes_every": 0.5}


@asynccontextmanager
async def upstream(scripts: list[Script], **options: Any) -> AsyncIterator[tuple[Simulator, str]]:
    """The simulated organisation on a local port."""
    sim = Simulator(scripts, static_token=STATIC_TOKEN, **options)
    async with serve(sim.app) as server:
        yield sim, server.url


async def count(service: Service, query: Any) -> int:
    """One number from the test's database."""
    async with service.store._engine.connect() as conn:
        return int(await conn.scalar(query) or 0)


async def watched_ids(service: Service) -> set[str]:
    """The ids of every order the test's database watches."""
    async with service.store._engine.connect() as conn:
        return set(await conn.scalars(select(watched_orders.c.order_id)))


async def kept(service: Service) -> SweepState:
    """The organisation's sweep state as the database keeps it."""
    return SweepState.loads(await service.store.sweeps.load(STATE))


class TestRules:
    """Orders matching a ``[watch]`` rule are watched without anyone adding them."""

    async def test_all_watches_every_order(self, database: str, tmp_path: Path) -> None:
        """`all = true` watches every order of the organisation, source rule, one snapshot each."""
        async with upstream(steady_scripts(5), unwatched=130) as (sim, url):
            settings = make_settings(tmp_path, url, polling=SLOW_POLLS, watch={"all": True})
            async with open_service(settings) as service:

                async def all_watched() -> bool:
                    return (await kept(service)).created_cursor is not None

                await run_until(service, all_watched)
                watched = await count(service, select(func.count()).select_from(watched_orders))
                sources = await count(
                    service,
                    select(func.count())
                    .select_from(watched_orders)
                    .where(watched_orders.c.source == "rule", watched_orders.c.status.is_not(None)),
                )
                stored = await count(service, select(func.count()).select_from(snapshots))
        assert watched == sources == stored == 135
        assert sim.stats.id_requests == 0  # every first snapshot came from the list's pages
        assert sim.stats.list_requests >= 2  # 135 orders: two pages of 100

    async def test_customers_rule_watches_only_theirs(self, database: str, tmp_path: Path) -> None:
        """A `customers` rule watches those customers' orders and no other."""
        scripts = steady_scripts(6)
        wanted = [script.order_id for script in scripts[:2]]
        customers = ["cus_" + order[5:] for order in wanted]
        async with upstream(scripts, unwatched=20) as (_sim, url):
            settings = make_settings(
                tmp_path, url, polling=SLOW_POLLS, watch={"customers": customers}
            )
            async with open_service(settings) as service:

                async def read() -> bool:
                    return (await kept(service)).created_cursor is not None

                await run_until(service, read)
                ids = await watched_ids(service)
        assert ids == set(wanted)

    async def test_watch_list_by_source(self, database: str, tmp_path: Path) -> None:
        """`watch list --source rule|manual` tells orders found by rule from those added by hand."""
        scripts = steady_scripts(3)
        by_hand = order_id("org-by-hand")
        customers = ["cus_" + scripts[0].order_id[5:]]
        polling = SLOW_POLLS
        async with upstream(scripts) as (_sim, url):
            mapping = settings_mapping(
                tmp_path, url, polling=polling, watch={"customers": customers}
            )
            config = str(write_config(tmp_path / "tracker.toml", mapping))
            settings = make_settings(tmp_path, url, polling=polling, watch={"customers": customers})
            async with open_service(settings) as service:
                await service.store.orders.watch([by_hand], source="cli", now=utc_now())

                async def read() -> bool:
                    return (await kept(service)).created_cursor is not None

                await run_until(service, read)
            rule = await tracker_cli(
                "watch", "list", "--source", "rule", "--json", "--config", config
            )
            manual = await tracker_cli(
                "watch", "list", "--source", "manual", "--json", "--config", config
            )
            wrong = await tracker_cli("watch", "list", "--source", "config", "--config", config)
        assert [(o["order_id"], o["source"]) for o in json.loads(rule.out)] == [
            (scripts[0].order_id, "rule")
        ]
        assert [(o["order_id"], o["source"]) for o in json.loads(manual.out)] == [(by_hand, "cli")]
        assert wrong.code == 2
        assert wrong.err.strip().endswith("--source 'config': give rule or manual")

    async def test_narrowing_a_rule_keeps_what_it_added(
        self, database: str, tmp_path: Path
    ) -> None:
        """A rule narrowed on reload adds only what still matches; what it added stays watched."""
        organisation = Organisation(8, change_share_per_hour=0, seed="org-narrowed")
        kept_one, dropped_one = order_id("org-narrowed-8"), order_id("org-narrowed-9")
        async with upstream([], organisation=organisation) as (_sim, url):
            settings = make_settings(tmp_path, url, polling=SLOW_POLLS, watch={"all": True})
            async with open_service(settings) as service:
                stop = asyncio.Event()
                daemon = service.daemon()
                running = asyncio.create_task(daemon.run(stop))
                try:
                    async with asyncio.timeout(120):  # ends a hang only
                        while len(await watched_ids(service)) < 8:  # noqa: ASYNC110
                            await asyncio.sleep(0.05)
                        narrowed = make_settings(
                            tmp_path,
                            url,
                            polling=SLOW_POLLS,
                            watch={"customers": ["cus_" + kept_one[5:]]},
                        )
                        await daemon.reconfigure(narrowed, {})
                        assert organisation.create(2) == [kept_one, dropped_one]
                        while kept_one not in await watched_ids(service):  # noqa: ASYNC110
                            await asyncio.sleep(0.05)
                finally:
                    stop.set()
                    await asyncio.wait_for(running, 10)
                orders = [order async for order in service.store.orders.watched()]
        active = {order.order_id for order in orders if order.active}
        assert active == {*organisation.order_ids(8), kept_one}
        assert dropped_one not in {order.order_id for order in orders}
        assert {order.source for order in orders} == {"rule"}

    async def test_final_orders_retire_and_stay_retired(
        self, database: str, tmp_path: Path
    ) -> None:
        """An order found by rule retires after its final status and grace, and later sweeps
        that list it do not watch it again."""
        done = Script(order_id=order_id("org-done"), provider="metrify", steps=(("activated", 0),))
        polling = {"interval": 1, "jitter": 0, "changes_every": 0.5, "final_grace": 1}
        async with upstream([done, *steady_scripts(2)]) as (_sim, url):
            settings = make_settings(tmp_path, url, polling=polling, watch={"all": True})
            async with open_service(settings) as service:
                sweeps: list[datetime] = []

                async def retired_then_swept_twice() -> bool:
                    order = await service.store.orders.get(done.order_id)
                    swept = (await kept(service)).swept_at
                    retired = order is not None and order.retired_at is not None
                    if retired and swept and (not sweeps or swept > sweeps[-1]):
                        sweeps.append(swept)  # a change sweep (listing it) since it retired
                    return len(sweeps) >= 3

                await run_until(service, retired_then_swept_twice)
                order = await service.store.orders.get(done.order_id)
        assert order is not None
        assert not order.active
        assert order.retired_at is not None
        assert order.source == "rule"


async def transitions_of(service: Service, order: str) -> list[tuple[str | None, str]]:
    """The order's stored transitions, oldest first."""
    history = await service.store.reports.history(order)
    assert history is not None
    return [(t.from_status, t.to_status) for t in history.transitions]


class TestChangeSweeps:
    """Orders updated since the last sweep are learned from one page, as a poll would."""

    async def test_changes_are_stored_like_polls(self, database: str, tmp_path: Path) -> None:
        """A change sweep stores each move once, the event's order as the list showed it."""
        async with upstream([*steady_scripts(3), *MOVING], unwatched=10) as (sim, url):
            settings = make_settings(tmp_path, url, polling=SLOW_POLLS, watch={"all": True})
            async with open_service(settings) as service:

                async def moved() -> bool:
                    orders = [await service.store.orders.get(s.order_id) for s in MOVING]
                    return all(o is not None and o.status == "checked" for o in orders)

                await run_until(service, moved)
                for script in MOVING:
                    assert await transitions_of(service, script.order_id) == [
                        ("ordered", "checked")
                    ]
                async with service.store._engine.connect() as conn:
                    payloads = list(await conn.scalars(select(transitions.c.payload)))
                state = await kept(service)
        assert sim.stats.id_requests == 0  # polls by id wait an hour: the sweeps saw the moves
        for payload in map(json.loads, payloads):
            assert payload["data"]["order"]["status"] == "checked"
            assert payload["data"]["order"]["customer"].startswith("cus_")
        assert state.changes_cursor is not None
        assert state.swept_at is not None
        assert not state.trusted  # not verified yet: no full pass has ended

    async def test_an_ignored_filter_distrusts(self, database: str, tmp_path: Path) -> None:
        """An upstream that ignores filter[updated_at] makes change sweeps untrusted, said once."""
        hour_ago = upstream(  # its orders were last updated an hour before the tracker starts
            steady_scripts(4), ignore_filters=("updated_at",), wall_clock=lambda: time.time() - 3600
        )
        async with hour_ago as (_sim, url):
            settings = make_settings(
                tmp_path, url, polling=SLOW_POLLS | {"trust_after": 0}, watch={"all": True}
            )
            async with open_service(settings) as service:
                with structlog.testing.capture_logs() as logs:

                    async def distrusted() -> bool:
                        state = await kept(service)
                        return state.retry_at is not None and state.swept_at is None

                    await run_until(service, distrusted)
                state = await kept(service)
        said = [entry for entry in logs if entry["event"] == "updated_at_unreliable"]
        assert len(said) == 1
        assert "ignores filter[updated_at][gte]" in said[0]["reason"]
        assert not state.trusted
        assert "ignores filter[updated_at][gte]" in state.reason
        assert state.changes_cursor is not None  # kept where it was: nothing skipped


class TestTrust:
    """Change sweeps are trusted after clean full passes, and distrusted when they miss."""

    async def test_clean_passes_earn_trust(self, database: str, tmp_path: Path) -> None:
        """A clean pass trusts change sweeps: polls go to `reconcile`, status and metrics say so."""
        polling = {
            "interval": 1,
            "jitter": 0,
            "changes_every": 0.5,
            "trust_after": 1,
            "reconcile": 3600,
        }
        mapping = settings_mapping(tmp_path, "", polling=polling, watch={"all": True})
        async with upstream(steady_scripts(4)) as (_sim, url):
            mapping["upstream"]["base_url"] = url
            config = write_config(tmp_path / "tracker.toml", mapping)
            settings = make_settings(tmp_path, url, polling=polling, watch={"all": True})
            async with open_service(settings) as service:
                with structlog.testing.capture_logs() as logs:

                    async def reconciling() -> bool:
                        if not (await kept(service)).trusted:
                            return False
                        later = utc_now() + timedelta(minutes=30)
                        orders = [order async for order in service.store.orders.watched()]
                        return all(o.next_poll_at and o.next_poll_at > later for o in orders)

                    await run_until(service, reconciling)
                state = await kept(service)
                metrics = Metrics(cache=0)
                await metrics.refresh(service.store, ())
                served = metrics.render().decode()
            ran = await tracker_cli("status", "--json", "--config", str(config))
        assert "tracker_change_sweeps_trusted 1.0" in served
        assert 'tracker_watched_orders{status="ordered"} 4.0' in served
        assert ran.code == 0, ran.err
        assert json.loads(ran.out)["change_sweeps"] == {
            "mode": "trusted",
            "reason": "1 full passes in a row found nothing the change sweeps missed",
        }
        assert state.clean_passes == 1
        assert [e["event"] for e in logs if e["event"] == "change_sweeps_trusted"] == [
            "change_sweeps_trusted"
        ]

    @pytest.mark.parametrize("sweep", ["ids", "list"])
    async def test_a_full_pass_finds_a_stale_change(
        self, database: str, tmp_path: Path, sweep: str
    ) -> None:
        """A move whose updated_at stays is found by a full pass (by id, or by list pages):
        change sweeps are untrusted, said once, and each move is stored once."""
        polling = {
            "interval": 1,
            "jitter": 0,
            "changes_every": 0.5,
            "trust_after": 0,
            "reconcile": 1,
            "sweep": sweep,
        }
        stale = upstream(
            [*steady_scripts(2), *MOVING],
            stale_updated_at=True,
            wall_clock=lambda: time.time() - 3600,  # last updated an hour before the start
        )
        async with stale as (_sim, url):
            settings = make_settings(tmp_path, url, polling=polling, watch={"all": True})
            async with open_service(settings) as service:
                with structlog.testing.capture_logs() as logs:

                    async def all_moved() -> bool:
                        orders = [await service.store.orders.get(s.order_id) for s in MOVING]
                        return all(o is not None and o.status == "checked" for o in orders)

                    await run_until(service, all_moved)
                moves = [await transitions_of(service, s.order_id) for s in MOVING]
                state = await kept(service)
        said = [e for e in logs if e["event"] == "updated_at_unreliable"]
        assert len(said) == 1
        assert said[0]["order_id"] in {s.order_id for s in MOVING}
        assert not state.trusted
        assert "was not in the change sweeps" in state.reason
        assert state.retry_at is not None  # trust is tried again a day later
        assert moves == [[("ordered", "checked")]] * len(MOVING)  # none lost, none twice


class TestHints:
    """A push hint's poll is judged like any other."""

    async def test_a_hinted_poll_finds_a_stale_change(self, database: str, tmp_path: Path) -> None:
        """A move whose updated_at stays, polled after the provider's hint (by id or a page of
        its customer), makes change sweeps untrusted, and is stored once."""
        moving = Script(
            order_id=order_id("org-hinted"),
            provider="metrify",
            steps=(("ordered", 1.0), ("checked", 0.0)),
        )
        secret = "nomos-hint-secret-org-7d3e"
        polling = SLOW_POLLS | {"trust_after": 0, "reconcile": 3600}
        clock = HeldClock()  # the order moves once the first read has watched it
        # Its updated_at is older than change sweeps' overlap (2 min), its hint's signature
        # still within the hook's tolerance (5 min).
        behind = upstream(
            [moving], stale_updated_at=True, clock=clock, wall_clock=lambda: time.time() - 200
        )
        async with behind as (sim, url):
            settings = make_settings(
                tmp_path,
                url,
                upstream={"webhook_secret": secret},
                polling=polling,
                watch={"all": True},
            )
            async with open_service(settings) as service:
                app = build_app(
                    store=service.store,
                    metrics=Metrics(),
                    webhook_secret=settings.upstream.webhook_secret,
                )
                async with app_client(app) as (hooks, _client):
                    target = HintTarget(url=hooks + "/hooks/nomos", secret=secret)
                    with structlog.testing.capture_logs() as logs:

                        async def moved() -> bool:
                            if (await kept(service)).created_cursor is not None:
                                clock.release()
                            found = await service.store.orders.get(moving.order_id)
                            return found is not None and found.status == "checked"

                        async with sim.hints_running(target):
                            await run_until(service, moved)
                moves = await transitions_of(service, moving.order_id)
                state = await kept(service)
        said = [e for e in logs if e["event"] == "updated_at_unreliable"]
        assert [e["order_id"] for e in said] == [moving.order_id]
        assert sim.stats.hints_sent == 1
        assert moves == [("ordered", "checked")]
        assert not state.trusted


class HeldClock:
    """The simulator's clock: held at its start until :meth:`release`, then running."""

    def __init__(self) -> None:
        self._released: float | None = None

    def __call__(self) -> float:
        return 0.0 if self._released is None else time.monotonic() - self._released

    def release(self) -> None:
        """Let the orders' scripts run from now (from the first call)."""
        if self._released is None:
            self._released = time.monotonic()


class Gate:
    """The upstream, holding every list page after a first one until :attr:`opened`."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self.held = asyncio.Event()
        self.opened = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and b"cursor=" in scope.get("query_string", b""):
            self.held.set()
            await self.opened.wait()
        await self._app(scope, receive, send)


class TestCut:
    """A sweep cut by a stop loses nothing and stores nothing twice."""

    async def test_a_stopped_read_goes_on(self, database: str, tmp_path: Path) -> None:
        """A first read stopped on its second page goes on from the third at the next start."""
        sim = Simulator(steady_scripts(3), unwatched=247, static_token=STATIC_TOKEN)
        gate = Gate(sim.app)
        async with serve(gate) as server:
            settings = make_settings(tmp_path, server.url, polling=SLOW_POLLS, watch={"all": True})
            async with open_service(settings) as service:
                stop = asyncio.Event()
                running = asyncio.create_task(service.daemon().run(stop))
                await asyncio.wait_for(gate.held.wait(), 60)  # the second page is asked for
                stop.set()  # the stop comes while the second page is on its way
                gate.opened.set()
                await asyncio.wait_for(running, 60)
                cut = await kept(service)
                first = await count(service, select(func.count()).select_from(watched_orders))
                with structlog.testing.capture_logs() as logs:

                    async def read() -> bool:
                        return (await kept(service)).created_cursor is not None

                    await run_until(service, read)
                watched = await count(service, select(func.count()).select_from(watched_orders))
                stored = await count(service, select(func.count()).select_from(snapshots))
        assert cut.created_cursor is None
        assert cut.reading is not None  # where the next start goes on from
        assert first == 200  # two pages of 100: the one on its way when the stop came is kept
        assert watched == stored == 250  # each order once, one snapshot each
        started = [entry for entry in logs if entry["event"] == "organisation_read_started"]
        ended = [entry for entry in logs if entry["event"] == "organisation_read_ended"]
        assert [entry["resumed"] for entry in started] == [True]
        assert [entry["pages"] for entry in ended] == [1]  # the third page only

    async def test_a_killed_daemon_loses_no_change(self, database: str, tmp_path: Path) -> None:
        """A daemon SIGKILLed while change sweeps run, then restarted, stores every move once."""
        moving = [
            Script(
                order_id=order_id(f"org-killed-{i}"),
                provider="inexogy",
                steps=(("ordered", 4.0 + 2 * i), ("checked", 0.0)),
            )
            for i in range(3)
        ]
        clock = HeldClock()  # the orders move only once the first read has watched them
        async with upstream([*steady_scripts(2), *moving], clock=clock) as (_sim, url):
            mapping = settings_mapping(tmp_path, url, polling=SLOW_POLLS, watch={"all": True})
            config = str(write_config(tmp_path / "tracker.toml", mapping))
            settings = make_settings(tmp_path, url, polling=SLOW_POLLS, watch={"all": True})
            async with open_service(settings) as service:

                async def moved(orders: list[Script]) -> bool:
                    found = [await service.store.orders.get(s.order_id) for s in orders]
                    return all(o is not None and o.status == "checked" for o in found)

                daemon = await start_daemon(config)
                try:
                    async with asyncio.timeout(120):  # ends a hang only
                        while (await kept(service)).created_cursor is None:  # noqa: ASYNC110
                            await asyncio.sleep(0.05)
                        clock.release()
                        while not await moved(moving[:1]):  # noqa: ASYNC110 - in the database
                            await asyncio.sleep(0.05)
                finally:
                    daemon.kill()  # mid-sweep or between sweeps: either must lose nothing
                    await daemon.wait()
                again = await start_daemon(config)
                try:
                    async with asyncio.timeout(120):
                        while not await moved(moving):  # noqa: ASYNC110 - in the database
                            await asyncio.sleep(0.1)
                finally:
                    await stop_daemon(again)
                moves = [await transitions_of(service, s.order_id) for s in moving]
        assert moves == [[("ordered", "checked")]] * len(moving)
