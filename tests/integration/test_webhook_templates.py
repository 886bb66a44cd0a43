"""A webhook sink's ``body_template``: the shape another service takes, signed all the same,
against a real local receiver on both databases."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response

from tests.outbox import FAST, deliver_all, poll
from tests.support import WEBHOOK_SECRET, ScriptedUpstream, make_settings, ok
from tracker.clock import utc_now
from tracker.config import Settings
from tracker.demo.serving import catch_all, serve
from tracker.errors import ConfigError
from tracker.model import Delivery, DeliveryState, DueDelivery
from tracker.service import open_service
from tracker.sinks.registry import build_sinks
from tracker.sinks.render import sample_payload
from tracker.sinks.webhook import verify

#: Every test here runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.usefixtures("database")

A = "prdo_aaaaaaaaaaaaaaaaaaaaaaaa"
PUBLIC = "https://tracker.example.com"
Upstream = tuple[ScriptedUpstream, str]
#: A Discord-shaped body: {"content": "..."}, its text made JSON-safe by ``tojson``.
DISCORD = (
    '{"content": {{ ("**" ~ event.data.order_id ~ "**: " ~ event.data.from_status'
    ' ~ " → " ~ event.data.to_status ~ " " ~ order_url) | tojson }}}\n'
)
#: An ntfy-shaped body: plain text.
NTFY = "{{ event.data.order_id }} is {{ event.data.to_status }} now\n"


@dataclass
class Receiver:
    """Records each POST's content type and body, and whether its signature verifies."""

    posts: list[tuple[str, bytes, bool]] = field(default_factory=list)

    async def __call__(self, request: Request) -> Response:
        body = await request.body()
        key = base64.b64decode(WEBHOOK_SECRET.removeprefix("whsec_"))
        try:
            verify(key, dict(request.headers), body, now=time.time())
            verified = True
        except Exception:
            verified = False
        self.posts.append((request.headers.get("content-type", ""), body, verified))
        return Response(status_code=204)


def templated(tmp_path: Path, url: str, text: str, **extra: Any) -> dict[str, Any]:
    """A webhook sink to ``url`` whose body is ``text``, a template written beside the test."""
    template = tmp_path / "body.tmpl"
    template.write_text(text, encoding="utf-8")
    return {
        "name": "other",
        "type": "webhook",
        "url": url,
        "secret": WEBHOOK_SECRET,
        "on": ["*"],
        "body_template": str(template),
        **extra,
    }


def settings_with(tmp_path: Path, upstream: str, sink: dict[str, Any]) -> Settings:
    return make_settings(
        tmp_path, upstream, delivery=FAST, http={"public_url": PUBLIC}, sinks=[sink]
    )


async def one_transition_delivered(settings: Settings) -> list[Delivery]:
    """Watch A, poll it twice (first snapshot, then its transition), deliver; the outbox rows."""
    async with open_service(settings) as polling:
        await polling.store.orders.watch([A], source="cli", now=utc_now())
        await poll(polling, A)
        await poll(polling, A)
        await deliver_all(polling)
        return [d async for d in polling.store.outbox.deliveries()]


class TestTemplatedBodies:
    """The rendered template is what the receiver gets, with its content type and a signature."""

    async def test_a_json_body_for_another_service(
        self, upstream: Upstream, tmp_path: Path
    ) -> None:
        """A transition arrives as the template's JSON, signed over exactly those bytes."""
        scripted, url = upstream
        scripted.script(A, ok("ordered"), ok("checked"))
        receiver = Receiver()
        async with serve(catch_all(receiver)) as server:
            sink = templated(tmp_path, server.url, DISCORD)
            [delivery] = await one_transition_delivered(settings_with(tmp_path, url, sink))
        [(content_type, body, verified)] = receiver.posts
        assert (content_type, verified) == ("application/json", True)
        assert json.loads(body) == {"content": f"**{A}**: ordered → checked {PUBLIC}/orders/{A}"}
        assert (delivery.state, delivery.attempts) == (DeliveryState.DELIVERED, 1)

    async def test_a_plain_text_body(self, upstream: Upstream, tmp_path: Path) -> None:
        """A text template goes out with the configured content type."""
        scripted, url = upstream
        scripted.script(A, ok("ordered"), ok("checked"))
        receiver = Receiver()
        async with serve(catch_all(receiver)) as server:
            sink = templated(tmp_path, server.url, NTFY, content_type="text/plain; charset=utf-8")
            await one_transition_delivered(settings_with(tmp_path, url, sink))
        [(content_type, body, verified)] = receiver.posts
        assert (content_type, verified) == ("text/plain; charset=utf-8", True)
        assert body.decode() == f"{A} is checked now\n"


class TestTemplateMistakes:
    """A template's mistakes are found at start, or end its delivery at once with the reason."""

    async def test_an_unknown_variable_is_refused_at_start(
        self, upstream: Upstream, tmp_path: Path
    ) -> None:
        """A template naming a variable it will never see is one configuration error."""
        _scripted, url = upstream
        sink = templated(tmp_path, "http://127.0.0.1:9/hook", "{{ evnet.data.order_id }}")
        settings = settings_with(tmp_path, url, sink)
        async with httpx.AsyncClient() as http:
            with pytest.raises(ConfigError) as refused:
                build_sinks(settings, http)
        assert str(refused.value) == (
            "sink 'other': template body.tmpl: 'evnet' is undefined; "
            "the variables are event, kind, order_url"
        )

    async def test_a_template_failing_on_an_event_is_a_dead_letter(
        self, upstream: Upstream, tmp_path: Path
    ) -> None:
        """A stuck alert has no from_status: that send fails for good and nothing is posted."""
        _scripted, url = upstream
        receiver = Receiver()
        async with serve(catch_all(receiver)) as server:
            settings = settings_with(tmp_path, url, templated(tmp_path, server.url, DISCORD))
            async with httpx.AsyncClient() as http:
                sink = build_sinks(settings, http)["other"]
                due = DueDelivery(
                    id=1,
                    event_id="evt_stuck",
                    sink="other",
                    payload=sample_payload("stuck", utc_now()),
                    attempts=0,
                )
                result = await sink.send(due)
        assert receiver.posts == []
        assert (result.ok, result.gone) == (False, True)
        assert result.error is not None
        assert result.error.startswith("body_template: ")
        assert "from_status" in result.error

    @pytest.mark.parametrize("value", ["json", "text/plain\nX-Evil: 1"])
    async def test_a_bad_content_type_is_refused(
        self, upstream: Upstream, tmp_path: Path, value: str
    ) -> None:
        """A content type that is not a media type is refused in one line naming the key."""
        _scripted, url = upstream
        sink = templated(tmp_path, "http://127.0.0.1:9/hook", NTFY, content_type=value)
        with pytest.raises(ConfigError) as refused:
            settings_with(tmp_path, url, sink)
        assert "sinks[0].content_type: " in str(refused.value)
        assert "is not a media type" in str(refused.value)
        assert "\n" not in str(refused.value)
