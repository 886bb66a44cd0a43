"""Reading commands stay light: they never import the daemon, the scheduler, sinks or clients."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, settings_mapping, tracker_cli, write_config

A = "prdo_aaaaaaaaaaaaaaaaaaaaaaaa"
#: What only polling, delivering, the daemon and logging need.
HEAVY = (
    "tracker.app",
    "tracker.service",
    "tracker.daemon",
    "tracker.outbox",
    "tracker.poller",
    "tracker.upstream",
    "tracker.sinks",
    "apscheduler",
    "httpx",
    "httpcore",
    "aiosmtplib",
    "jinja2",
    "alembic",
    "structlog",
    "tracker.web",
    "starlette",
    "uvicorn",
    "prometheus_client",
    # SQLAlchemy's asyncio extension and the ORM it loads: the reading commands read on plain
    # connections (``tracker.store.plain``).
    "sqlalchemy.ext.asyncio",
    "sqlalchemy.orm",
    "aiosqlite",
    # On SQLite, PostgreSQL's dialect (its index options load with it: ``tables.for_postgresql``).
    "sqlalchemy.dialects.postgresql",
)
#: Runs the CLI in a fresh interpreter and reports, at exit, the heavy modules it imported.
PROBE = """
import atexit, json, sys
heavy = {heavy!r}
def report():
    found = sorted(m for m in sys.modules if m.startswith(heavy))
    sys.stderr.write("\\nIMPORTED " + json.dumps(found) + "\\n")
atexit.register(report)
sys.argv = ["tracker", *{args!r}]
from tracker.cli import main
main()
"""


async def imported(*args: str) -> list[str]:
    heavy = tuple(name for module in HEAVY for name in (module, module + "."))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        PROBE.format(heavy=heavy, args=list(args)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    _out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    line = err.decode().rsplit("IMPORTED ", 1)[1]
    found: list[str] = json.loads(line)
    return found


class TestReadingCommandsStayLight:
    """`--help`, `--version`, history, the lists, status and export stay light."""

    @pytest.mark.parametrize(
        "command",
        [
            ["--help"],
            ["--version"],
            ["history", A],
            ["history", A, "--json"],
            ["watch", "list"],
            ["watch", "list", "--json"],
            ["deliveries", "list"],
            ["status"],
            ["status", "--json"],
            ["export", "--since", "2000-01-01"],
            ["export", "--since", "2000-01-01", "--format", "ndjson"],
            ["report", "durations", "--by", "provider"],
            ["report", "flow", "--format", "json"],
        ],
        ids=" ".join,
    )
    async def test_command(self, tmp_path: Path, command: list[str]) -> None:
        """A reading command imports none of the heavy modules."""
        path = str(write_config(tmp_path / "c.toml", settings_mapping(tmp_path, "http://x:1")))
        assert (await tracker_cli("watch", "add", A, "--config", path)).code == 0
        args = command if command[0].startswith("--") else [*command, "--config", path]
        assert await imported(*args) == []

    async def test_polling_once_loads_neither_the_daemon_nor_the_sinks(
        self, tmp_path: Path
    ) -> None:
        """`poll --all` imports the upstream client but no daemon, sink or web module."""
        path = str(write_config(tmp_path / "c.toml", settings_mapping(tmp_path, "http://x:1")))
        found = await imported("poll", "--all", "--config", path)
        assert {"tracker.app", "tracker.upstream", "httpx"} <= set(found)  # the probe sees them
        daemon_only = ("tracker.service", "tracker.daemon", "tracker.outbox", "apscheduler")
        web_only = ("tracker.web", "starlette", "uvicorn", "prometheus_client")
        sinks_only = ("tracker.sinks.registry", "tracker.sinks.email", "jinja2", "aiosmtplib")
        assert [m for m in found if m.startswith(daemon_only + sinks_only + web_only)] == []
