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
from tracker.demo.simulator import Simulator, demo_scripts

#: Every test here runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.usefixtures("database")

STEP = 2.5  # seconds per simulated status, on the clock below
TOKEN = "nom_crash_test_token"


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


async def pending_deliveries(path: Path) -> int:
    ran = await tracker_cli(
        "deliveries", "list", "--state", "pending", "--json", "--config", str(path)
    )
    return len(json.loads(ran.out))


class TestKillAndRestart:
    """Every status change is recorded once and delivered at least once, across SIGKILLs."""

    async def test_sigkill_loop(self, tmp_path: Path) -> None:
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
                upstream={"token": TOKEN, "requests_per_second": 50, "timeout": 2},
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
        try:
            while clock() < finish:
                daemon = await start("-m", "tracker", "run", "--config", str(path))
                await asyncio.sleep(rng.uniform(1.2, 3.0))
                daemon.kill()
                await daemon.wait()
                clock.stop()
                kills += 1
            daemon = await start("-m", "tracker", "run", "--config", str(path))
            await asyncio.sleep(2.0)
            for _ in range(60):
                if await pending_deliveries(path) == 0:
                    break
                await asyncio.sleep(0.5)
            daemon.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(daemon.wait(), 15) == 0
        finally:
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
