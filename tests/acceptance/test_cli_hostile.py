"""The command line facing hostile answers and late-found mistakes: one line, never a traceback."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.hostile import HostilePeer, answer, drip, order_json
from tests.support import (
    WEBHOOK_SECRET,
    ScriptedUpstream,
    error,
    ok,
    settings_mapping,
    tracker_cli,
    write_config,
)

#: Every test here runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.usefixtures("database")

A = "prdo_aaaaaaaaaaaaaaaaaaaaaaaa"
B = "prdo_bbbbbbbbbbbbbbbbbbbbbbbb"
Upstream = tuple[ScriptedUpstream, str]
MAIL_SINK = {"name": "mail", "type": "email", "to": ["support@example.com"]}


def config(tmp_path: Path, url: str, **sections: Any) -> str:
    return str(write_config(tmp_path / "c.toml", settings_mapping(tmp_path, url, **sections)))


def template_config(tmp_path: Path, name: str, text: str) -> str:
    """A configuration whose mail sink overrides template ``name`` with ``text``."""
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / name).write_text(text)
    sink = {**MAIL_SINK, "templates": str(folder)}
    return config(tmp_path, "http://127.0.0.1:1", sinks=[sink])


def one_line(err: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("tracker: error:")]
    assert len(lines) == 1, err
    return lines[0]


class TestHostileAnswersOnTheCommandLine:
    """`tracker poll` reports a hostile answer as a failed poll, in time, on one line."""

    async def test_dripping_answer(self, tmp_path: Path) -> None:
        """A dripping answer fails the poll as timed out after the configured timeout."""
        async with HostilePeer(default=drip(order_json(A, "checked"), every=0.3)) as peer:
            path = config(tmp_path, peer.url, upstream={"timeout": 1})
            assert (await tracker_cli("watch", "add", A, "--config", path)).code == 0
            ran = await tracker_cli("poll", A, "--config", path, limit=20)
        assert ran.code == 1
        assert f"{A}: failed (transient): timed out after 1 s" in ran.out

    async def test_deeply_nested_answer(self, tmp_path: Path) -> None:
        """A deeply nested JSON answer fails the poll as malformed, without a traceback."""
        async with HostilePeer(default=answer(200, b"[" * 100_000)) as peer:
            path = config(tmp_path, peer.url)
            assert (await tracker_cli("watch", "add", A, "--config", path)).code == 0
            ran = await tracker_cli("poll", A, "--config", path)
        assert ran.code == 1
        assert "Traceback" not in ran.err
        assert f"{A}: failed (malformed): body is JSON nested deeper than 32 levels" in ran.out

    async def test_long_pause_is_not_waited_out(self, upstream: Upstream, tmp_path: Path) -> None:
        """A long Retry-After fails the remaining polls as paused instead of waiting it out."""
        scripted, url = upstream
        scripted.script(A, error(429, {"Retry-After": "600"}))
        scripted.script(B, ok("checked"))
        path = config(tmp_path, url, upstream={"timeout": 1, "requests_per_second": 1})
        assert (await tracker_cli("watch", "add", A, B, "--config", path)).code == 0
        ran = await tracker_cli("poll", A, B, "--config", path, limit=20)
        assert ran.code == 1
        assert f"{A}: failed (rate_limited)" in ran.out
        assert re.search(
            f"{B}: failed \\(rate_limited\\): every request is paused for (?:5\\d\\d|600) s more",
            ran.out,
        )
        assert scripted.polls(B) == 0


class TestReceiverAnswers:
    """`tracker sinks test` shows a receiver's answer as text, never as terminal markup."""

    async def test_markup_in_the_answer(self, tmp_path: Path) -> None:
        """A receiver's answer with Rich markup is printed as plain text."""
        async with HostilePeer(
            default=answer(500, b"[/] [link=https://x.example]y[/link]")
        ) as peer:
            sink = {"name": "ops", "type": "webhook", "url": peer.url, "secret": WEBHOOK_SECRET}
            path = config(tmp_path, "http://127.0.0.1:1", sinks=[sink])
            ran = await tracker_cli("sinks", "test", "ops", "--config", path)
        assert ran.code == 1
        assert "Traceback" not in ran.err
        assert "ops: failed: HTTP 500: [/] [link=https://x.example]y[/link]" in ran.out


class TestTerminalEscapes:
    """Control characters from the upstream reach the terminal escaped, never raw."""

    async def test_poll_and_history(self, upstream: Upstream, tmp_path: Path) -> None:
        """A status with escapes is a failed poll whose reason names the code point; nothing
        raw reaches poll, history or watch list, and markup is shown as text."""
        scripted, url = upstream
        scripted.script(A, ok("ordered"), ok("checked\x1b[2J\x1b]0;owned\x07\u2028\x85"))
        scripted.script(B, ok("[/x] not markup"))
        path = config(tmp_path, url)
        await tracker_cli("watch", "add", A, B, "--config", path)
        await tracker_cli("poll", A, B, "--config", path)
        polled = await tracker_cli("poll", A, "--config", path)
        history = await tracker_cli("history", A, "--config", path)
        listed = await tracker_cli("watch", "list", "--config", path)
        for ran in (polled, history, listed):
            for raw in ("\x1b", "\x07", "\u2028", "\x85"):
                assert raw not in ran.out + ran.err
        assert history.code == 0, history.err
        assert listed.code == 0, listed.err
        assert "U+001B" in polled.out + polled.err  # the reason names it, never holds it
        assert "checked" not in history.out  # never stored
        assert "[/x] not markup" in listed.out  # shown as text, not read as rich markup

    async def test_console_log(self, upstream: Upstream, tmp_path: Path) -> None:
        """The console log of a poll refused for escapes in its status holds none of them."""
        scripted, url = upstream
        scripted.script(A, ok("checked\x1b[2J\x07"))
        path = config(tmp_path, url, log={"format": "console", "level": "info"})
        await tracker_cli("watch", "add", A, "--config", path)
        ran = await tracker_cli("poll", A, "--config", path)
        assert "poll_failed" in ran.err
        assert "U+001B" in ran.err
        assert "\x1b" not in ran.err
        assert "\x07" not in ran.err


class TestMistakesFoundAtStart:
    """Templates and the database are checked when a command starts: exit 2 or 1, one line."""

    async def test_templates_folder_missing(self, tmp_path: Path) -> None:
        """A missing templates folder exits 2 with one line naming the key and the folder."""
        missing = tmp_path / "no-such-templates"
        sink = {**MAIL_SINK, "templates": str(missing)}
        ran = await tracker_cli(
            "watch", "list", "--config", config(tmp_path, "http://127.0.0.1:1", sinks=[sink])
        )
        assert ran.code == 2
        line = one_line(ran.err)
        assert f"sinks[0].templates: folder {missing} does not exist" in line

    async def test_template_that_does_not_compile(self, tmp_path: Path) -> None:
        """A template that does not compile stops `sinks test` and `run` with its line."""
        path = template_config(tmp_path, "subject.txt", "{{ order_id }: {{ to_status }}\n")
        for command in (("sinks", "test", "mail"), ("run",)):
            ran = await tracker_cli(*command, "--config", path, limit=20)
            assert ran.code == 2
            assert "sink 'mail': template subject.txt line 1: unexpected '}'" in one_line(ran.err)

    async def test_template_with_unknown_variable(self, tmp_path: Path) -> None:
        """A template using an unknown variable exits 2 naming it and the variables there are."""
        path = template_config(tmp_path, "body.txt", "Order {{ order_id }} for {{ customer_name }}")
        ran = await tracker_cli("sinks", "test", "mail", "--config", path)
        assert ran.code == 2
        line = one_line(ran.err)
        assert "sink 'mail': template body.txt: 'customer_name' is undefined" in line
        assert "the variables are" in line

    async def test_unknown_variable_in_a_branch_not_taken(self, tmp_path: Path) -> None:
        """An unknown variable is found even in a template branch that is not taken."""
        text = "{% if not test %}{{ order_idd }}{% endif %}\n"
        ran = await tracker_cli(
            "sinks", "test", "mail", "--config", template_config(tmp_path, "subject.txt", text)
        )
        assert ran.code == 2
        assert "template subject.txt: 'order_idd' is undefined" in one_line(ran.err)

    @pytest.mark.parametrize("database", ["sqlite"], indirect=True)  # a read-only SQLite file
    async def test_database_that_cannot_be_written(self, tmp_path: Path) -> None:
        """A read-only database still serves reading commands, but `run` exits 1 saying so."""
        path = config(tmp_path, "http://127.0.0.1:1")
        assert (await tracker_cli("watch", "add", A, "--config", path)).code == 0
        mapping = settings_mapping(tmp_path, "http://127.0.0.1:1")
        mapping["database"] = {"url": f"sqlite:///file:{tmp_path / 'tracker.db'}?mode=ro&uri=true"}
        read_only = str(write_config(tmp_path / "ro.toml", mapping))
        listed = await tracker_cli("watch", "list", "--json", "--config", read_only)
        assert listed.code == 0  # reading still works
        assert A in listed.out
        ran = await tracker_cli("run", "--config", read_only, limit=20)
        assert ran.code == 1
        line = one_line(ran.err)
        assert "database.url: the database cannot be written" in line
        assert "readonly" in line
