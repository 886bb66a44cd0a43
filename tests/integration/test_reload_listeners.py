"""The reloader tells its listeners of each new configuration, and reports every failure as one
``config_reload_failed`` line that quotes nothing of the file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from tests.support import settings_mapping, write_config
from tracker.config import Settings, load
from tracker.service import Reloader, Service, open_service

#: Every test here runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.usefixtures("database")

#: Nothing listens there: the daemon is built, never run.
UPSTREAM = "http://127.0.0.1:9"
#: A secret the file holds; no log line may show it.
SECRET = "read-token-Zt4Kq9Wm2Xv8"


def user(name: str, token: str) -> dict[str, Any]:
    return {"name": name, "token": token, "role": "read"}


def configure(path: Path, tmp_path: Path, *, listen: str, users: list[dict[str, Any]]) -> None:
    http = {"listen": listen, "users": users}
    write_config(path, settings_mapping(tmp_path, UPSTREAM, http=http))


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    """A service (not running) over the configuration at ``tmp_path / "c.toml"``."""
    path = tmp_path / "c.toml"
    configure(path, tmp_path, listen="127.0.0.1:0", users=[user("ops", SECRET)])
    async with open_service(load(path, {})) as opened:
        yield opened


def reloader(tmp_path: Path, service: Service, *listeners: Any) -> Reloader:
    return Reloader(tmp_path / "c.toml", service, service.daemon(), listeners=listeners)


class TestListeners:
    """Listeners hear each configuration put in force, and only those."""

    async def test_listeners_hear_the_new_settings(self, tmp_path: Path, service: Service) -> None:
        """After a reload every listener is called with the new settings; users need no restart."""
        heard: list[Settings] = []
        reload = reloader(tmp_path, service, heard.append, heard.append)
        configure(tmp_path / "c.toml", tmp_path, listen="127.0.0.1:0", users=[user("ui", SECRET)])
        with structlog.testing.capture_logs() as logs:
            assert await reload()
        assert [[u.name for u in settings.http.users] for settings in heard] == [["ui"], ["ui"]]
        assert heard[0] is reload.settings
        assert [e["restart_needed"] for e in logs if e["event"] == "config_reloaded"] == [[]]

    async def test_a_new_listen_address_needs_a_restart(
        self, tmp_path: Path, service: Service
    ) -> None:
        """Of the http section, only a changed listen address is reported as needing a restart."""
        reload = reloader(tmp_path, service)
        configure(tmp_path / "c.toml", tmp_path, listen="127.0.0.1:8089", users=[])
        with structlog.testing.capture_logs() as logs:
            assert await reload()
        assert [e["restart_needed"] for e in logs if e["event"] == "config_reloaded"] == [
            ["http.listen"]
        ]

    async def test_a_refused_file_tells_no_listener(self, tmp_path: Path, service: Service) -> None:
        """A file that does not load leaves the settings as they were and calls no listener."""
        heard: list[Settings] = []
        reload = reloader(tmp_path, service, heard.append)
        path = tmp_path / "c.toml"
        path.write_bytes(path.read_bytes() + b"# \xff\n")
        with structlog.testing.capture_logs() as logs:
            assert not await reload()
        assert heard == []
        assert reload.settings is service.settings
        assert [e["event"] for e in logs] == ["config_reload_failed"]
        assert "is not UTF-8" in logs[0]["error"]


class TestUnexpectedFailures:
    """Whatever fails is one line naming the exception's type, never its message."""

    async def test_a_failing_listener_does_not_silence_the_others(
        self, tmp_path: Path, service: Service
    ) -> None:
        """A listener that raises is reported by type; the listeners after it still hear."""
        heard: list[Settings] = []

        def failing(settings: Settings) -> None:
            raise RuntimeError(f"cannot take {settings.http.users[0].token.get_secret_value()}")

        reload = reloader(tmp_path, service, failing, heard.append)
        configure(tmp_path / "c.toml", tmp_path, listen="127.0.0.1:0", users=[user("ui", SECRET)])
        with structlog.testing.capture_logs() as logs:
            assert not await reload()
        assert len(heard) == 1
        assert [e["event"] for e in logs] == ["config_reload_failed"]
        assert "a listener (RuntimeError)" in logs[0]["error"]
        assert SECRET not in repr(logs)

    async def test_an_unexpected_error_while_checking(
        self, tmp_path: Path, service: Service
    ) -> None:
        """An exception load() does not expect is one config_reload_failed line, no traceback."""
        heard: list[Settings] = []
        # A NUL in the path makes the read raise ValueError, which no refusal wraps.
        reload = Reloader(
            tmp_path / "c\x00.toml", service, service.daemon(), listeners=[heard.append]
        )
        with structlog.testing.capture_logs() as logs:
            assert not await reload()
        assert heard == []
        assert [e["event"] for e in logs] == ["config_reload_failed"]
        assert "(ValueError)" in logs[0]["error"]
        assert "exc_info" not in logs[0]
        assert "exception" not in logs[0]
