"""Chat sinks against real local servers playing Slack's and Teams' incoming webhooks.

Each server checks a body as its service would (Slack: ``text`` and optional Block Kit blocks;
Teams: a message card, or a message with an adaptive card) and answers as the service does.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
import time_machine
from starlette.requests import Request
from starlette.responses import Response

from tests.outbox import FAST, deliver_all, poll
from tests.support import (
    ScriptedUpstream,
    app_client,
    make_settings,
    ok,
    settings_mapping,
    tracker_cli,
    write_config,
)
from tests.users import WRITE_TOKEN
from tracker.clock import utc_now
from tracker.config import Settings, from_mapping
from tracker.demo.serving import catch_all, serve
from tracker.digest import SETTLE, raise_due_digests
from tracker.model import Delivery, DeliveryState, DueDelivery
from tracker.service import open_service
from tracker.sinks.registry import build_sinks
from tracker.sinks.render import event_body, sample_payload
from tracker.web import Metrics, build_app

#: Every test here runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.usefixtures("database")

A = "prdo_aaaaaaaaaaaaaaaaaaaaaaaa"
B = "prdo_bbbbbbbbbbbbbbbbbbbbbbbb"
PUBLIC = "https://tracker.example.com"
#: The secret part of each webhook URL: whoever holds it can post to the channel.
SLACK_SECRET = "Xq7TESTsecretTOKENpart9w3"
TEAMS_SECRET = "sigTESTsecretZ8vK2mN4pQ6rS"
SLACK_PATH = f"/services/T0TESTTEAM/B0TESTHOOK/{SLACK_SECRET}"
TEAMS_PATH = (
    "/workflows/0a1b2c3d4e5f/triggers/manual/paths/invoke"
    f"?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={TEAMS_SECRET}"
)
WRITE = {"Authorization": f"Bearer {WRITE_TOKEN}"}
Upstream = tuple[ScriptedUpstream, str]
Check = Callable[[dict[str, Any]], list[str]]


def slack_problems(body: dict[str, Any]) -> list[str]:
    """What Slack would refuse in an incoming-webhook body (``invalid_payload``)."""
    problems = [f"unknown key {key}" for key in body if key not in {"text", "blocks"}]
    if not isinstance(body.get("text"), str) or not body["text"].strip():
        problems.append("no text")
    blocks = body.get("blocks", [])
    if not isinstance(blocks, list) or len(blocks) > 50:
        return [*problems, "blocks is not a list of at most 50"]
    for block in blocks:
        text = block.get("text", {})
        if block.get("type") == "header":
            if text.get("type") != "plain_text" or not 0 < len(text.get("text", "")) <= 150:
                problems.append(f"bad header {block}")
        elif block.get("type") == "section":
            if text.get("type") != "mrkdwn" or not 0 < len(text.get("text", "")) <= 3000:
                problems.append(f"bad section {block}")
        else:
            problems.append(f"unexpected block {block}")
    return problems


def teams_problems(body: dict[str, Any]) -> list[str]:
    """What Teams would refuse: not a message card, nor a message holding adaptive cards."""
    problems: list[str] = []
    if body.get("@type") == "MessageCard":
        if body.get("@context") not in {
            "https://schema.org/extensions",
            "http://schema.org/extensions",
        }:
            problems.append("bad @context")
        if not (body.get("summary") or body.get("text")):
            problems.append("a message card needs a summary or a text")
        return problems
    if body.get("type") != "message" or not body.get("attachments"):
        return ["neither a message card nor a message with attachments"]
    for attachment in body["attachments"]:
        card = attachment.get("content") or {}
        if attachment.get("contentType") != "application/vnd.microsoft.card.adaptive":
            problems.append("an attachment is not an adaptive card")
        if card.get("type") != "AdaptiveCard" or not isinstance(card.get("version"), str):
            problems.append("content is not an AdaptiveCard with a version")
        for element in card.get("body", []):
            if element.get("type") != "TextBlock" or not isinstance(element.get("text"), str):
                problems.append(f"unexpected element {element}")
    return problems


@dataclass
class Post:
    """One POST the service got, and what it answered."""

    target: str
    content_type: str
    body: Any
    problems: list[str]
    answered: int


@dataclass
class ChatService:
    """An incoming webhook at ``target`` (path and query): other targets get 404, a body the
    service would refuse gets 400, the rest ``answers`` in turn (the last one repeats)."""

    check: Check
    target: str
    answers: list[tuple[int, str]] = field(default_factory=lambda: [(200, "ok")])
    posts: list[Post] = field(default_factory=list)

    async def __call__(self, request: Request) -> Response:
        raw = await request.body()
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        problems = self.check(body) if isinstance(body, dict) else ["not a JSON object"]
        if target != self.target:
            status, text = 404, "no_service"
        elif problems:
            status, text = 400, "invalid_payload"
        else:
            status, text = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        kind = request.headers.get("content-type", "")
        self.posts.append(Post(target, kind, body, problems, status))
        return Response(text, status_code=status, media_type="text/plain")


def slack(name: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "slack", "url": url, "on": ["*"], **extra}


def teams(name: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "teams", "url": url, "on": ["*"], **extra}


@asynccontextmanager
async def playing(service: ChatService) -> AsyncIterator[str]:
    """``service`` on a free port; its webhook's full URL."""
    async with serve(catch_all(service)) as server:
        yield server.url + service.target


async def one_transition_delivered(settings: Settings) -> list[Delivery]:
    """Watch A, poll it twice (first snapshot, then its transition), deliver; the outbox rows."""
    async with open_service(settings) as polling:
        await polling.store.orders.watch([A], source="cli", now=utc_now())
        await poll(polling, A)
        await poll(polling, A)
        await deliver_all(polling)
        return [d async for d in polling.store.outbox.deliveries()]


def chat_settings(tmp_path: Path, upstream: str, *sinks: dict[str, Any], **kw: Any) -> Settings:
    """Settings delivering to ``sinks``, retried fast, with links to :data:`PUBLIC`."""
    kw = {"delivery": FAST, "http": {"public_url": PUBLIC}} | kw
    return make_settings(tmp_path, upstream, sinks=list(sinks), **kw)


SINCE = r"\d{4}-\d\d-\d\d \d\d:\d\d UTC"


class TestBodies:
    """A transition reaches each service in the body that service expects."""

    async def test_slack_text(self, upstream: Upstream, tmp_path: Path) -> None:
        """Slack gets {"text"} naming the order, FROM → TO, since when, and the order's page."""
        scripted, url = upstream
        scripted.script(A, ok("ordered"), ok("checked"))
        service = ChatService(slack_problems, SLACK_PATH)
        async with playing(service) as hook:
            [delivery] = await one_transition_delivered(
                chat_settings(tmp_path, url, slack("chat", hook))
            )
        [post] = service.posts
        assert (post.problems, post.answered) == ([], 200)
        assert post.content_type == "application/json"
        assert list(post.body) == ["text"]
        headline, since, link = post.body["text"].splitlines()
        assert headline == f"*{A}*: ordered → checked"
        assert re.fullmatch(f"In checked since {SINCE} · provider energy-metering", since)
        assert link == f"<{PUBLIC}/orders/{A}|Open the order page>"
        assert (delivery.state, delivery.attempts, delivery.last_status) == (
            DeliveryState.DELIVERED,
            1,
            200,
        )

    async def test_slack_blocks(self, upstream: Upstream, tmp_path: Path) -> None:
        """With blocks = true Slack also gets a plain header and mrkdwn sections."""
        scripted, url = upstream
        scripted.script(A, ok("ordered"), ok("checked"))
        service = ChatService(slack_problems, SLACK_PATH)
        async with playing(service) as hook:
            await one_transition_delivered(
                chat_settings(tmp_path, url, slack("chat", hook, blocks=True))
            )
        [post] = service.posts
        assert post.problems == []
        header, section = post.body["blocks"]
        assert header["text"] == {"type": "plain_text", "text": f"{A}: ordered → checked"}
        assert section["text"]["type"] == "mrkdwn"
        assert f"<{PUBLIC}/orders/{A}|Open the order page>" in section["text"]["text"]
        assert post.body["text"].startswith(f"*{A}*: ordered → checked\n")

    async def test_teams_adaptive_card(self, upstream: Upstream, tmp_path: Path) -> None:
        """Teams (a Workflows webhook, 202) gets a message holding one adaptive card."""
        scripted, url = upstream
        scripted.script(A, ok("ordered"), ok("checked"))
        service = ChatService(teams_problems, TEAMS_PATH, [(202, "")])
        async with playing(service) as hook:
            [delivery] = await one_transition_delivered(
                chat_settings(tmp_path, url, teams("chat", hook))
            )
        [post] = service.posts
        assert post.problems == []
        [attachment] = post.body["attachments"]
        blocks = attachment["content"]["body"]
        assert blocks[0]["text"] == f"**{A}**: ordered → checked"
        assert blocks[0]["weight"] == "Bolder"
        assert re.fullmatch(
            f"In checked since {SINCE} · provider energy-metering", blocks[1]["text"]
        )
        assert blocks[2]["text"] == f"[Open the order page]({PUBLIC}/orders/{A})"
        assert (delivery.state, delivery.last_status) == (DeliveryState.DELIVERED, 202)

    async def test_teams_message_card(self, upstream: Upstream, tmp_path: Path) -> None:
        """Teams (a legacy connector, 200 "1") gets a message card with a plain summary."""
        scripted, url = upstream
        scripted.script(A, ok("ordered"), ok("checked"))
        service = ChatService(teams_problems, TEAMS_PATH, [(200, "1")])
        async with playing(service) as hook:
            [delivery] = await one_transition_delivered(
                chat_settings(tmp_path, url, teams("chat", hook, card="message"))
            )
        [post] = service.posts
        assert post.problems == []
        assert post.body["summary"] == f"{A}: ordered → checked"
        headline, since, link = post.body["text"].split("\n\n")
        assert headline == f"**{A}**: ordered → checked"
        assert since.startswith("In checked since ")
        assert link == f"[Open the order page]({PUBLIC}/orders/{A})"
        assert delivery.state is DeliveryState.DELIVERED

    async def test_every_kind_of_event(self, upstream: Upstream, tmp_path: Path) -> None:
        """Transitions, stuck, failing and recovered alerts and digests each get their text."""
        _scripted, url = upstream
        now = utc_now()
        payloads = {
            "transition": event_body(
                event_id="evt_moved",
                order_id=A,
                from_status="ordered",
                to_status="blocked",
                detected_at=now,
                order_raw=json.dumps({"id": A, "provider": "energy-metering"}),
            ),
            **{
                kind: sample_payload(kind, now)
                for kind in ("stuck", "poll_failing", "poll_recovered", "digest")
            },
        }
        expected = {
            "transition": f"{A}: ordered → blocked",
            "stuck": "stuck in waiting since ",
            "poll_failing": "cannot be polled (5 failures in a row)",
            "poll_recovered": "polled again after 5 failures in a row",
            "digest": "Meter orders, ",
        }
        service = ChatService(teams_problems, TEAMS_PATH, [(202, "")])
        async with playing(service) as hook, httpx.AsyncClient() as http:
            sink = build_sinks(chat_settings(tmp_path, url, teams("chat", hook)), http)["chat"]
            for kind, payload in payloads.items():
                due = DueDelivery(
                    id=1, event_id=f"evt_{kind}", sink="chat", attempts=0, payload=payload
                )
                assert (await sink.send(due)).ok, kind
        for post, (kind, needle) in zip(service.posts, expected.items(), strict=True):
            assert post.problems == [], kind
            headline = post.body["attachments"][0]["content"]["body"][0]["text"]
            assert needle in headline.replace("**", ""), (kind, headline)


class TestDigest:
    """A chat sink with ``digest`` gets one summary a day instead of a message per event."""

    @pytest.fixture
    def clock(self) -> Iterator[time_machine.Traveller]:
        """The wall clock, moved by the test; it starts on 28 Nov 2026 at 09:00 UTC."""
        with time_machine.travel(datetime(2026, 11, 28, 9, tzinfo=UTC), tick=True) as traveller:
            yield traveller

    async def test_daily_digest(
        self, upstream: Upstream, tmp_path: Path, clock: time_machine.Traveller
    ) -> None:
        """The day's change goes out once, at the digest time, linked to its order's page."""
        scripted, url = upstream
        scripted.script(A, ok("ordered"), ok("checked"))
        service = ChatService(slack_problems, SLACK_PATH)
        async with playing(service) as hook:
            settings = chat_settings(tmp_path, url, slack("daily", hook, digest="08:00 UTC"))
            async with open_service(settings) as running:
                await running.store.orders.watch([A], source="cli", now=utc_now())
                await poll(running, A)
                await poll(running, A)
                # No message per event: the transition has no delivery of its own.
                assert [d async for d in running.store.outbox.deliveries()] == []
                clock.move_to(datetime(2026, 11, 29, 8, tzinfo=UTC) + SETTLE)
                [digest] = await raise_due_digests(running.store, settings, now=utc_now())
                await deliver_all(running)
                clock.move_to(datetime(2026, 11, 29, 8, tzinfo=UTC) + timedelta(hours=1))
                assert await raise_due_digests(running.store, settings, now=utc_now()) == []
        [post] = service.posts
        assert post.problems == []
        assert post.body["text"].splitlines() == [
            "*Meter orders, 29 Nov 2026*: 1 change in 1 order, 0 stuck, 0 failing",
            f"• <{PUBLIC}/orders/{A}|{A}>: ordered → checked",
            "Changes detected from 2026-11-28 08:00 to 2026-11-29 08:00 UTC"
            f" · <{PUBLIC}|Open the support pages>",
        ]
        assert digest.sinks == ("daily",)


class TestRetries:
    """Failures are retried with backoff; an answer that means "gone" is a dead letter at once."""

    @pytest.mark.parametrize(("status", "said"), [(500, "rollup_error"), (429, "rate_limited")])
    async def test_retried_then_delivered(
        self, upstream: Upstream, tmp_path: Path, status: int, said: str
    ) -> None:
        """Two failed attempts are retried with the same body until the third is delivered."""
        scripted, url = upstream
        scripted.script(A, ok("ordered"), ok("checked"))
        service = ChatService(slack_problems, SLACK_PATH, [(status, said)] * 2 + [(200, "ok")])
        async with playing(service) as hook:
            [delivery] = await one_transition_delivered(
                chat_settings(
                    tmp_path, url, slack("chat", hook), delivery={"backoff": ["0.1s"] * 3}
                )
            )
        assert [p.answered for p in service.posts] == [status, status, 200]
        assert len({json.dumps(p.body) for p in service.posts}) == 1
        assert (delivery.state, delivery.attempts) == (DeliveryState.DELIVERED, 3)

    async def test_teams_failure_inside_a_200(self, upstream: Upstream, tmp_path: Path) -> None:
        """A legacy connector's 200 that says delivery failed is retried, not taken as sent."""
        scripted, url = upstream
        scripted.script(A, ok("ordered"), ok("checked"))
        failed = (
            "Webhook message delivery failed with error: Microsoft Teams endpoint returned "
            "HTTP error 429 with ContextId tcid=0,server=msgapi-canary-eus2-0,cv=deadbeef"
        )
        service = ChatService(teams_problems, TEAMS_PATH, [(200, failed), (200, "1")])
        async with playing(service) as hook:
            [delivery] = await one_transition_delivered(
                chat_settings(tmp_path, url, teams("chat", hook, card="message"))
            )
        assert [p.answered for p in service.posts] == [200, 200]
        assert (delivery.state, delivery.attempts) == (DeliveryState.DELIVERED, 2)

    @pytest.mark.parametrize(
        ("kind", "status", "said"),
        [
            ("slack", 404, "no_service"),
            ("slack", 410, "channel_is_archived"),
            ("slack", 403, "invalid_token"),
            ("teams", 404, ""),
            ("teams", 410, ""),
        ],
    )
    async def test_gone_is_dead_at_once(
        self, upstream: Upstream, tmp_path: Path, kind: str, status: int, said: str
    ) -> None:
        """A revoked or deleted webhook is dead-lettered after one attempt, with the reason."""
        scripted, url = upstream
        scripted.script(A, ok("ordered"), ok("checked"))
        check, target, entry = (
            (slack_problems, SLACK_PATH, slack)
            if kind == "slack"
            else (teams_problems, TEAMS_PATH, teams)
        )
        service = ChatService(check, target, [(status, said)])
        async with playing(service) as hook:
            [delivery] = await one_transition_delivered(
                chat_settings(tmp_path, url, entry("chat", hook))
            )
        assert len(service.posts) == 1
        assert (delivery.state, delivery.attempts, delivery.last_status) == (
            DeliveryState.DEAD,
            1,
            status,
        )
        assert delivery.last_error is not None
        assert delivery.last_error.startswith(f"HTTP {status}")
        assert said in delivery.last_error
        assert "not retried: the webhook was revoked or deleted" in delivery.last_error

    async def test_dead_letters_retried_from_page_and_cli(
        self, upstream: Upstream, tmp_path: Path
    ) -> None:
        """Dead letters are sent again from the dead-letters page and from the CLI."""
        scripted, url = upstream
        scripted.script(A, ok("ordered"), ok("checked"))
        scripted.script(B, ok("ordered"), ok("cancelled"))
        archived = (410, "channel_is_archived")
        service = ChatService(slack_problems, SLACK_PATH, [archived, archived, (200, "ok")])
        async with playing(service) as hook:
            users = [{"name": "ops-bot", "token": WRITE_TOKEN, "role": "write"}]
            mapping = settings_mapping(
                tmp_path,
                url,
                delivery=FAST,
                http={"public_url": PUBLIC, "users": users},
                sinks=[slack("chat", hook)],
            )
            config = str(write_config(tmp_path / "c.toml", mapping))
            settings = from_mapping(mapping, {}, origin="test")
            async with open_service(settings) as running:
                await running.store.orders.watch([A, B], source="cli", now=utc_now())
                await poll(running, A, B)
                await poll(running, A, B)
                await deliver_all(running)
                dead = {d.order_id: d async for d in running.store.outbox.deliveries(state="dead")}
                assert set(dead) == {A, B}
                app = build_app(
                    store=running.store,
                    metrics=Metrics(),
                    sinks=lambda: ("chat",),
                    users=settings.http.users,
                )
                async with app_client(app) as (_base, client):
                    answer = await client.post(
                        f"/dead-letters/{dead[A].event_id}/retry", headers=WRITE
                    )
                    assert answer.status_code == 303, answer.text
            async with open_service(settings) as running:  # a daemon's outbox, started anew
                await deliver_all(running)
                states = {d.order_id: d.state async for d in running.store.outbox.deliveries()}
            assert states == {A: DeliveryState.DELIVERED, B: DeliveryState.DEAD}
            ran = await tracker_cli("deliveries", "retry", dead[B].event_id, "--config", config)
            assert ran.code == 0, ran.out + ran.err
            assert "delivered" in ran.out
            listed = await tracker_cli("deliveries", "list", "--json", "--config", config)
        listed_states = {d["order_id"]: d["state"] for d in json.loads(listed.out)}
        assert listed_states == {A: "delivered", B: "delivered"}
        assert [p.answered for p in service.posts] == [410, 410, 200, 200]
        texts = [p.body["text"].splitlines()[0] for p in service.posts[2:]]
        assert texts == [f"*{A}*: ordered → checked", f"*{B}*: ordered → cancelled"]


class TestSecrets:
    """A webhook URL is a secret: no log line, error, output, API answer or page shows it."""

    async def test_never_shown(self, upstream: Upstream, tmp_path: Path) -> None:
        """Neither URL's secret part shows in logs, stored errors, status, the API or the pages."""
        scripted, url = upstream
        scripted.script(A, ok("ordered"), ok("checked"))
        # A proxy's error page that quotes the whole request, then a revoked webhook.
        slack_service = ChatService(slack_problems, SLACK_PATH)
        teams_service = ChatService(teams_problems, TEAMS_PATH)
        shown: list[str] = []
        with structlog.testing.capture_logs() as logs:
            async with playing(slack_service) as slack_hook, playing(teams_service) as teams_hook:
                slack_service.answers = [(502, f"bad gateway: POST {slack_hook} failed")]
                teams_service.answers = [(500, f"cannot reach {TEAMS_PATH}"), (410, "")]
                users = [{"name": "ops-bot", "token": WRITE_TOKEN, "role": "write"}]
                mapping = settings_mapping(
                    tmp_path,
                    url,
                    delivery=FAST,
                    http={"public_url": PUBLIC, "users": users},
                    sinks=[slack("slack", slack_hook), teams("teams", teams_hook)],
                )
                config = str(write_config(tmp_path / "c.toml", mapping))
                settings = from_mapping(mapping, {}, origin="test")
                shown += [repr(settings), str(settings)]
                async with open_service(settings) as service:
                    await service.store.orders.watch([A], source="cli", now=utc_now())
                    await poll(service, A)
                    await poll(service, A)
                    await deliver_all(service)
                    rows = [d async for d in service.store.outbox.deliveries()]
                    app = build_app(
                        store=service.store,
                        metrics=Metrics(),
                        sinks=lambda: ("slack", "teams"),
                        users=settings.http.users,
                    )
                    async with app_client(app) as (_base, client):
                        for path in (
                            "/api/v1/deliveries",
                            f"/api/v1/orders/{A}",
                            "/dead-letters",
                            f"/orders/{A}",
                            "/metrics",
                        ):
                            answer = await client.get(path, headers=WRITE)
                            assert answer.status_code == 200, path
                            shown.append(answer.text)
                # The CLI's --json objects are the API's (views.py): the API stands for both.
                for command in (
                    ("status",),
                    ("status", "--json"),
                    ("sinks", "test", "teams"),
                    ("deliveries", "retry", "--all-dead"),
                ):
                    ran = await tracker_cli(*command, "--config", config)
                    shown += [ran.out, ran.err]
        dead = {d.sink: d for d in rows}
        assert {sink: d.state for sink, d in dead.items()} == {
            "slack": DeliveryState.DEAD,
            "teams": DeliveryState.DEAD,
        }
        assert dead["slack"].last_error == "HTTP 502: bad gateway: POST … failed"
        assert any(line.get("error") == "HTTP 500: cannot reach …" for line in logs)
        shown += [d.last_error or "" for d in rows]
        shown += [json.dumps(line, default=str) for line in logs]
        assert any(line["event"] == "delivery_dead_lettered" for line in logs)
        for text in shown:
            assert SLACK_SECRET not in text
            assert TEAMS_SECRET not in text


class TestSinksCommand:
    """`tracker sinks test NAME` sends a marked test message through a chat sink."""

    async def test_sinks_test(self, upstream: Upstream, tmp_path: Path) -> None:
        """A test message reaches Slack (exit 0); a gone Teams webhook fails with exit 1."""
        _scripted, url = upstream
        slack_service = ChatService(slack_problems, SLACK_PATH)
        teams_service = ChatService(teams_problems, TEAMS_PATH, [(404, "")])
        async with playing(slack_service) as slack_hook, playing(teams_service) as teams_hook:
            mapping = settings_mapping(
                tmp_path, url, sinks=[slack("slack", slack_hook), teams("teams", teams_hook)]
            )
            config = str(write_config(tmp_path / "c.toml", mapping))
            sent = await tracker_cli("sinks", "test", "slack", "--config", config)
            refused = await tracker_cli("sinks", "test", "teams", "--config", config)
        assert sent.code == 0, sent.out + sent.err
        assert "slack: delivered (answer 200)" in sent.out
        [post] = slack_service.posts
        assert post.body["text"].startswith("[test] *prdo_test")
        assert "no order changed" in post.body["text"]
        assert refused.code == 1
        assert "teams: failed: HTTP 404 (not retried" in refused.out
        assert TEAMS_SECRET not in refused.out + refused.err
