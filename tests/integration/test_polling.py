"""The poll cycle against a real upstream server and a real SQLite file."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from sqlalchemy import func, select

from tests.support import (
    Action,
    ScriptedUpstream,
    drop,
    error,
    make_settings,
    ok,
    order_body,
    raw,
    stall,
)
from tracker.app import Polling, open_polling
from tracker.clock import utc_now
from tracker.model import Transition
from tracker.poller import WINDOW, poll_now
from tracker.service import open_service
from tracker.store.tables import snapshots, transitions

#: Every test here runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.usefixtures("database")

A = "prdo_aaaaaaaaaaaaaaaaaaaaaaaa"
B = "prdo_bbbbbbbbbbbbbbbbbbbbbbbb"
Upstream = tuple[ScriptedUpstream, str]


async def poll(polling: Polling, *ids: str) -> list[Transition]:
    claims = await polling.store.polls.claim(list(ids), lease_until=utc_now() + polling.lease)
    windows = poll_now(polling.store, polling.poller, claims)
    return [t async for _, stored in windows for t in stored]


async def count(polling: Polling, table: Any) -> int:
    engine = polling.store._engine
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


class TestPollCycle:
    """Snapshots when the order changes, transitions when its status changes."""

    async def test_first_unchanged_changed(self, upstream: Upstream, tmp_path: Path) -> None:
        """A snapshot is stored only on change and a transition only on a status change."""
        scripted, url = upstream
        scripted.script(
            A,
            ok("ordered"),
            ok("ordered"),
            ok("ordered", updated_at="2024-03-15T08:00:00Z"),
            ok("checked", updated_at="2024-03-15T08:00:00Z"),
        )
        async with open_polling(make_settings(tmp_path, url)) as polling:
            await polling.store.orders.watch([A], source="cli", now=utc_now())
            assert await poll(polling, A) == []
            assert await count(polling, snapshots) == 1
            assert await poll(polling, A) == []
            assert await count(polling, snapshots) == 1  # unchanged: bookkeeping only
            assert await poll(polling, A) == []
            assert await count(polling, snapshots) == 2  # another field changed
            [moved] = await poll(polling, A)
            assert (moved.from_status, moved.to_status, moved.kind) == (
                "ordered",
                "checked",
                "advance",
            )
            assert moved.event_id.startswith("evt_")
            history = await polling.store.reports.history(A)
            assert history is not None
            assert [t.event_id for t in history.transitions] == [moved.event_id]
            assert history.order.status == "checked"
            assert history.order.next_poll_at is not None
            assert history.order.next_poll_at > utc_now() + timedelta(seconds=50)

    async def test_many_orders_are_polled_and_recorded_a_window_at_a_time(
        self, upstream: Upstream, tmp_path: Path
    ) -> None:
        """Many orders are polled once each and recorded a window at a time, before hand-out."""
        scripted, url = upstream
        ids = [f"prdo_{n:024d}" for n in range(WINDOW + WINDOW // 2)]
        for order_id in ids:
            scripted.script(order_id, ok("ordered"))
        # Every answer comes at once; under load 384 of them may take longer than the suite's
        # half-second timeout to carry, and this test is not about timeouts.
        settings = make_settings(tmp_path, url, upstream={"timeout": 10})
        async with open_polling(settings) as polling:
            await polling.store.orders.watch(ids, source="cli", now=utc_now())
            claims = await polling.store.polls.claim_all(lease_until=utc_now() + polling.lease)
            sizes = []
            async for outcomes, _ in poll_now(polling.store, polling.poller, claims):
                sizes.append(len(outcomes))
                # Recorded before it is handed out: this window's orders have a snapshot.
                assert await count(polling, snapshots) == sum(sizes)
            assert sizes == [WINDOW, WINDOW // 2]
            assert all(scripted.polls(order_id) == 1 for order_id in ids)
            assert not [o async for o in polling.store.orders.watched() if o.last_polled_at is None]

    async def test_unknown_status_is_stored_and_flagged(
        self, upstream: Upstream, tmp_path: Path
    ) -> None:
        """An unknown status is stored as a transition of kind unknown, with the raw answer."""
        scripted, url = upstream
        scripted.script(A, ok("ordered"), ok("in_review", provider="newco"))
        async with open_polling(make_settings(tmp_path, url)) as polling:
            await polling.store.orders.watch([A], source="cli", now=utc_now())
            await poll(polling, A)
            [moved] = await poll(polling, A)
            assert (moved.to_status, moved.kind) == ("in_review", "unknown")
            history = await polling.store.reports.history(A)
            assert history is not None
            assert json.loads(history.snapshots[-1].raw)["provider"] == "newco"

    async def test_concurrent_polls_store_one_transition(
        self, upstream: Upstream, tmp_path: Path
    ) -> None:
        """Two concurrent claims of one order store one transition, not two."""
        scripted, url = upstream
        scripted.script(A, ok("ordered"), ok("checked"))
        async with open_polling(make_settings(tmp_path, url)) as polling:
            await polling.store.orders.watch([A], source="cli", now=utc_now())
            await poll(polling, A)
            lease = utc_now() + polling.lease
            first = await polling.store.polls.claim([A], lease_until=lease)
            second = await polling.store.polls.claim([A], lease_until=lease)
            outcomes = [await polling.poller.poll(c) for c in first + second]
            stored = await polling.store.polls.record(outcomes)
            assert len(stored) == 1
            assert await count(polling, transitions) == 1
            assert await count(polling, snapshots) == 2

    async def test_final_order_is_retired_after_grace(
        self, upstream: Upstream, tmp_path: Path
    ) -> None:
        """A final order is polled through its grace, then retired and never claimed again."""
        scripted, url = upstream
        scripted.script(A, ok("installed"), ok("activated"))
        settings = make_settings(tmp_path, url, polling={"final_grace": "7d"})
        start = datetime(2026, 11, 1, 9, tzinfo=UTC)
        with time_machine.travel(start, tick=True) as traveller:
            async with open_polling(settings) as polling:
                await polling.store.orders.watch([A], source="cli", now=utc_now())
                await poll(polling, A)
                await poll(polling, A)  # -> activated: final since now
                traveller.move_to(start + timedelta(days=3))
                await poll(polling, A)
                order = await polling.store.orders.get(A)
                assert order is not None
                assert order.active
                traveller.move_to(start + timedelta(days=8))
                await poll(polling, A)
                order = await polling.store.orders.get(A)
                assert order is not None
                assert not order.active
                assert order.retired_at is not None
                claims = await polling.store.polls.claim_due(
                    now=utc_now() + timedelta(days=30), limit=10, lease_until=utc_now()
                )
                assert claims == []


FAULTS: list[tuple[str, Callable[[], Action], str]] = [
    ("server_error", lambda: error(502), "transient"),
    ("dropped", drop, "transient"),
    ("stalled", lambda: stall(8, ok("checked")), "transient"),
    ("rate_limited", lambda: error(429, {"retry-after": "0.2"}), "rate_limited"),
    ("malformed_json", lambda: raw(b'{"object": "meter_order", '), "malformed"),
    ("wrong_object", lambda: raw(b'{"object": "customer", "id": "x"}'), "malformed"),
    ("id_mismatch", lambda: ok("checked", id="prdo_zzzzzzzzzzzzzzzzzzzzzzzz"), "malformed"),
    ("missing_field", lambda: raw(json.dumps(order_body(A, status=None)).encode()), "malformed"),
    ("deep_json", lambda: raw(b"[" * 100_000), "malformed"),
    ("deep_json_in_500", lambda: raw(b'{"a":' * 100_000, code=500), "transient"),
    ("not_found", lambda: error(404), "not_found"),
    ("forbidden", lambda: error(403), "auth_failed"),
]


#: Faults that hold every request back (refused credentials pause the whole budget): the other
#: order waits too, unless its request happened to leave first.
PAUSE_ALL = {"auth_failed"}


class TestFaultsInTheDaemon:
    """Every fault leaves the daemon running, writes nothing, and is visible with its reason."""

    @pytest.mark.parametrize(("name", "fault", "kind"), FAULTS, ids=[f[0] for f in FAULTS])
    async def test_fault(
        self, upstream: Upstream, tmp_path: Path, name: str, fault: Callable[[], Action], kind: str
    ) -> None:
        """A fault is recorded on its order with its kind, stores nothing, and spares the others."""
        scripted, url = upstream
        scripted.script(A, ok("ordered"), fault())
        scripted.script(B, ok("ordered"), ok("checked"))
        # A 2 s timeout: a stalled answer (8 s) runs into it, while an instant answer on a
        # loaded machine still has room.
        settings = make_settings(tmp_path, url, polling={"interval": 0.2}, upstream={"timeout": 2})
        async with open_service(settings) as polling:
            await polling.store.orders.watch([A, B], source="cli", now=utc_now())
            stop = asyncio.Event()
            daemon = polling.daemon()
            running = asyncio.create_task(daemon.run(stop))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60  # ends a hang; the test waits for events, not time
            while loop.time() < deadline:
                order_a, order_b = (
                    await polling.store.orders.get(A),
                    await polling.store.orders.get(B),
                )
                assert order_a is not None
                assert order_b is not None
                if order_a.consecutive_failures and (
                    order_b.status == "checked" or kind in PAUSE_ALL
                ):
                    break
                await asyncio.sleep(0.05)
            assert not running.done()  # the daemon survived the fault
            stop.set()
            await asyncio.wait_for(running, 30)
            order_a = await polling.store.orders.get(A)
            assert order_a is not None
            assert order_a.status == "ordered"
            assert order_a.consecutive_failures >= 1
            assert order_a.last_error_kind == kind, order_a.last_error
            assert order_a.last_error
            assert order_a.next_poll_at is not None
            history = await polling.store.reports.history(A)
            assert history is not None
            assert len(history.snapshots) == 1
            assert history.transitions == ()
            order_b = await polling.store.orders.get(B)
            assert order_b is not None
            assert order_b.consecutive_failures == 0
            if kind not in PAUSE_ALL:
                assert order_b.status == "checked"  # one bad order does not hold back the others
