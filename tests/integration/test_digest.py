"""Daily digests: one message a day per digest sink, with the changes its ``on`` matches grouped
by order and the stuck and failing orders; none on a quiet day; once, however many daemons.

The clock is the only thing moved (time-machine); ``raise_due_digests`` is given it as ``now``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import time_machine

from tests.outbox import FAST, Mailbox, deliver_all, poll, smtp_server
from tests.support import (
    ScriptedUpstream,
    error,
    make_settings,
    ok,
    settings_mapping,
    tracker_cli,
    write_config,
)
from tracker import alerts
from tracker.clock import utc_now
from tracker.config import Settings
from tracker.config_sinks import EmailSinkSettings
from tracker.digest import SETTLE, raise_due_digests
from tracker.errors import ConfigError
from tracker.model import DueDelivery, Event
from tracker.service import Service, open_service
from tracker.sinks.email import EmailSink
from tracker.store import open_store

#: Every test here runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.usefixtures("database")

A = "prdo_aaaaaaaaaaaaaaaaaaaaaaaa"
B = "prdo_bbbbbbbbbbbbbbbbbbbbbbbb"
C = "prdo_cccccccccccccccccccccccc"
Upstream = tuple[ScriptedUpstream, str]
BERLIN = ZoneInfo("Europe/Berlin")


def digest_sink(on: list[str], digest: str = "08:00 Europe/Berlin") -> dict[str, Any]:
    return {"name": "mail", "type": "email", "to": ["ops@example.com"], "on": on, "digest": digest}


#: Limits for a step to happen at all; missing one fails the test, it times nothing.
PATIENCE = 60.0
#: The upstream and the mail server answer at once; their timeouts only bound a hang, as a
#: loaded machine may take more than the suite's usual second to carry an answer, and no test
#: here is about a timeout.
UPSTREAM = {"timeout": 10}
DELIVERY = FAST | {"timeout": 10}


def settings_for(tmp_path: Path, url: str, port: int = 25, **sections: Any) -> Settings:
    sinks = sections.pop("sinks", [digest_sink(["*"])])
    smtp = {"host": "127.0.0.1", "port": port}
    return make_settings(
        tmp_path, url, upstream=UPSTREAM, delivery=DELIVERY, smtp=smtp, sinks=sinks, **sections
    )


def berlin(day: datetime, hour: int, minute: int = 0) -> datetime:
    """``hour:minute`` in Berlin on ``day``'s date, in UTC."""
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=BERLIN).astimezone(UTC)


def data(event: Event) -> dict[str, Any]:
    body = json.loads(event.payload)
    assert body["type"] == "meter_order.digest"
    assert body["data"]["event_id"] == event.event_id
    found: dict[str, Any] = body["data"]
    return found


def text_of(mail: EmailMessage, kind: str) -> str:
    part = mail.get_body((kind,))
    assert part is not None
    content: str = part.get_content()
    return content


@pytest.fixture
def clock() -> Iterator[time_machine.Traveller]:
    """The wall clock, moved by each test; it starts on 25 Nov 2026 at noon UTC."""
    with time_machine.travel(datetime(2026, 11, 25, 12, tzinfo=UTC), tick=True) as traveller:
        yield traveller


async def digests(service: Service, at: datetime, clock: time_machine.Traveller) -> list[Event]:
    """Move the clock to ``at`` and raise what is due then."""
    clock.move_to(at)
    return await raise_due_digests(service.store, service.settings, now=utc_now())


class TestOneMessageADay:
    """A day with changes is one message: the changes ``on`` matches, grouped by order."""

    async def test_grouped_by_order(
        self, upstream: Upstream, tmp_path: Path, clock: time_machine.Traveller
    ) -> None:
        """A day's matching changes go out as one mail at the digest time, grouped by order."""
        scripted, url = upstream
        scripted.script(A, ok("ordered"), ok("checked"), ok("blocked"))
        scripted.script(B, ok("ordered"), ok("cancelled"))
        scripted.script(C, ok("ordered"), ok("checked"))
        mailbox = Mailbox()
        async with smtp_server(mailbox) as port:
            settings = settings_for(
                tmp_path, url, port, sinks=[digest_sink(["*->checked", "*->blocked"])]
            )
            async with open_service(settings) as service:
                await service.store.orders.watch([A, B, C], source="cli", now=utc_now())
                day = datetime(2026, 11, 28, tzinfo=UTC)
                # The first check finds no earlier digest: one for the day before, quiet.
                [first] = await digests(service, berlin(day, 8) + SETTLE, clock)
                assert first.sinks == ()
                for hour in (9, 10, 11):
                    clock.move_to(berlin(day, hour))
                    await poll(service, A, B, C)
                # A digest sink gets no message per event: only the digest.
                assert [d async for d in service.store.outbox.deliveries(sink="mail")] == []
                due = berlin(day + timedelta(days=1), 8)
                assert await digests(service, due + SETTLE - timedelta(seconds=5), clock) == []
                [digest] = await digests(service, due + SETTLE, clock)
                await deliver_all(service, PATIENCE)
        assert digest.sinks == ("mail",)
        assert digest.kind == "digest"
        assert digest.key == "digest:mail:2026-11-29T07:00:00.000000Z"
        body = data(digest)
        assert (body["period_start"], body["period_end"]) == (
            "2026-11-28T07:00:00.000000Z",
            "2026-11-29T07:00:00.000000Z",
        )
        assert (body["changes"], body["order_count"]) == (3, 2)
        grouped = {
            order["order_id"]: [(m["from_status"], m["to_status"]) for m in order["moves"]]
            for order in body["orders"]
        }
        # B's cancellation is not asked for: it is neither counted nor listed.
        assert grouped == {A: [("ordered", "checked"), ("checked", "blocked")],
                           C: [("ordered", "checked")]}  # fmt: skip
        assert [o["order_id"] for o in body["orders"]] == [A, C]
        assert body["orders"][0]["moves"][0]["detected_at"].startswith("2026-11-28T09:00")
        assert (body["stuck"], body["failing"]) == ([], [])
        [mail] = mailbox.messages
        assert mail["Subject"] == "Meter orders: 3 changes, 0 stuck, 0 failing (29 Nov 2026)"
        assert mail["Message-ID"] == f"<{digest.event_id}.mail@meter-order-tracker>"
        assert mail["X-Meter-Order"] is None
        text = text_of(mail, "plain")
        assert text.index(A) < text.index("2026-11-28 09:00  ordered → checked") < text.index(C)
        assert "2026-11-28 10:00  checked → blocked (block)" in text
        assert B not in text
        html = text_of(mail, "html")
        assert "<table" in html
        assert f"<code>{A}</code>" in html

    async def test_quiet_day_sends_nothing(
        self, upstream: Upstream, tmp_path: Path, clock: time_machine.Traveller
    ) -> None:
        """A day with no matching change stores an empty digest and sends no mail."""
        scripted, url = upstream
        scripted.script(B, ok("ordered"), ok("cancelled"))
        mailbox = Mailbox()
        async with smtp_server(mailbox) as port:
            settings = settings_for(tmp_path, url, port, sinks=[digest_sink(["*->checked"])])
            async with open_service(settings) as service:
                await service.store.orders.watch([B], source="cli", now=utc_now())
                await poll(service, B)
                await poll(service, B)  # a change the sink did not ask for
                due = berlin(utc_now() + timedelta(days=1), 8)
                [quiet] = await digests(service, due + SETTLE, clock)
                # Stored, so that the next check is one lookup and the next period starts here.
                assert await digests(service, due + SETTLE + timedelta(minutes=1), clock) == []
                [tomorrow] = await digests(service, due + timedelta(days=1) + SETTLE, clock)
                await deliver_all(service, PATIENCE)
                sent = [d async for d in service.store.outbox.deliveries()]
        assert (quiet.sinks, tomorrow.sinks) == ((), ())
        assert data(quiet)["changes"] == 0
        assert data(tomorrow)["period_start"] == data(quiet)["period_end"]
        assert [d for d in sent if d.sink == "mail"] == []
        assert mailbox.messages == []

    async def test_a_flapping_order_is_listed_briefly(
        self, upstream: Upstream, tmp_path: Path, clock: time_machine.Traveller
    ) -> None:
        """An order with many changes lists its first ten and points to the export for the rest."""
        scripted, url = upstream
        scripted.script(A, *[ok("ordered"), ok("checked")] * 7)
        async with open_service(settings_for(tmp_path, url)) as service:
            await service.store.orders.watch([A], source="cli", now=utc_now())
            for _ in range(14):
                await poll(service, A)
            due = berlin(utc_now(), 8) + timedelta(days=1)
            [digest] = await digests(service, due + SETTLE, clock)
        [order] = data(digest)["orders"]
        assert (order["changes"], len(order["moves"])) == (13, 10)
        text = text_of(mail_of(service.settings, digest), "plain")
        assert "… and 3 more" in text
        assert "tracker export --since 2026-11-25T07:00:00.000000Z" in text


def mail_of(settings: Settings, digest: Event) -> EmailMessage:
    """The message the digest sink makes of ``digest``."""
    [entry] = settings.sinks
    assert isinstance(entry, EmailSinkSettings)
    delivery = DueDelivery(
        id=0, event_id=digest.event_id, sink=entry.name, attempts=0, payload=digest.payload
    )
    return EmailSink(entry, settings.smtp, deadline=1).message(delivery)


class TestOnce:
    """Each sink's digest for a due time is raised once: called twice, or by two daemons."""

    async def test_twice_and_by_two_daemons(
        self, upstream: Upstream, tmp_path: Path, clock: time_machine.Traveller
    ) -> None:
        """Two daemons raising the same digest at once, and later again, send it once."""
        scripted, url = upstream
        scripted.script(A, ok("ordered"), ok("checked"))
        mailbox = Mailbox()
        async with smtp_server(mailbox) as port:
            settings = settings_for(tmp_path, url, port)
            async with open_service(settings) as service:
                await service.store.orders.watch([A], source="cli", now=utc_now())
                await poll(service, A)
                await poll(service, A)
                clock.move_to(berlin(utc_now() + timedelta(days=1), 8) + SETTLE)
                now = utc_now()
                async with (
                    open_store(settings.database.url) as one,
                    open_store(settings.database.url) as other,
                ):
                    raised = await asyncio.gather(
                        raise_due_digests(one, settings, now=now),
                        raise_due_digests(other, settings, now=now),
                    )
                    again = await raise_due_digests(one, settings, now=now + timedelta(hours=1))
                await deliver_all(service, PATIENCE)
                sent = [d async for d in service.store.outbox.deliveries(sink="mail")]
        assert sorted(len(r) for r in raised) == [0, 1]
        assert again == []
        assert len(sent) == 1
        assert len(mailbox.messages) == 1


class TestTimeMoved:
    """A digest time moved earlier sends no second digest for a period already covered."""

    async def test_moved_earlier(
        self, upstream: Upstream, tmp_path: Path, clock: time_machine.Traveller
    ) -> None:
        """A digest time moved earlier gives an empty period, not the covered hours again."""
        _scripted, url = upstream
        late = settings_for(tmp_path, url, sinks=[digest_sink(["*"], digest="08:00 UTC")])
        early = settings_for(tmp_path, url, sinks=[digest_sink(["*"], digest="07:00 UTC")])
        day = datetime(2026, 11, 26, tzinfo=UTC)
        async with open_service(late) as service:
            clock.move_to(day.replace(hour=8) + SETTLE)
            [sent] = await raise_due_digests(service.store, late, now=utc_now())
            clock.move_to(day.replace(hour=9))
            [covered] = await raise_due_digests(service.store, early, now=utc_now())
            clock.move_to(day.replace(hour=7) + timedelta(days=1) + SETTLE)
            [following] = await raise_due_digests(service.store, early, now=utc_now())
        assert data(covered)["period_start"] == data(covered)["period_end"]
        assert data(covered)["period_end"] == "2026-11-26T07:00:00.000000Z"
        assert covered.sinks == ()
        assert data(following)["period_start"] == data(sent)["period_end"]


class TestCatchUp:
    """A daemon down across several due times sends one digest covering the whole gap."""

    async def test_one_digest_for_the_gap(
        self, upstream: Upstream, tmp_path: Path, clock: time_machine.Traveller
    ) -> None:
        """After missed due times one digest covers the whole gap, and the next starts after it."""
        scripted, url = upstream
        scripted.script(A, ok("ordered"), ok("checked"), ok("installation_planning"))
        scripted.script(B, ok("ordered"), ok("ordered"), ok("ordered"), ok("cancelled"))
        mailbox = Mailbox()
        async with smtp_server(mailbox) as port:
            settings = settings_for(tmp_path, url, port)
            async with open_service(settings) as service:
                await service.store.orders.watch([A, B], source="cli", now=utc_now())
                await poll(service, A, B)
                start = datetime(2026, 11, 26, tzinfo=UTC)
                [before] = await digests(service, berlin(start, 8) + SETTLE, clock)
                for day in range(3):  # the daemon is down at 08:00 on the 27th and 28th
                    clock.move_to(berlin(start + timedelta(days=day), 12))
                    await poll(service, A, B)
                back = berlin(start + timedelta(days=3), 10)
                [catch_up] = await digests(service, back, clock)
                assert await digests(service, back + timedelta(minutes=1), clock) == []
                await deliver_all(service, PATIENCE)
                tomorrow = berlin(back, 8) + timedelta(days=1) + SETTLE
                [after] = await digests(service, tomorrow, clock)
        body = data(catch_up)
        assert catch_up.key == "digest:mail:2026-11-29T07:00:00.000000Z"
        assert body["period_start"] == data(before)["period_end"] == "2026-11-26T07:00:00.000000Z"
        moves = [(o["order_id"], m["to_status"], m["detected_at"][:10])
                 for o in body["orders"] for m in o["moves"]]  # fmt: skip
        assert moves == [
            (A, "checked", "2026-11-26"),
            (A, "installation_planning", "2026-11-27"),
            (B, "cancelled", "2026-11-28"),
        ]
        [mail] = mailbox.messages
        assert mail["Subject"] == "Meter orders: 3 changes, 0 stuck, 0 failing (29 Nov 2026)"
        assert data(after)["period_start"] == "2026-11-29T07:00:00.000000Z"
        assert after.sinks == ()


class TestStuckAndFailing:
    """The orders stuck and failing at the time are in the digest, even on a day of no change."""

    async def test_stuck_and_failing(
        self, upstream: Upstream, tmp_path: Path, clock: time_machine.Traveller
    ) -> None:
        """A digest lists the stuck and failing orders even when nothing changed."""
        scripted, url = upstream
        scripted.script(A, ok("ordered"))
        scripted.script(B, ok("waiting"), error(503))
        mailbox = Mailbox()
        async with smtp_server(mailbox) as port:
            settings = settings_for(
                tmp_path,
                url,
                port,
                alerts={"failing_after": 2, "stuck": {"ordered": "1h"}},
                sinks=[digest_sink(["*"], digest="09:30 UTC")],
            )
            async with open_service(settings) as service:
                store = service.store
                await store.orders.watch([A, B], source="cli", now=utc_now())
                for _ in range(3):
                    await poll(service, A, B)
                clock.move_to(utc_now() + timedelta(hours=2))
                now = utc_now()
                stays = await store.events.stuck({"ordered": timedelta(hours=1)}, now=now, limit=9)
                made = [
                    (s, alerts.stuck(order_id=s.order_id, status=s.status, since=s.since,
                                     threshold=timedelta(hours=1), now=now, routes={}))
                    for s in stays
                ]  # fmt: skip
                assert len(await store.events.report_stuck(made)) == 1
                when = datetime(2026, 11, 26, 9, 30, tzinfo=UTC) + SETTLE
                [digest] = await digests(service, when, clock)
                await deliver_all(service, PATIENCE)
        body = data(digest)
        assert body["changes"] == 0
        assert [(s["order_id"], s["status"]) for s in body["stuck"]] == [(A, "ordered")]
        [failing] = body["failing"]
        assert (failing["order_id"], failing["status"], failing["failures"]) == (B, "waiting", 2)
        assert "503" in failing["last_error"]
        [mail] = mailbox.messages
        assert mail["Subject"] == "Meter orders: 0 changes, 1 stuck, 1 failing (26 Nov 2026)"
        text = text_of(mail, "plain")
        assert f"{A}  in ordered since" in text
        assert f"{B}  2 failures, status waiting" in text


class TestDaylightSaving:
    """The digest stays at 08:00 local across a DST change: 23 or 25 hours apart in UTC."""

    @pytest.mark.parametrize(
        ("day", "hours"),
        [(datetime(2026, 10, 25, tzinfo=UTC), 25), (datetime(2026, 3, 29, tzinfo=UTC), 23)],
        ids=["autumn", "spring"],
    )
    async def test_eight_local(
        self,
        upstream: Upstream,
        tmp_path: Path,
        clock: time_machine.Traveller,
        day: datetime,
        hours: int,
    ) -> None:
        """The digest stays at 08:00 local on a DST day, 23 or 25 hours after the last."""
        scripted, url = upstream
        scripted.script(A, ok("ordered"), ok("checked"))
        before, due = berlin(day - timedelta(days=1), 8), berlin(day, 8)
        assert due - before == timedelta(hours=hours)
        async with open_service(settings_for(tmp_path, url)) as service:
            clock.move_to(before - timedelta(hours=2))
            await service.store.orders.watch([A], source="cli", now=utc_now())
            await poll(service, A)
            [previous] = await digests(service, before + SETTLE, clock)
            clock.move_to(due - timedelta(minutes=30))
            await poll(service, A)  # 07:30 local: this day's digest, whatever the UTC offset
            assert await digests(service, due - timedelta(minutes=10), clock) == []
            [digest] = await digests(service, due + SETTLE, clock)
        assert previous.key.endswith(before.strftime("%Y-%m-%dT%H:%M:%S.000000Z"))
        assert digest.key.endswith(due.strftime("%Y-%m-%dT%H:%M:%S.000000Z"))
        body = data(digest)
        assert body["date"] == day.date().isoformat()
        assert body["period_start"] == data(previous)["period_end"]
        [order] = body["orders"]
        assert [m["to_status"] for m in order["moves"]] == ["checked"]


class TestRefusals:
    """A bad ``digest`` is refused at start naming the key; so is a broken digest template."""

    @pytest.mark.parametrize(
        ("value", "says"),
        [
            ("8am Europe/Berlin", "is not HH:MM ZONE"),
            ("08:00", "is not HH:MM ZONE"),
            ("24:00 UTC", "is not HH:MM ZONE"),
            ("08:00 Europe/Atlantis", "unknown time zone 'Europe/Atlantis'"),
        ],
    )
    async def test_bad_digest_exits_2(
        self, upstream: Upstream, tmp_path: Path, value: str, says: str
    ) -> None:
        """A bad digest value exits 2 with one line naming the key and what is wrong."""
        _scripted, url = upstream
        mapping = settings_mapping(tmp_path, url, sinks=[digest_sink(["*"], digest=value)])
        path = write_config(tmp_path / "tracker.toml", mapping)
        ran = await tracker_cli("watch", "list", "--config", str(path))
        assert ran.code == 2
        [line] = ran.err.strip().splitlines()
        assert "sinks[0].digest: " in line
        assert says in line

    async def test_broken_digest_template(self, upstream: Upstream, tmp_path: Path) -> None:
        """A digest template with an unknown variable is refused naming the template."""
        _scripted, url = upstream
        folder = tmp_path / "templates"
        folder.mkdir()
        (folder / "digest.body.html").write_text("<p>{{ changes }} {{ orderz }}</p>\n")
        sink = digest_sink(["*"]) | {"templates": str(folder)}
        settings = settings_for(tmp_path, url, sinks=[sink])
        entry = settings.sinks[0]
        assert isinstance(entry, EmailSinkSettings)
        with pytest.raises(ConfigError, match=r"sink 'mail': template digest.body.html: 'orderz'"):
            EmailSink(entry, settings.smtp, deadline=1)


class TestDaemonSendsDigests:
    """`tracker run` raises a missed digest when it starts and sends it once."""

    async def test_a_missed_digest_goes_out_at_start(
        self, upstream: Upstream, tmp_path: Path
    ) -> None:
        """A daemon starting after a missed digest time sends that digest once."""
        scripted, url = upstream
        scripted.script(A, ok("ordered"), ok("checked"))
        mailbox = Mailbox()
        detected = utc_now()
        due = detected + timedelta(minutes=2)  # today's digest time, after the change
        async with smtp_server(mailbox) as port:
            sink = digest_sink(["*"], f"{due:%H:%M} UTC")
            settings = settings_for(tmp_path, url, port, sinks=[sink])
            async with open_service(settings) as service:
                await service.store.orders.watch([A], source="cli", now=detected)
                await poll(service, A)
                await poll(service, A)  # ordered -> checked, detected before the digest time
                # The daemon starts a day later: yesterday's digest was missed.
                with time_machine.travel(detected + timedelta(days=1), tick=True):
                    stop = asyncio.Event()
                    running = asyncio.create_task(service.daemon().run(stop))
                    try:
                        async with asyncio.timeout(PATIENCE):
                            while not mailbox.messages:  # noqa: ASYNC110 - a server's list
                                await asyncio.sleep(0.1)
                    finally:
                        stop.set()
                        await asyncio.wait_for(running, PATIENCE)
        [mail] = mailbox.messages
        assert mail["Subject"].startswith("Meter orders: 1 change")
        assert A in text_of(mail, "plain")
