"""The outbox against real receivers: a webhook endpoint verifying signatures, an SMTP server."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.outbox import FAST, Mailbox, deliver_all, hook_sink, poll, smtp_server
from tests.support import (
    HookReceiver,
    ScriptedUpstream,
    make_settings,
    ok,
    settings_mapping,
    tracker_cli,
    write_config,
)
from tracker.clock import utc_now
from tracker.config import Settings
from tracker.demo.serving import catch_all, serve
from tracker.model import Delivery, DeliveryState, DueDelivery
from tracker.service import Service, open_service
from tracker.sinks.registry import build_sinks
from tracker.sinks.render import event_body

#: Every test here runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.usefixtures("database")

A = "prdo_aaaaaaaaaaaaaaaaaaaaaaaa"
B = "prdo_bbbbbbbbbbbbbbbbbbbbbbbb"
Upstream = tuple[ScriptedUpstream, str]


async def states(polling: Service) -> dict[tuple[str, str], Any]:
    return {(d.event_id, d.sink): d async for d in polling.store.outbox.deliveries()}


async def one_transition_delivered(settings: Settings) -> list[Delivery]:
    """Watch A, poll it twice (first snapshot, then its transition), deliver; the outbox rows."""
    async with open_service(settings) as polling:
        await polling.store.orders.watch([A], source="cli", now=utc_now())
        await poll(polling, A)
        await poll(polling, A)
        await deliver_all(polling)
        return list((await states(polling)).values())


class TestRoutingAndFanOut:
    """Every transition reaches every matching sink, and no other."""

    async def test_fan_out(self, upstream: Upstream, tmp_path: Path) -> None:
        """Each transition goes to every matching sink, by webhook and mail, and no other."""
        scripted, url = upstream
        scripted.script(A, ok("ordered"), ok("checked"), ok("blocked"))
        scripted.script(B, ok("ordered"), ok("cancelled"))
        everything, blocked = HookReceiver(), HookReceiver()
        mailbox = Mailbox()
        async with (
            serve(catch_all(everything)) as all_url,
            serve(catch_all(blocked)) as blocked_url,
            smtp_server(mailbox) as port,
        ):
            settings = make_settings(
                tmp_path,
                url,
                delivery=FAST,
                smtp={"host": "127.0.0.1", "port": port},
                sinks=[
                    hook_sink("all", all_url.url, ["*"]),
                    hook_sink("blocked", blocked_url.url, ["*->blocked", "*->blocked_wim"]),
                    {
                        "name": "mail",
                        "type": "email",
                        "to": ["support@example.com"],
                        "on": ["*->cancelled"],
                    },
                ],
            )
            async with open_service(settings) as polling:
                await polling.store.orders.watch([A, B], source="cli", now=utc_now())
                for _ in range(3):
                    await poll(polling, A, B)
                await deliver_all(polling)
                history = await polling.store.reports.history(A)
        assert history is not None
        moves = {(t.from_status, t.to_status): t.event_id for t in history.transitions}
        assert set(moves) == {("ordered", "checked"), ("checked", "blocked")}
        assert all(h.verified for h in everything.hooks)
        assert len(everything.accepted) == 3  # A twice, B once
        assert [h.event_id for h in blocked.accepted] == [moves[("checked", "blocked")]]
        [mail] = mailbox.messages
        assert mail["Subject"] == f"{B}: ordered → cancelled"
        assert mail["To"] == "support@example.com"
        text = mail.get_body(("plain",))
        assert text is not None
        content = text.get_content()
        for needle in (B, "ordered", "cancelled", "energy-metering", "detected"):
            assert needle in content
        html = mail.get_body(("html",))
        assert html is not None
        assert B in html.get_content()
        body = json.loads(everything.accepted[0].body)
        assert body["type"] == "meter_order.status_changed"
        assert body["data"]["order"]["id"] in {A, B}


class TestRetries:
    """Failed attempts are retried with the same id and body; the last one dead-letters."""

    async def test_503_twice_then_delivered(self, upstream: Upstream, tmp_path: Path) -> None:
        """Two 503s are retried with the same id and body until the third attempt is delivered."""
        scripted, url = upstream
        scripted.script(A, ok("ordered"), ok("checked"))
        receiver = HookReceiver(answers=(503, 503, 204))
        async with serve(catch_all(receiver)) as hooks:
            settings = make_settings(
                tmp_path,
                url,
                delivery={"backoff": ["0.1s", "0.1s", "0.1s"]},
                sinks=[hook_sink("ops", hooks.url, ["*"])],
            )
            [delivery] = await one_transition_delivered(settings)
        assert [h.answered for h in receiver.hooks] == [503, 503, 204]
        assert len({h.event_id for h in receiver.hooks}) == 1
        assert len({h.body for h in receiver.hooks}) == 1
        assert all(h.verified for h in receiver.hooks)
        assert delivery.state is DeliveryState.DELIVERED
        assert delivery.attempts == 3
        assert delivery.last_status == 204

    async def test_longer_retry_after_wins(self, upstream: Upstream, tmp_path: Path) -> None:
        """A receiver's Retry-After longer than the backoff sets when the next attempt goes."""
        scripted, url = upstream
        scripted.script(A, ok("ordered"), ok("checked"))
        receiver = HookReceiver(answers=(503, 204), retry_after="1")
        async with serve(catch_all(receiver)) as hooks:
            settings = make_settings(
                tmp_path, url, delivery=FAST, sinks=[hook_sink("ops", hooks.url, ["*"])]
            )
            await one_transition_delivered(settings)
        assert [h.answered for h in receiver.hooks] == [503, 204]
        assert receiver.times[1] - receiver.times[0] >= 0.95  # not the 0.1 s backoff

    async def test_410_stops_at_once(self, upstream: Upstream, tmp_path: Path) -> None:
        """A 410 dead-letters the delivery after one attempt."""
        scripted, url = upstream
        scripted.script(A, ok("ordered"), ok("checked"))
        receiver = HookReceiver(answers=(410,))
        async with serve(catch_all(receiver)) as hooks:
            settings = make_settings(
                tmp_path, url, delivery=FAST, sinks=[hook_sink("ops", hooks.url, ["*"])]
            )
            [delivery] = await one_transition_delivered(settings)
        assert len(receiver.hooks) == 1
        assert delivery.state is DeliveryState.DEAD
        assert delivery.attempts == 1

    async def test_refused_connection_is_retried_then_dead(
        self, upstream: Upstream, tmp_path: Path
    ) -> None:
        """A refused connection is retried, then dead-lettered with a connection error."""
        scripted, url = upstream
        scripted.script(A, ok("ordered"), ok("checked"))
        # A port held bound but never listening: connections are refused, and no other test's
        # server can take the port meanwhile (as it could a port closed after use).
        with socket.socket() as held:
            held.bind(("127.0.0.1", 0))
            dead_url = f"http://127.0.0.1:{held.getsockname()[1]}"
            settings = make_settings(
                tmp_path, url, delivery=FAST, sinks=[hook_sink("ops", dead_url, ["*"])]
            )
            [delivery] = await one_transition_delivered(settings)
        assert delivery.state is DeliveryState.DEAD
        assert delivery.attempts == 3
        assert delivery.last_error is not None
        assert "connection failed" in delivery.last_error

    async def test_dead_letter_then_retry_by_hand(self, upstream: Upstream, tmp_path: Path) -> None:
        """A dead letter retried by hand is sent again with the same id and body."""
        scripted, url = upstream
        scripted.script(A, ok("ordered"), ok("checked"))
        receiver = HookReceiver(answers=(500,))
        async with serve(catch_all(receiver)) as hooks:
            mapping = settings_mapping(
                tmp_path, url, delivery=FAST, sinks=[hook_sink("ops", hooks.url, ["*"])]
            )
            path = str(write_config(tmp_path / "c.toml", mapping))
            ran = await tracker_cli("watch", "add", A, "--config", path)
            assert ran.code == 0, ran.err
            await tracker_cli("poll", A, "--config", path)
            await tracker_cli("poll", A, "--config", path)
            settings = make_settings(
                tmp_path, url, delivery=FAST, sinks=[hook_sink("ops", hooks.url, ["*"])]
            )
            async with open_service(settings) as polling:
                await deliver_all(polling)
            assert len(receiver.hooks) == 3
            ran = await tracker_cli(
                "deliveries", "list", "--state", "dead", "--json", "--config", path
            )
            [dead] = json.loads(ran.out)
            assert dead["sink"] == "ops"
            assert dead["attempts"] == 3
            receiver.answers = [204]
            ran = await tracker_cli("deliveries", "retry", "--all-dead", "--config", path)
            assert ran.code == 0, ran.out + ran.err
            assert "delivered" in ran.out
        assert [h.answered for h in receiver.hooks] == [500, 500, 500, 204]
        assert len({h.event_id for h in receiver.hooks}) == 1
        assert len({h.body for h in receiver.hooks}) == 1
        ran = await tracker_cli("history", A, "--json", "--config", path)
        [moved] = json.loads(ran.out)["transitions"]
        [delivered] = moved["deliveries"]
        assert (delivered["sink"], delivered["state"], delivered["attempts"]) == (
            "ops",
            "delivered",
            1,
        )


class TestEmail:
    """Mail through a real SMTP server: retried when refused, never with injected headers."""

    async def test_refused_then_accepted(self, upstream: Upstream, tmp_path: Path) -> None:
        """A mail refused once is sent again and accepted, its Message-ID made from the event id."""
        scripted, url = upstream
        scripted.script(A, ok("ordered"), ok("blocked"))
        mailbox = Mailbox(refuse=1)
        async with smtp_server(mailbox) as port:
            settings = make_settings(
                tmp_path,
                url,
                delivery=FAST,
                smtp={"host": "127.0.0.1", "port": port},
                sinks=[
                    {
                        "name": "mail",
                        "type": "email",
                        "to": ["a@example.com", "b@example.com"],
                        "on": ["*->blocked"],
                    }
                ],
            )
            [delivery] = await one_transition_delivered(settings)
        assert mailbox.refused == 1
        [mail] = mailbox.messages
        assert delivery.state is DeliveryState.DELIVERED
        assert delivery.attempts == 2
        assert mail["Message-ID"] == f"<{delivery.event_id}.mail@meter-order-tracker>"

    @pytest.mark.parametrize(
        "brk", ["\r\n", "\u2028", "\u2029", "\x85", "\x0b"], ids=["crlf", "ls", "ps", "nel", "vt"]
    )
    async def test_no_header_injection(self, upstream: Upstream, tmp_path: Path, brk: str) -> None:
        """A line break in a stored status never becomes a header of the e-mail.

        The upstream's answers can no longer carry one (a malformed poll), so the event is one
        stored before that, sent through the real e-mail sink to the real SMTP server.
        """
        _scripted, url = upstream
        hostile = f"checked{brk}Bcc: victim@example.com{brk}X-Evil: 1"
        now = utc_now()
        payload = event_body(
            event_id="evt_stored",
            order_id=A,
            from_status="ordered",
            to_status=hostile,
            detected_at=now,
            order_raw=json.dumps({"id": A, "object": "meter_order", "status": hostile}),
        )
        mailbox = Mailbox()
        async with smtp_server(mailbox) as port:
            settings = make_settings(
                tmp_path,
                url,
                delivery=FAST,
                smtp={"host": "127.0.0.1", "port": port},
                sinks=[{"name": "mail", "type": "email", "to": ["a@example.com"], "on": ["*"]}],
            )
            async with httpx.AsyncClient() as http:
                sink = build_sinks(settings, http)["mail"]
                sent = await sink.send(
                    DueDelivery(
                        id=1, event_id="evt_stored", sink="mail", attempts=0, payload=payload
                    )
                )
        assert sent.ok
        [mail] = mailbox.messages  # delivered at the first attempt: the header was built
        assert mail["Bcc"] is None
        assert mail["X-Evil"] is None
        assert len(str(mail["Subject"]).splitlines()) == 1
        assert "Bcc: victim@example.com" in mail["Subject"]  # kept as text, defused


class TestSinksCommand:
    """`tracker sinks test NAME` sends a marked test event and reports the answer."""

    @pytest.mark.parametrize(("answer", "code"), [(204, 0), (500, 1)])
    async def test_sink_test(
        self, upstream: Upstream, tmp_path: Path, answer: int, code: int
    ) -> None:
        """`sinks test` sends a signed test event and exits by its answer."""
        _scripted, url = upstream
        receiver = HookReceiver(answers=(answer,))
        async with serve(catch_all(receiver)) as hooks:
            mapping = settings_mapping(tmp_path, url, sinks=[hook_sink("ops", hooks.url, ["*"])])
            path = str(write_config(tmp_path / "c.toml", mapping))
            ran = await tracker_cli("sinks", "test", "ops", "--config", path)
            missing = await tracker_cli("sinks", "test", "nope", "--config", path)
        assert ran.code == code, ran.out + ran.err
        assert str(answer) in ran.out
        [hook] = receiver.hooks
        assert hook.verified
        assert json.loads(hook.body)["type"] == "meter_order.test"
        assert missing.code == 2
        assert "no sink named 'nope'" in missing.err
