"""Daemons as a user runs them: `tracker run` in its own process, watched through `status`."""

from __future__ import annotations

import asyncio
import bisect
import json
import os
import signal
import sys
from typing import Any

from tests.support import ROOT, tracker_cli


async def start_daemon(path: str, *, logs: bool = False) -> asyncio.subprocess.Process:
    """`tracker run` in its own process (its JSON log lines kept with ``logs``)."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tracker",
        "run",
        "--config",
        path,
        stdout=asyncio.subprocess.PIPE if logs else asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ},
        cwd=ROOT,
    )


async def daemons_now(path: str) -> list[dict[str, object]]:
    """The daemons `tracker status --json` shows."""
    ran = await tracker_cli("status", "--json", "--config", path)
    assert ran.code == 0, ran.err
    found: list[dict[str, object]] = json.loads(ran.out)["daemons"]
    return found


async def live_daemons(path: str, count: int) -> list[dict[str, object]]:
    """`tracker status --json`'s daemons, once ``count`` of them are registered."""
    for _ in range(150):
        found = await daemons_now(path)
        if len(found) == count:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"never {count} daemons registered")


async def stop(process: asyncio.subprocess.Process) -> str:
    """SIGTERM, then wait for a clean exit; returns what it wrote to stdout."""
    process.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(process.communicate(), 15)
    assert process.returncode == 0, err.decode()
    return (out or b"").decode()


class DaemonLog:
    """The JSON log lines of a daemon started with ``logs=True``, read as they come (so its
    pipe never fills), to look at while it runs."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        self.process = process
        self.events: list[dict[str, Any]] = []
        self._reading = asyncio.create_task(self._read(process.stdout))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            self.events.append(json.loads(line))

    def named(self, event: str) -> list[dict[str, Any]]:
        """The lines logged so far for ``event``, oldest first."""
        return [e for e in self.events if e["event"] == event]

    async def stop(self) -> list[dict[str, Any]]:
        """SIGTERM, then wait for a clean exit; returns every line it logged."""
        process = self.process
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        assert process.stderr is not None
        err = await asyncio.wait_for(process.stderr.read(), 15)
        await asyncio.wait_for(process.wait(), 15)
        await self._reading
        assert process.returncode == 0, err.decode()
        return self.events


def busiest_second(arrivals: list[float]) -> int:
    """The most requests that arrived within any one-second window."""
    times = sorted(arrivals)
    return max((bisect.bisect_left(times, t + 1.0) - i for i, t in enumerate(times)), default=0)
