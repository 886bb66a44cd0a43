"""SIGHUP: `tracker run` takes a new configuration without a restart, or refuses a broken one."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from starlette.responses import Response

from tests.processes import start_daemon
from tests.support import (
    WEBHOOK_SECRET,
    HookReceiver,
    ScriptedUpstream,
    ok,
    settings_mapping,
    tracker_cli,
    write_config,
)
from tracker.demo.serving import catch_all, serve

#: Every test here runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.usefixtures("database")

A = "prdo_aaaaaaaaaaaaaaaaaaaaaaaa"
B = "prdo_bbbbbbbbbbbbbbbbbbbbbbbb"
Upstream = tuple[ScriptedUpstream, str]
#: Limits for a step to happen at all (a loaded machine starts a daemon in tens of seconds);
#: missing one fails the test, it times nothing.
PATIENCE = 120.0
#: The upstream answers at once; a loaded machine may still take more than the suite's default
#: half second to carry the answer, and no test here is about the timeout.
UPSTREAM = {"timeout": 10}


class Log:
    """The daemon's JSON log lines, read as they come (so its pipe never fills)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        self.events: list[dict[str, Any]] = []
        self._stream = process.stdout
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while line := await self._stream.readline():
            self.events.append(json.loads(line))

    async def wait_for(self, name: str, seconds: float = PATIENCE) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            found = [e for e in self.events if e["event"] == name]
            if found:
                return found[-1]
            await asyncio.sleep(0.1)
        raise AssertionError(f"no {name} logged within {seconds} s")

    async def close(self) -> None:
        await self._task


def hook(name: str, url: str) -> dict[str, Any]:
    return {"name": name, "type": "webhook", "url": url, "secret": WEBHOOK_SECRET, "on": ["*"]}


async def until(check: Any, seconds: float = PATIENCE) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not true within {seconds} s: {check}")


class TestReloadOnSighup:
    """Sinks, routes and watched orders change live; a broken file changes nothing."""

    async def test_reload(self, upstream: Upstream, tmp_path: Path) -> None:
        """SIGHUP refuses a broken file, then applies new sinks and orders."""
        scripted, url = upstream
        status = {A: "ordered", B: "waiting"}

        async def answer(order_id: str) -> Response:
            return await ok(status[order_id])(order_id)

        scripted.script(A, answer)
        scripted.script(B, answer)
        old, new = HookReceiver(answers=(503,)), HookReceiver()
        async with serve(catch_all(old)) as old_url, serve(catch_all(new)) as new_url:
            sections: dict[str, Any] = {
                "upstream": UPSTREAM,
                "polling": {"interval": 0.3},
                "delivery": {"backoff": ["1h"], "timeout": 10},
                "log": {"format": "json", "level": "info"},
            }
            path = tmp_path / "c.toml"

            def configure(sinks: list[dict[str, Any]], orders: list[str]) -> None:
                mapping = settings_mapping(
                    tmp_path, url, sinks=sinks, watch={"orders": orders}, **sections
                )
                write_config(path, mapping)

            configure([hook("old", old_url.url)], [A])
            daemon = await start_daemon(str(path), logs=True)
            log = Log(daemon)
            try:
                await until(lambda: scripted.polls(A) >= 1)
                status[A] = "checked"
                await until(lambda: len(old.hooks) == 1)  # refused: pending for an hour

                # A broken file is refused, named, and the old configuration stays.
                path.write_text(path.read_text() + '\n[alerts]\nfailing_after = "often"\n')
                daemon.send_signal(signal.SIGHUP)
                refused = await log.wait_for("config_reload_failed")
                assert "alerts.failing_after" in refused["error"]

                configure([hook("new", new_url.url)], [A, B])
                daemon.send_signal(signal.SIGHUP)
                reloaded = await log.wait_for("config_reloaded")
                assert reloaded["sinks"] == ["new"]
                assert reloaded["restart_needed"] == []
                await until(lambda: scripted.polls(B) >= 1)  # watched from the new file
                status[A] = "blocked"
                await until(lambda: len(new.accepted) == 1)
                listed = await tracker_cli("deliveries", "list", "--json", "--config", str(path))
                fleet = await tracker_cli("status", "--json", "--config", str(path))
            finally:
                daemon.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(daemon.wait(), 15) == 0
                await log.close()
        assert "config_reload_failed" not in [e["event"] for e in log.events[-3:]]
        blocked = json.loads(new.accepted[0].body)["data"]
        assert (blocked["from_status"], blocked["to_status"]) == ("checked", "blocked")
        assert len(old.hooks) == 1  # the removed sink got nothing more
        rows = {row["sink"]: row for row in json.loads(listed.out)}
        assert rows["old"]["state"] == "pending"
        assert rows["old"]["orphaned"] is True  # kept, not sent, not lost
        assert rows["new"]["state"] == "delivered"
        assert rows["new"]["orphaned"] is False
        by_sink = {row["sink"]: row for row in json.loads(fleet.out)["deliveries"]}
        assert by_sink["old"]["orphaned"] is True
        assert by_sink["new"]["orphaned"] is False


class TestReloadNeverLogsTheFile:
    """A file that does not decode is refused by position; nothing of its content is logged."""

    async def test_a_bad_byte_is_refused_without_the_secrets(
        self, upstream: Upstream, tmp_path: Path
    ) -> None:
        """SIGHUP with a non-UTF-8 byte logs config_reload_failed and never the file's secret."""
        scripted, url = upstream
        scripted.script(A, ok("ordered"))
        secret = "smtp-password-" + "x7Qp2LrV9kZs"
        sections: dict[str, Any] = {
            "upstream": UPSTREAM,
            "polling": {"interval": 0.3},
            "log": {"format": "json", "level": "debug"},
            "smtp": {"username": "mailer", "password": secret},
            "watch": {"orders": [A]},
        }
        path = write_config(tmp_path / "c.toml", settings_mapping(tmp_path, url, **sections))
        daemon = await start_daemon(str(path), logs=True)
        log = Log(daemon)
        try:
            await until(lambda: scripted.polls(A) >= 1)
            kept = path.read_bytes()
            path.write_bytes(kept + b"[alerts]\nfailing_after = 3 # caf\xe9\n")
            daemon.send_signal(signal.SIGHUP)
            refused = await log.wait_for("config_reload_failed")
            polls = scripted.polls(A)
            await until(lambda: scripted.polls(A) > polls)  # the old configuration stays
        finally:
            daemon.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(daemon.wait(), 15) == 0
            await log.close()
        assert daemon.stderr is not None
        errors = (await daemon.stderr.read()).decode(errors="replace")
        assert "not UTF-8" in refused["error"]
        where = f"line {len(kept.splitlines()) + 2}, column 24"
        assert where in refused["error"], refused["error"]
        assert secret not in json.dumps(log.events)
        assert secret not in errors
        assert [e for e in log.events if e["event"] == "config_reload_failed"] == [refused]
