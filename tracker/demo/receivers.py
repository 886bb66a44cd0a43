"""Local receivers for ``tracker demo``: a webhook endpoint checking signatures, a mail catcher."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from tracker.demo.serving import catch_all
from tracker.errors import InvalidSignature
from tracker.sinks.webhook import verify

Report = Callable[[str], None]


@dataclass
class WebhookReceiver:
    """Accepts Standard Webhooks POSTs whose signature checks out; can fail some on purpose."""

    secret: str
    report: Report
    #: Answer 503 to the first attempt of this many events, to show the outbox retrying.
    fail_first: int = 0
    received: list[dict[str, Any]] = field(default_factory=list)
    _failed: set[str] = field(default_factory=set)

    @property
    def app(self) -> ASGIApp:
        """The receiver as an ASGI app, answering on every path."""
        return catch_all(self.answer)

    async def answer(self, request: Request) -> Response:
        """Verify, then accept (204) or refuse (401 bad signature, 503 forced failure)."""
        key = base64.b64decode(self.secret.removeprefix("whsec_"))
        body = await request.body()
        try:
            event_id = verify(key, request.headers, body, now=time.time())
        except InvalidSignature as exc:
            self.report(f"webhook refused: {exc}")
            return Response(status_code=401)
        if len(self._failed) < self.fail_first and event_id not in self._failed:
            self._failed.add(event_id)
            self.report(f"webhook answered 503 to {event_id} on purpose; the outbox will retry")
            return Response(status_code=503, headers={"Retry-After": "1"})
        data = json.loads(body)["data"]
        self.received.append(data)
        self.report(
            f"webhook received {event_id} {data['from_status']} → {data['to_status']} "
            "(signature verified)"
        )
        return Response(status_code=204)


class MailCatcher:
    """An aiosmtpd handler that keeps every message and reports its subject."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(  # noqa: N802 - the name aiosmtpd calls
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        """Keep the message and accept it."""
        content = envelope.original_content or b""
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, email.message.EmailMessage)  # noqa: S101 - policy.default
        self.messages.append(message)
        self.report(f"mail to {', '.join(envelope.rcpt_tos)}: {message['Subject']}")
        return "250 OK"


async def start_mail_catcher(catcher: MailCatcher) -> tuple[asyncio.Server, int]:
    """Serve ``catcher`` on a free loopback port in the running loop."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(catcher, hostname="localhost"), host="127.0.0.1", port=0
    )
    return server, server.sockets[0].getsockname()[1]
