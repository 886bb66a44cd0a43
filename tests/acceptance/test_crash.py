"""The daemon SIGKILLed at random moments and restarted neither loses nor doubles a transition."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from starlette.requests import Request
from starlette.responses import Response

from tests.support import (
    ROOT,
    WEBHOOK_SECRET,
    HookReceiver,
    settings_mapping,
    tracker_cli,
    write_config,
)
from tracker.demo.serving import catch_all, serve
from tracker.demo.simulator import Script, Simulator, demo_scripts
from tracker.store import Store, open_store

#: Every test here runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.usefixtures("database")

STEP = 2.5  # seconds per simulated status, on the clock below
TOKEN = "nom_crash_test_token"
#: Limits for a step to happen at all (a loaded machine starts a daemon in tens of seconds);
#: missing one fails the test, it times nothing.
PATIENCE = 120.0


class DaemonClock:
    """The simulated upstream's clock: it runs only while a daemon is up and polling.

    A kill and a restart take longer on a loaded machine (the new process imports, migrates,
    claims); on a wall clock a status could pass in that gap unseen, and the test would fail
    for the machine's speed. Stopped from the kill until the restarted daemon's first poll,
    no status passes while no daemon can see it. What the test proves stays the same: every
    change a daemon saw, however it was killed around it, is stored and delivered once.
    """

    def __init__(self) -> None:
        self._elapsed = 0.0
        self._since: float | None = None

    def __call__(self) -> float:
        running = time.monotonic() - self._since if self._since is not None else 0.0
        return self._elapsed + running

    @property
    def running(self) -> bool:
        """Whether a daemon polls (the clock runs)."""
        return self._since is not None

    def start(self) -> None:
        if self._since is None:
            self._since = time.monotonic()

    def stop(self) -> None:
        self._elapsed = self()
        self._since = None


async def start(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ},
        cwd=ROOT,
    )


async def until(check: Callable[[], bool], what: str) -> None:
    """Wait until ``check()`` is true; fail after ``PATIENCE`` saying ``what``."""
    deadline = time.monotonic() + PATIENCE
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {PATIENCE:.0f} s: {what}")
        await asyncio.sleep(0.05)


async def all_in_last_status(store: Store, scripts: Iterable[Script]) -> bool:
    """Whether every scripted order is stored in its last status."""
    for script in scripts:
        order = await store.orders.get(script.order_id)
        if order is None or order.status != script.steps[-1][0]:
            return False
    return True


async def pending_deliveries(path: Path) -> int:
    ran = await tracker_cli(
        "deliveries", "list", "--state", "pending", "--json", "--config", str(path)
    )
    return len(json.loads(ran.out))


class TestKillAndRestart:
    """Every status change is recorded once and delivered at least once, across SIGKILLs."""

    async def test_sigkill_loop(self, tmp_path: Path, database: str) -> None:
        """Repeated SIGKILLs leave each history exact and each transition delivered."""
        # A slow receiver, so that kills land in the middle of bursts of deliveries.
        receiver = HookReceiver(delay=0.15)
        servers = contextlib.AsyncExitStack()
        hooks = await servers.enter_async_context(serve(catch_all(receiver)))
        clock = DaemonClock()
        scripts = {s.order_id: s for s in demo_scripts(STEP)}
        simulator = Simulator(list(scripts.values()), static_token=TOKEN, clock=clock)

        async def upstream(request: Request) -> Response:
            if request.url.path.startswith("/meter-orders"):
                clock.start()  # a daemon polls (by id, or a list page): the orders move on
            return await simulator.answer(request)

        server = await servers.enter_async_context(serve(catch_all(upstream)))
        path = write_config(
            tmp_path / "c.toml",
            settings_mapping(
                tmp_path,
                server.url,
                upstream={"token": TOKEN, "requests_per_second": 50, "timeout": 10},
                polling={"interval": 0.4, "jitter": 0.1},
                watch={"orders": list(scripts)},
                log={"level": "warning"},
                delivery={"backoff": ["0.5s"] * 10, "max_concurrency": 2, "timeout": 2},
                sinks=[
                    {
                        "name": "ops",
                        "type": "webhook",
                        "url": hooks.url,
                        "secret": WEBHOOK_SECRET,
                        "on": ["*"],
                    }
                ],
            ),
        )
        finish = max(sum(d for _s, d in s.steps[:-1]) for s in scripts.values()) + 3
        rng = random.Random(7)
        kills = 0
        daemon: asyncio.subprocess.Process | None = None
        try:
            while clock() < finish:
                daemon = await start("-m", "tracker", "run", "--config", str(path))
                if rng.random() < 0.2:
                    # Now and then while it starts, whether or not it polls yet.
                    await asyncio.sleep(rng.uniform(0.3, 1.5))
                else:
                    # At a random moment of its polling: a machine slow to start it delays
                    # the kill, and the clock, but the kill still lands among polls.
                    await until(lambda: clock.running, "the daemon polls")
                    await asyncio.sleep(rng.uniform(0.3, 2.5))
                daemon.kill()
                await daemon.wait()
                clock.stop()
                kills += 1
            daemon = await start("-m", "tracker", "run", "--config", str(path))
            # It polls (so it runs, and takes SIGTERM as a daemon does); every order is stored
            # in its last status (each change with its deliveries), and then every delivery is
            # made: however long a loaded machine takes for each.
            await until(lambda: clock.running, "the last daemon polls")
            deadline = time.monotonic() + PATIENCE
            async with open_store(database) as store:
                while not await all_in_last_status(store, scripts.values()):
                    assert time.monotonic() < deadline, "not every order reached its last status"
                    await asyncio.sleep(0.2)
            while await pending_deliveries(path) != 0:
                assert time.monotonic() < deadline, "deliveries still pending"
                await asyncio.sleep(0.5)
            daemon.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(daemon.wait(), 15) == 0
        finally:
            if daemon is not None and daemon.returncode is None:
                daemon.kill()
                await daemon.wait()
            await servers.aclose()
        assert kills >= 5
        assert all(hook.verified for hook in receiver.hooks)
        stored: set[str] = set()

        for order_id, script in scripts.items():
            ran = await tracker_cli("history", order_id, "--json", "--config", str(path))
            history = json.loads(ran.out)
            moves = [(t["from_status"], t["to_status"]) for t in history["transitions"]]
            expected = [
                (a, b) for (a, _), (b, _) in zip(script.steps, script.steps[1:], strict=False)
            ]
            assert moves == expected, order_id
            assert len({t["event_id"] for t in history["transitions"]}) == len(moves)
            times = [t["detected_at"] for t in history["transitions"]]
            assert times == sorted(times)
            assert history["status"] == script.steps[-1][0]
            stored |= {t["event_id"] for t in history["transitions"]}
            for move in history["transitions"]:
                assert [d["state"] for d in move["deliveries"]] == ["delivered"]
        # At least once each, and never under an id that the store does not know.
        assert {hook.event_id for hook in receiver.accepted} == stored
