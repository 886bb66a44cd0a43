"""`tracker config check`: the file is checked as at start, without connecting anywhere."""

from __future__ import annotations

import asyncio
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT, WEBHOOK_SECRET, tracker_cli, write_config

#: A password the files below hold; no answer may quote it.
SECRET = "pg-password-Zt7Kq3Lw9"


@pytest.fixture
def listener() -> Iterator[tuple[socket.socket, int]]:
    """A loopback port that accepts connections into its backlog, and the port."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        sock.setblocking(False)  # noqa: FBT003 - the socket module's own signature
        yield sock, sock.getsockname()[1]


def connected(sock: socket.socket) -> bool:
    """Whether anyone has connected to ``sock`` (its backlog holds a connection)."""
    try:
        client, _address = sock.accept()
    except BlockingIOError:
        return False
    client.close()
    return True


def everything_at(tmp_path: Path, port: int) -> dict[str, Any]:
    """A configuration whose upstream, database, webhook and SMTP relay all point at ``port``."""
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "subject.txt").write_text("[tracker] {{ order_id }}: {{ to_status }}\n")
    return {
        "upstream": {"base_url": f"http://127.0.0.1:{port}", "token": "nom_static_9f8e7d6c5b4a"},
        "database": {"url": f"postgresql://tracker:{SECRET}@127.0.0.1:{port}/tracker"},
        "http": {
            "listen": "127.0.0.1:0",
            "users": [{"name": "support-ui", "token": "t" * 24, "role": "read"}],
        },
        "smtp": {"host": "127.0.0.1", "port": port, "from": "tracker@example.com"},
        "sinks": [
            {
                "name": "ops",
                "type": "webhook",
                "url": f"http://127.0.0.1:{port}/hooks",
                "secret": WEBHOOK_SECRET,
                "on": ["*"],
            },
            {
                "name": "support",
                "type": "email",
                "to": ["support@example.com"],
                "templates": str(templates),
                "on": ["*->cancelled", "stuck:*"],
            },
        ],
    }


class TestAGoodFile:
    """A file that would start the daemon passes with exit 0 and one line."""

    async def test_passes_in_one_line_without_connecting_anywhere(
        self, tmp_path: Path, listener: tuple[socket.socket, int]
    ) -> None:
        """Exit 0 and one line naming the file, sinks and database; nothing is connected to."""
        sock, port = listener
        path = write_config(tmp_path / "tracker.toml", everything_at(tmp_path, port))
        ran = await tracker_cli("config", "check", "--config", str(path))
        assert ran.code == 0, ran.err
        assert ran.out == (
            f"config ok: {path} (sinks: ops, support; database: postgresql at "
            f"127.0.0.1:{port}/tracker; listen: 127.0.0.1:0; http users: 1)\n"
        )
        assert SECRET not in ran.out + ran.err
        assert not connected(sock), "config check connected to a peer"

    async def test_creates_no_sqlite_file(self, tmp_path: Path) -> None:
        """A SQLite database is named, not created: the check writes nothing."""
        database = tmp_path / "tracker.db"
        path = write_config(
            tmp_path / "tracker.toml",
            {
                "upstream": {"token": "nom_static_9f8e7d6c5b4a"},
                "database": {"url": f"sqlite:///{database}"},
            },
        )
        ran = await tracker_cli("config", "check", "--config", str(path))
        assert ran.code == 0, ran.err
        assert f"database: the SQLite file {database};" in ran.out
        assert sorted(await asyncio.to_thread(os.listdir, tmp_path)) == [path.name]

    async def test_the_file_is_found_as_every_command_finds_it(self, tmp_path: Path) -> None:
        """--config before the command and $TRACKER_CONFIG name the file as elsewhere."""
        path = write_config(
            tmp_path / "elsewhere.toml", {"upstream": {"token": "nom_static_9f8e7d6c5b4a"}}
        )
        before = await tracker_cli("--config", str(path), "config", "check")
        from_env = await tracker_cli("config", "check", env={"TRACKER_CONFIG": str(path)})
        assert (before.code, from_env.code) == (0, 0), before.err + from_env.err
        assert before.out == from_env.out
        assert before.out.startswith(f"config ok: {path} (sinks: none;")

    async def test_the_example_configuration_passes(self) -> None:
        """config.example.toml passes once the variables it names are set."""
        example = ROOT / "config.example.toml"
        names = set(re.findall(r"\$\{(\w+)\}", example.read_text(encoding="utf-8")))
        samples = dict.fromkeys(names, "sample-value-0123456789")
        samples |= {name: WEBHOOK_SECRET for name in names if name.endswith("WEBHOOK_SECRET")}
        ran = await tracker_cli("config", "check", "--config", str(example), env=samples)
        assert ran.code == 0, ran.err
        assert ran.out.startswith(f"config ok: {example} (sinks: ops, support;")
        assert ran.out.count("\n") == 1


class TestABadFile:
    """What would stop the start stops the check: one line naming the key, exit 2."""

    @pytest.mark.parametrize(
        ("change", "named"),
        [
            pytest.param(
                {"database": {"url": f"postgresql://tracker:{SECRET}@oops@db:5432/tracker"}},
                "database.url: the host part is not a host name; percent-encode @",
                id="password-with-an-unencoded-@",
            ),
            pytest.param(
                {"database": {"url": f"postgresql://tracker:{SECRET}@db:port/tracker"}},
                "database.url: cannot be read as a URL",
                id="port-not-a-number",
            ),
            pytest.param(
                {"database": {"url": f"postgresql://tracker:{SECRET}@db:5432"}},
                "database.url: names no database",
                id="no-database-name",
            ),
            pytest.param(
                {"database": {"url": f"mysql://tracker:{SECRET}@db/tracker"}},
                "database.url: unsupported scheme 'mysql'",
                id="unsupported-scheme",
            ),
            pytest.param(
                {"upstream": {"token": "${TRACKER_CHECK_UNSET_VARIABLE}"}},
                "upstream.token: environment variable TRACKER_CHECK_UNSET_VARIABLE is not set",
                id="unset-variable",
            ),
            pytest.param(
                {"polling": {"intervall": "1h"}},
                "polling.intervall: unknown key",
                id="unknown-key",
            ),
        ],
    )
    async def test_refused_in_one_line(
        self, tmp_path: Path, change: dict[str, Any], named: str
    ) -> None:
        """A bad key is refused with exit 2 and one line naming it, never quoting a secret."""
        mapping: dict[str, Any] = {"upstream": {"token": "nom_static_9f8e7d6c5b4a"}}
        for section, values in change.items():
            mapping[section] = mapping.get(section, {}) | values
        path = write_config(tmp_path / "tracker.toml", mapping)
        ran = await tracker_cli("config", "check", "--config", str(path))
        assert ran.code == 2
        assert ran.out == ""
        assert ran.err.startswith("tracker: error: "), ran.err
        assert ran.err.count("\n") == 1, ran.err
        assert named in ran.err
        assert SECRET not in ran.err

    async def test_a_template_that_does_not_compile(
        self, tmp_path: Path, listener: tuple[socket.socket, int]
    ) -> None:
        """A sink's template that does not compile is named with its line, exit 2."""
        _sock, port = listener
        mapping = everything_at(tmp_path, port)
        (tmp_path / "templates" / "body.txt").write_text("Order {{ order_id }\n")
        path = write_config(tmp_path / "tracker.toml", mapping)
        ran = await tracker_cli("config", "check", "--config", str(path))
        assert ran.code == 2
        assert ran.err.startswith("tracker: error: sink 'support': template body.txt line 1: ")
        assert ran.err.count("\n") == 1, ran.err

    async def test_a_template_naming_an_unknown_variable(
        self, tmp_path: Path, listener: tuple[socket.socket, int]
    ) -> None:
        """A template naming a variable the messages do not have is refused, exit 2."""
        _sock, port = listener
        mapping = everything_at(tmp_path, port)
        (tmp_path / "templates" / "subject.txt").write_text("{{ order_number }}\n")
        path = write_config(tmp_path / "tracker.toml", mapping)
        ran = await tracker_cli("config", "check", "--config", str(path))
        assert ran.code == 2
        assert "template subject.txt: 'order_number' is undefined" in ran.err
        assert ran.err.count("\n") == 1, ran.err

    async def test_a_missing_file_points_to_the_example(self, tmp_path: Path) -> None:
        """A file that is not there is named, with the example to copy, exit 2."""
        path = tmp_path / "absent.toml"
        ran = await tracker_cli("config", "check", "--config", str(path))
        assert ran.code == 2
        assert ran.err == (
            f"tracker: error: config file {path} not found: copy config.example.toml to "
            f"{path} or pass --config PATH\n"
        )
