"""Several daemons on PostgreSQL: the claims of a gone daemon are taken over, and a database
that goes away while a daemon runs is waited out, told once, and resumed without loss."""

from __future__ import annotations

import asyncio
import functools
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from starlette.responses import Response

from tests.postgres import Cluster
from tests.support import ScriptedUpstream, make_settings, ok
from tracker.clock import utc_now
from tracker.model import STALE_AFTER, DaemonRecord
from tracker.service import Service, open_service
from tracker.store import open_store

pytestmark = pytest.mark.parametrize("database", ["postgresql"], indirect=True)

A = "prdo_aaaaaaaaaaaaaaaaaaaaaaaa"
B = "prdo_bbbbbbbbbbbbbbbbbbbbbbbb"
Upstream = tuple[ScriptedUpstream, str]
#: Limits for a step to happen at all; missing one fails the test, it times nothing (each is
#: shorter than the other way the step could happen: a lease of an hour, or of 120 s).
PATIENCE = 60.0


@asynccontextmanager
async def running(service: Service) -> AsyncIterator[None]:
    """A daemon over ``service`` while the block runs; it must still run at the end."""
    stop = asyncio.Event()
    task = asyncio.create_task(service.daemon().run(stop))
    try:
        yield
        assert not task.done(), task
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


async def until(check: Any, seconds: float = PATIENCE) -> None:
    """Wait until ``check()`` (a coroutine function) is true, failing after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {seconds} s: {check.__doc__}")
        await asyncio.sleep(0.1)


async def claimed_by_a_gone_daemon(
    database: str, record: DaemonRecord, order_ids: list[str]
) -> None:
    """Register ``record`` and claim ``order_ids`` in its name for an hour, as a daemon would."""
    async with open_store(database) as gone:
        gone.owner = record.id
        await gone.fleet.heartbeat(record, now=record.heartbeat_at)
        claims = await gone.polls.claim(order_ids, lease_until=utc_now() + timedelta(hours=1))
        assert len(claims) == len(order_ids)


class TestTakeover:
    """A live daemon releases what a gone one held, long before those leases would end."""

    async def test_a_dead_pid_on_this_host_is_taken_over_by_its_pid(
        self, upstream: Upstream, tmp_path: Path, database: str
    ) -> None:
        """Orders held by a killed process of this host are polled here, its heartbeat fresh."""
        scripted, url = upstream
        for order_id in (A, B):
            scripted.script(order_id, ok("ordered"))
        settings = make_settings(tmp_path, url, polling={"interval": 60})
        async with open_service(settings) as service:
            await service.store.orders.watch([A, B], source="cli", now=utc_now())
            # Held by a process of this host that is alive when the daemon starts, and whose
            # heartbeat stays fresh all along (it beat "in an hour"): only its pid, checked at
            # each heartbeat, can tell it is gone, however slowly a loaded machine runs.
            process = await asyncio.create_subprocess_exec("sleep", "600")
            now = utc_now()
            record = DaemonRecord(
                id="dmn_gone", host=socket.gethostname(), pid=process.pid, version="0",
                started_at=now, heartbeat_at=now + timedelta(hours=1),
            )  # fmt: skip
            await claimed_by_a_gone_daemon(database, record, [A, B])
            with structlog.testing.capture_logs() as logs:
                async with running(service):
                    await asyncio.sleep(1)
                    assert scripted.polls(A) == scripted.polls(B) == 0  # still held
                    process.kill()  # kill -9, while its heartbeat is still fresh
                    await process.wait()

                    async def polled() -> bool:
                        """both held orders polled by the live daemon"""
                        return scripted.polls(A) == scripted.polls(B) == 1

                    await until(polled)
        taken = [e for e in logs if e["event"] == "claims_taken_over"]
        assert [(e["orders"], e["deliveries"]) for e in taken] == [(2, 0)]
        assert [e["daemon"] for e in logs if e["event"] == "daemon_gone"] == ["dmn_gone"]

    async def test_a_silent_daemon_of_another_host_is_taken_over_when_stale(
        self, upstream: Upstream, tmp_path: Path, database: str
    ) -> None:
        """A stale daemon of another host is gone: its order taken over, the budget reshared."""
        scripted, url = upstream
        scripted.script(A, ok("ordered"))
        settings = make_settings(tmp_path, url, polling={"interval": 60})
        async with open_service(settings) as service:
            await service.store.orders.watch([A], source="cli", now=utc_now())
            beat = utc_now()
            record = DaemonRecord(
                id="dmn_elsewhere", host="another-host", pid=4242, version="0",
                started_at=beat, heartbeat_at=beat,
            )  # fmt: skip
            await claimed_by_a_gone_daemon(database, record, [A])
            with structlog.testing.capture_logs() as logs:
                async with running(service):

                    async def counted() -> bool:
                        """the other daemon counted in the budget"""
                        return any(e["event"] == "budget_shared" for e in logs)

                    await until(counted)
                    # Then its heartbeat stops: its last one is now older than STALE_AFTER.
                    silent = utc_now() - STALE_AFTER - timedelta(seconds=1)
                    await service.store.fleet.heartbeat(record, now=silent)

                    async def polled() -> bool:
                        """the stale daemon's order polled"""
                        return scripted.polls(A) == 1

                    await until(polled)
        events = [e["event"] for e in logs]
        assert events.count("daemon_gone") == 1
        shares = [e["daemons"] for e in logs if e["event"] == "budget_shared"]
        assert shares == [2, 1]  # it counted in the budget while it was alive, then not


class TestDatabaseOutage:
    """PostgreSQL stopped under a running daemon, then started again."""

    async def test_outage_is_logged_once_waited_out_and_loses_nothing(
        self, upstream: Upstream, tmp_path: Path, database: str, postgres: Cluster
    ) -> None:
        """A database outage is logged once each way and the change polled during it is stored."""
        scripted, url = upstream
        outage = asyncio.Event()

        async def once_the_database_is_gone(order_id: str) -> Response:
            await outage.wait()
            return await ok("checked")(order_id)

        # The poll that sees the change is in flight when the database goes away, and answered
        # only then. Any later poll answers "blocked": a change stored first as "checked" is the
        # one polled during the outage, not a poll made again once its lease (120 s) had ended.
        scripted.script(A, ok("ordered"), once_the_database_is_gone, ok("blocked"))
        settings = make_settings(
            tmp_path, url, upstream={"timeout": 30}, polling={"interval": 1, "jitter": 0}
        )
        async with open_service(settings) as service:
            await service.store.orders.watch([A], source="cli", now=utc_now())
            with structlog.testing.capture_logs() as logs:
                async with running(service):

                    async def second_poll_in_flight() -> bool:
                        """the second poll of A started"""
                        return scripted.polls(A) == 2

                    await until(second_poll_in_flight)
                    # Its claim, committed just before, survives: a commit lost with the server
                    # would leave nothing to record the poll against (it is made again instead).
                    await asyncio.to_thread(functools.partial(postgres.stop, keep_commits=True))
                    outage.set()
                    try:
                        await asyncio.sleep(4)  # several ticks, beats and retries fail
                    finally:
                        await asyncio.to_thread(postgres.start)

                    async def changed() -> bool:
                        """A's change stored after the database came back"""
                        order = await service.store.orders.get(A)
                        return order is not None and order.status != "ordered"

                    await until(changed)
            history = await service.store.reports.history(A)
        assert outage.is_set()
        assert history is not None
        moves = [(t.from_status, t.to_status) for t in history.transitions]
        assert moves in ([("ordered", "checked")], [("ordered", "checked"), ("checked", "blocked")])
        events = [e["event"] for e in logs]
        assert events.count("database_unavailable") == 1
        assert events.count("database_available") == 1
        down = next(e for e in logs if e["event"] == "database_unavailable")
        assert down["database"].startswith(f"127.0.0.1:{postgres.port}/")
        noisy = {"tick_failed", "heartbeat_failed", "dispatch_failed", "batch_write_failed"}
        assert noisy.isdisjoint(events)
