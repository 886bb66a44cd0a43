"""The command line as a user runs it: a subprocess, a config file, a real upstream server."""

from __future__ import annotations

import asyncio
import inspect
import json
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from starlette.responses import Response

from tests.processes import (
    DaemonLog,
    busiest_second,
    daemons_now,
    live_daemons,
    start_daemon,
    stop,
)
from tests.support import (
    STATIC_TOKEN,
    Action,
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
#: Limits for a step to happen at all; missing one fails the test, it times nothing.
PATIENCE = 120.0
#: The upstream's timeout, in seconds: a bound on a hang, never reached by an answer.
TIMEOUT = 10
#: Requests a busy daemon has in flight at most (``upstream.max_concurrency``).
CONCURRENCY = 4
#: The 429's ``Retry-After``, in seconds.
RETRY_AFTER = 10
#: The daemons pause on the monotonic clock and share pauses on the wall clock, which the test
#: reads; the two may drift apart this much over one pause.
CLOCK_SLACK = 0.1


def config(
    tmp_path: Path,
    url: str,
    *,
    oauth: bool = False,
    name: str = "c",
    **sections: dict[str, object],
) -> str:
    # The upstream answers at once; a loaded machine may still take more than the suite's
    # default half second to carry the answer, and no test here is about the timeout.
    sections["upstream"] = {"timeout": TIMEOUT, **sections.get("upstream", {})}
    mapping = settings_mapping(tmp_path, url, oauth=oauth, **sections)
    return str(write_config(tmp_path / f"{name}.toml", mapping))


async def until(
    check: Callable[[], bool | Awaitable[bool]], what: str, seconds: float = PATIENCE
) -> None:
    """Wait until ``check()`` is (or resolves to) true; fail after ``seconds`` saying ``what``
    (a bound on a hang, not a measurement: a loaded machine starts a daemon in tens of
    seconds)."""
    deadline = time.monotonic() + seconds
    while not await _resolved(check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds:.0f} s: {what}")
        await asyncio.sleep(0.1)


async def _resolved(value: bool | Awaitable[bool]) -> bool:
    return await value if inspect.isawaitable(value) else value


def moment(stamp: str) -> float:
    """A log line's ISO 8601 timestamp as Unix seconds."""
    return datetime.fromisoformat(stamp).timestamp()


class TestConfigurationErrors:
    """Configuration and usage errors: one line naming what is wrong, exit 2."""

    async def test_missing_config_names_the_path(self, tmp_path: Path) -> None:
        """A missing config file exits 2 with one line naming it and the example file."""
        ran = await tracker_cli("watch", "list", "--config", str(tmp_path / "none.toml"))
        assert ran.code == 2
        assert ran.err.strip().count("\n") == 0
        assert "none.toml not found" in ran.err
        assert "config.example.toml" in ran.err

    async def test_unknown_key_names_the_key(self, tmp_path: Path) -> None:
        """An unknown key exits 2 naming the key, with no traceback."""
        path = tmp_path / "bad.toml"
        path.write_text("[polling]\nintreval = 5\n")
        ran = await tracker_cli("--config", str(path), "watch", "list")
        assert ran.code == 2
        assert "polling.intreval: unknown key" in ran.err
        assert "Traceback" not in ran.err

    async def test_env_config_is_used(self, tmp_path: Path) -> None:
        """TRACKER_CONFIG names the file, and an unset variable in it exits 2 naming it."""
        path = tmp_path / "bad.toml"
        path.write_text('[upstream]\ntoken = "${NOT_SET_ANYWHERE}"\n')
        ran = await tracker_cli("watch", "list", env={"TRACKER_CONFIG": str(path)})
        assert ran.code == 2
        assert "NOT_SET_ANYWHERE is not set" in ran.err

    async def test_invalid_order_id_is_refused(self, upstream: Upstream, tmp_path: Path) -> None:
        """Watching an invalid order id exits 2 naming the id."""
        _scripted, url = upstream
        ran = await tracker_cli("watch", "add", "prdo_NOPE", "--config", config(tmp_path, url))
        assert ran.code == 2
        assert "invalid order id 'prdo_NOPE'" in ran.err

    async def test_usage_error_is_exit_2(self, tmp_path: Path) -> None:
        """An unknown option exits 2."""
        ran = await tracker_cli("watch", "list", "--bogus")
        assert ran.code == 2


class TestWatchPollHistory:
    """watch add/list/remove, poll and history, with --config before or after the command."""

    async def test_round_trip(self, upstream: Upstream, tmp_path: Path) -> None:
        """Watch, poll, list, history and remove work together, with --config anywhere."""
        scripted, url = upstream
        scripted.script(A, ok("ordered"), ok("checked"))
        scripted.script(B, error(404))
        path = config(tmp_path, url)
        ids = tmp_path / "ids.txt"
        ids.write_text(f"{B}\n\n# comment\n")

        ran = await tracker_cli("--config", path, "watch", "add", A, "--file", str(ids))
        assert ran.code == 0, ran.err
        assert "watching 2 new order(s)" in ran.out

        ran = await tracker_cli("poll", A, "--config", path)
        assert ran.code == 0, ran.err
        assert "first snapshot: ordered" in ran.out
        ran = await tracker_cli("poll", "--all", "--config", path)
        assert ran.code == 1  # B failed
        assert f"{A}: ordered → checked (advance)" in ran.out
        assert f"{B}: failed (not_found)" in ran.out

        ran = await tracker_cli("watch", "list", "--json", "--config", path)
        listed = {row["order_id"]: row for row in json.loads(ran.out)}
        assert listed[A]["status"] == "checked"
        assert listed[B]["last_error_kind"] == "not_found"
        assert listed[B]["consecutive_failures"] == 1

        ran = await tracker_cli("watch", "list", "--status", "checked", "--config", path)
        assert A in ran.out
        assert B not in ran.out

        ran = await tracker_cli("history", A, "--json", "--config", path)
        history = json.loads(ran.out)
        assert history["order_id"] == A
        assert history["status"] == "checked"
        [moved] = history["transitions"]
        assert moved["from_status"] == "ordered"
        assert moved["to_status"] == "checked"
        assert moved["event_id"].startswith("evt_")
        assert moved["deliveries"] == []
        assert [s["status"] for s in history["snapshots"]] == ["ordered", "checked"]

        ran = await tracker_cli("history", A, "--config", path)
        assert "ordered → checked" in ran.out

        ran = await tracker_cli("watch", "remove", A, "--config", path)
        assert "stopped watching 1 order(s)" in ran.out
        ran = await tracker_cli("poll", A, "--config", path)
        assert ran.code == 2
        assert "not watched" in ran.err
        ran = await tracker_cli("history", A, "--json", "--config", path)
        assert json.loads(ran.out)["state"] == "removed"

    @pytest.mark.usefixtures("empty_database")
    async def test_db_upgrade(self, upstream: Upstream, tmp_path: Path) -> None:
        """`db upgrade` migrates once and then says the database is up to date."""
        _scripted, url = upstream
        path = config(tmp_path, url)
        first = await tracker_cli("db", "upgrade", "--config", path)
        again = await tracker_cli("--config", path, "db", "upgrade")
        assert first.code == again.code == 0
        assert "migrated" in first.out
        assert "up to date" in again.out


class TestRunAsDaemon:
    """`tracker run` polls on schedule, logs JSON without secrets, and stops cleanly on SIGTERM."""

    async def test_sigterm_and_logs(self, upstream: Upstream, tmp_path: Path) -> None:
        """`run` logs transitions and failures as JSON without secrets and exits 0 on SIGTERM."""
        scripted, url = upstream
        scripted.script(A, ok("ordered"), ok("checked"))
        scripted.script(B, error(500))
        path = config(
            tmp_path, url, oauth=True, polling={"interval": 0.3}, watch={"orders": [A, B]}
        )
        process = await start_daemon(path, logs=True)
        try:
            await until(
                lambda: scripted.polls(A) >= 2 and scripted.polls(B) >= 1, "A twice and B polled"
            )
        finally:
            process.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(process.communicate(), 15)
        assert process.returncode == 0, err.decode()
        events = [json.loads(line) for line in out.decode().splitlines()]
        names = [e["event"] for e in events]
        assert names[0] == "upstream_token_renewed" or "daemon_started" in names
        assert "daemon_stopped" in names
        detected = [e for e in events if e["event"] == "transition_detected"]
        assert [(e["order_id"], e["from_status"], e["to_status"]) for e in detected] == [
            (A, "ordered", "checked")
        ]
        failed = [e for e in events if e["event"] == "poll_failed"]
        assert failed
        assert failed[0]["order_id"] == B
        assert failed[0]["request_id"] == "req_abc123"
        logged = out.decode() + err.decode()
        for secret in ("client-secret-under-test", STATIC_TOKEN, "_secretpart"):
            assert secret not in logged


class TestDaemonsAndStatus:
    """Daemons register and beat; SQLite takes one, PostgreSQL several; `status` shows them."""

    async def test_status_shows_the_fleet_and_what_it_holds(
        self, upstream: Upstream, tmp_path: Path, database: str
    ) -> None:
        """`status` shows live daemons and order counts; a second daemon on SQLite exits 2."""
        scripted, url = upstream
        scripted.script(A, ok("ordered"), ok("checked"))
        scripted.script(B, error(500))
        path = config(tmp_path, url, polling={"interval": 0.3}, watch={"orders": [A, B]})
        first = await start_daemon(path)
        try:
            (seen,) = await live_daemons(path, 1)
            assert seen["pid"] == first.pid
            second = await start_daemon(path)
            if database.startswith("sqlite"):
                _out, err = await asyncio.wait_for(second.communicate(), 30)
                assert second.returncode == 2
                message = err.decode().strip()
                assert "\n" not in message
                assert (
                    f"another daemon runs on this SQLite database (host {seen['host']}, " in message
                )
                assert f"pid {first.pid}," in message
                assert "use PostgreSQL to run several" in message
            else:
                both = await live_daemons(path, 2)
                assert {d["pid"] for d in both} == {first.pid, second.pid}
                await stop(second)
            overview: dict[str, Any] = {}

            async def both_recorded() -> bool:
                nonlocal overview
                ran = await tracker_cli("status", "--json", "--config", path)
                overview = json.loads(ran.out)
                return {(o["status"], o["state"], o["count"]) for o in overview["orders"]} == {
                    ("checked", "active", 1),
                    (None, "active", 1),
                }

            await until(both_recorded, "A's change and B's failure recorded")
            assert overview["last_successful_poll_at"] is not None
            table = await tracker_cli("status", "--config", path)
            assert table.code == 0
            assert "checked" in table.out
            assert str(first.pid) in table.out
        finally:
            if first.returncode is None:
                await stop(first)
        assert await live_daemons(path, 0) == []  # a stopping daemon leaves

    async def test_a_daemon_killed_without_a_word_does_not_block_its_restart(
        self, upstream: Upstream, tmp_path: Path
    ) -> None:
        """A daemon killed with SIGKILL on this host does not keep its restart from running."""
        _scripted, url = upstream
        path = config(tmp_path, url)
        killed = await start_daemon(path)
        await live_daemons(path, 1)
        killed.kill()
        await killed.wait()
        # Its row still looks alive for a while, but its process is gone from this host.
        restarted = await start_daemon(path)
        try:
            for _ in range(150):
                found = [d["pid"] for d in await daemons_now(path)]
                if found == [restarted.pid]:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"the restart never replaced the killed daemon: {found}")
        finally:
            await stop(restarted)


def busy_orders(
    tmp_path: Path,
    url: str,
    scripted: ScriptedUpstream,
    action: Action,
    *,
    token: str = STATIC_TOKEN,
    name: str = "c",
) -> str:
    """300 watched orders due at once, each answering ``action``, within 10 requests a second
    (the configuration ``name``, sending ``token``)."""
    ids = [f"prdo_{n:024d}" for n in range(300)]
    for order_id in ids:
        scripted.script(order_id, action)
    return config(
        tmp_path,
        url,
        name=name,
        upstream={"requests_per_second": 10, "max_concurrency": CONCURRENCY, "token": token},
        polling={"interval": "1h"},
        watch={"orders": ids},
    )


class TestSharedBudget:
    """Daemons on one PostgreSQL split `requests_per_second`, also while one joins."""

    @pytest.mark.parametrize("database", ["postgresql"], indirect=True)
    async def test_two_daemons_stay_within_one_budget(
        self, upstream: Upstream, tmp_path: Path
    ) -> None:
        """Two daemons never exceed one budget per second, and both end up sharing it by two."""
        scripted, url = upstream
        tokens = {"first": "nom_first_daemon", "second": "nom_second_daemon"}
        scripted.tokens |= set(tokens.values())
        paths = {
            name: busy_orders(tmp_path, url, scripted, ok("ordered"), token=token, name=name)
            for name, token in tokens.items()
        }

        def polls(name: str | None = None) -> int:
            sent = {f"Bearer {tokens[name]}"} if name else {f"Bearer {t}" for t in tokens.values()}
            return sum(
                1
                for s in scripted.seen
                if s.path.startswith("/meter-orders/") and s.authorization in sent
            )

        logs: dict[str, DaemonLog] = {}
        try:
            logs["first"] = DaemonLog(await start_daemon(paths["first"], logs=True))
            await live_daemons(paths["first"], 1)
            await until(lambda: polls("first") >= 20, "the first alone spends the budget")
            logs["second"] = DaemonLog(await start_daemon(paths["second"], logs=True))
            await live_daemons(paths["second"], 2)

            def sharing() -> bool:
                shared = [log.named("budget_shared") for log in logs.values()]
                # The second's share starts after a heartbeat and more; then both poll on.
                return (
                    all(found and found[-1]["daemons"] == 2 for found in shared)
                    and polls("second") >= 20
                    and polls() >= 80
                )

            await until(sharing, "both daemons polling, each within a share of two")
        finally:
            stopped = await asyncio.gather(
                *(log.stop() for log in logs.values()), return_exceptions=True
            )
        for outcome in stopped:
            if isinstance(outcome, BaseException):
                raise outcome
        arrivals = [s.at for s in scripted.seen if s.path.startswith("/meter-orders/")]
        # A paced request counts from before it arrives until after its answer: load only
        # spreads a daemon's arrivals out, it never crowds more of them into one second.
        assert busiest_second(arrivals) <= 10
        for log in logs.values():
            assert log.named("budget_shared")[-1]["daemons"] == 2

    @pytest.mark.parametrize("database", ["postgresql"], indirect=True)
    async def test_a_429_met_by_one_daemon_pauses_both(
        self, upstream: Upstream, tmp_path: Path
    ) -> None:
        """A 429 met by one daemon pauses the other too, until it ends; then both poll again."""
        scripted, url = upstream
        tokens = {"first": "nom_first_daemon", "second": "nom_second_daemon"}
        scripted.tokens |= set(tokens.values())
        names = {f"Bearer {token}": name for name, token in tokens.items()}
        #: Each request for an order: which daemon sent it, and when it arrived (wall clock,
        #: as the daemons' log lines are stamped).
        arrivals: list[tuple[str, float]] = []
        refused: tuple[str, float] | None = None
        answer, refuse = ok("ordered"), error(429, {"Retry-After": str(RETRY_AFTER)})

        async def once_refused(order_id: str) -> Response:
            nonlocal refused
            # The upstream noted this request just before it called this action.
            authorization = scripted.seen[-1].authorization or ""
            arrivals.append((names[authorization], time.time()))
            # Armed once both daemons poll, each within its share: the next request is refused.
            if refused is None and {name for name, _at in arrivals} == set(tokens):
                refused = arrivals[-1]
                return await refuse(order_id)
            return await answer(order_id)

        paths = {
            name: busy_orders(tmp_path, url, scripted, once_refused, token=token, name=name)
            for name, token in tokens.items()
        }
        daemons: dict[str, asyncio.subprocess.Process] = {}
        logs: dict[str, str] = {}
        try:
            for count, name in enumerate(tokens, start=1):
                daemons[name] = await start_daemon(paths[name], logs=True)
                await live_daemons(paths[name], count)

            def polled_after_the_pause() -> bool:
                if refused is None:
                    return False
                ended = refused[1] + RETRY_AFTER
                return {name for name, at in arrivals if at > ended} == set(tokens)

            await until(polled_after_the_pause, "both daemons polled again after the pause")
        finally:
            stopped = await asyncio.gather(*map(stop, daemons.values()), return_exceptions=True)
        for name, out in zip(daemons, stopped, strict=True):
            if isinstance(out, BaseException):
                raise out
            logs[name] = out
        assert refused is not None
        met, fired_at = refused
        [other] = set(tokens) - {met}
        events = {
            name: [json.loads(line) for line in out.splitlines()] for name, out in logs.items()
        }
        # The daemon that met the 429 paused itself, logging it; the other took the pause over
        # from the database (it met no 429 itself), logging when it ends.
        [limited] = [e for e in events[met] if e["event"] == "poll_rate_limited"]
        shared = [e for e in events[other] if e["event"] == "pause_shared"]
        assert shared, f"{other} never took the pause over"
        until_shared = moment(shared[0]["until"])
        assert until_shared >= fired_at + RETRY_AFTER - CLOCK_SLACK
        # From the moment each daemon paused until the pause ended, only requests already on
        # their way (at most one per concurrency slot) reached the upstream from it; however
        # late a loaded machine let the other daemon see the pause, nothing judges how late.
        ended = fired_at + RETRY_AFTER - CLOCK_SLACK
        for name, paused in (
            (met, moment(limited["timestamp"])),
            (other, moment(shared[0]["timestamp"])),
        ):
            during = [at - fired_at for who, at in arrivals if who == name and paused < at < ended]
            assert len(during) <= CONCURRENCY, (name, during)
