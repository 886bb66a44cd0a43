"""`tracker serve` and `tracker run` with [http], as a user runs them: subprocesses on a port."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import ROOT, ScriptedUpstream, ok, settings_mapping, tracker_cli, write_config

#: Every test here runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.usefixtures("database")

A = "prdo_aaaaaaaaaaaaaaaaaaaaaaaa"
Upstream = tuple[ScriptedUpstream, str]
USERS = [{"name": "support-ui", "token": "tok_0123456789abcdef", "role": "read"}]
#: Limits for a step to happen at all (a loaded machine starts a daemon in tens of seconds);
#: missing one fails the test, it times nothing.
PATIENCE = 120.0


def config(tmp_path: Path, url: str, listen: str | None, **sections: Any) -> str:
    # The upstream answers at once; a loaded machine may still take more than the suite's
    # default half second to carry the answer, and no test here is about the timeout.
    sections["upstream"] = {"timeout": 10, **sections.get("upstream", {})}
    mapping = settings_mapping(tmp_path, url, **sections)
    if listen is not None:
        mapping["http"] = {"listen": listen, "users": USERS}
    return str(write_config(tmp_path / "c.toml", mapping))


async def start(command: str, path: str) -> tuple[asyncio.subprocess.Process, str]:
    """``tracker COMMAND`` in its own process, once it listens; returns it and its base URL."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tracker",
        command,
        "--config",
        path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ},
        cwd=ROOT,
    )
    assert process.stdout is not None
    while line := await asyncio.wait_for(process.stdout.readline(), PATIENCE):
        event = json.loads(line)
        if event["event"] == "http_listening":
            return process, str(event["url"])
    raise AssertionError(f"never listened: {(await process.communicate())[1].decode()}")


async def stop(process: asyncio.subprocess.Process) -> list[dict[str, Any]]:
    """SIGTERM, a clean exit within a few seconds; the rest of its JSON log lines."""
    process.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(process.communicate(), 15)
    assert process.returncode == 0, err.decode()
    return [json.loads(line) for line in out.decode().splitlines()]


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, tuple[Any, ...]], float]:
    """Every sample of ``/metrics``, by name and sorted labels."""
    answer = await client.get("/metrics")
    assert answer.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


class TestServe:
    """`tracker serve`: the routes without polling or delivering."""

    async def test_serves_health_and_metrics_until_sigterm(
        self, upstream: Upstream, tmp_path: Path
    ) -> None:
        """`serve` answers health, metrics and the API, ignores SIGHUP, and never polls."""
        scripted, url = upstream
        path = config(tmp_path, url, "127.0.0.1:0", watch={"orders": [A]})
        process, base = await start("serve", path)
        try:
            async with httpx.AsyncClient(base_url=base) as client:
                health = await client.get("/healthz")
                ready = await client.get("/readyz")
                metrics = await client.get("/metrics")
                bearer = {"Authorization": "Bearer tok_0123456789abcdef"}
                api = await client.get("/api/v1/orders", headers=bearer)
                anonymous = await client.get("/api/v1/orders")
                process.send_signal(signal.SIGHUP)  # no reload here: said, and it serves on
                await asyncio.sleep(0.3)
                after_hangup = await client.get("/healthz")
        finally:
            events = await stop(process)
        assert (health.status_code, health.json()) == (200, {"status": "ok"})
        assert after_hangup.status_code == 200
        assert "config_reload_unsupported" in [e["event"] for e in events]
        assert api.status_code == 200  # the configured users reach the API
        assert anonymous.status_code == 401
        assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
        names = {family.name for family in text_string_to_metric_families(metrics.text)}
        assert {"tracker_polls", "tracker_watched_orders", "tracker_outbox_pending"} <= names
        assert scripted.seen == []  # serves, never polls
        assert [e["event"] for e in events][-1] == "http_stopped"
        assert "tok_0123456789abcdef" not in json.dumps(events)

    async def test_without_a_listener_it_refuses_to_start(
        self, upstream: Upstream, tmp_path: Path
    ) -> None:
        """`serve` without http.listen exits 2 with one line naming the key."""
        _scripted, url = upstream
        ran = await tracker_cli("serve", "--config", config(tmp_path, url, None))
        assert ran.code == 2
        assert ran.err.strip().count("\n") == 0
        assert "http.listen: not set" in ran.err

    async def test_an_address_in_use_is_one_line_naming_the_key(
        self, upstream: Upstream, tmp_path: Path
    ) -> None:
        """An address in use exits 2 with one line naming http.listen and the address."""
        _scripted, url = upstream
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            ran = await tracker_cli("serve", "--config", config(tmp_path, url, f"127.0.0.1:{port}"))
        assert ran.code == 2
        assert ran.err.strip().count("\n") == 0
        assert f"http.listen: cannot listen on 127.0.0.1:{port}: " in ran.err


class TestRunWithListener:
    """`tracker run` with [http]: serves while it polls, and stops cleanly on SIGTERM."""

    async def test_serves_while_polling(self, upstream: Upstream, tmp_path: Path) -> None:
        """`run` with a listener answers readiness, metrics and the API while it polls."""
        scripted, url = upstream
        scripted.script(A, ok("ordered"))
        path = config(tmp_path, url, "127.0.0.1:0", watch={"orders": [A]})
        process, base = await start("run", path)
        try:
            async with httpx.AsyncClient(base_url=base) as client:
                changed = ("tracker_polls_total", (("result", "changed"),))
                async with asyncio.timeout(PATIENCE):
                    while not (samples := await scrape(client)).get(changed):  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
                ready = await client.get("/readyz")
                bearer = {"Authorization": "Bearer tok_0123456789abcdef"}
                order = await client.get(f"/api/v1/orders/{A}", headers=bearer)
        finally:
            events = await stop(process)
        assert ready.status_code == 200, ready.text
        assert (order.status_code, order.json()["order_id"]) == (200, A)
        assert scripted.polls(A) == 1
        assert samples[("tracker_polls_total", (("result", "changed"),))] == 1
        assert samples[("tracker_upstream_requests_total", (("code", "200"),))] >= 1
        names = [e["event"] for e in events]
        assert "daemon_stopped" in names
        assert "http_stopped" in names
