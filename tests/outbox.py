"""The outbox's side of the tests: a real SMTP server, webhook sinks, poll and deliver now."""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.support import WEBHOOK_SECRET
from tracker.clock import utc_now
from tracker.poller import poll_now
from tracker.service import Service

#: Retries a test waits for: two, a tenth of a second apart. The timeout only ends a hang: a
#: loaded machine may take more than a second to carry an instant answer, and no test using
#: it is about a timeout.
FAST = {"backoff": ["0.1s", "0.1s"], "timeout": 10}


class Mailbox:
    """An aiosmtpd handler: refuses the first ``refuse`` messages with 451, then accepts."""

    def __init__(self, refuse: int = 0) -> None:
        self.refuse = refuse
        self.messages: list[email.message.EmailMessage] = []
        self.refused = 0

    async def handle_DATA(  # noqa: N802 - aiosmtpd's name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        if self.refused < self.refuse:
            self.refused += 1
            return "451 4.3.0 try again later"
        message = email.message_from_bytes(
            envelope.original_content or b"", policy=email.policy.default
        )
        assert isinstance(message, email.message.EmailMessage)
        self.messages.append(message)
        return "250 OK"


@asynccontextmanager
async def smtp_server(mailbox: Mailbox) -> AsyncIterator[int]:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(mailbox), host="127.0.0.1", port=0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def hook_sink(name: str, url: str, on: list[str]) -> dict[str, Any]:
    return {"name": name, "type": "webhook", "url": url, "secret": WEBHOOK_SECRET, "on": on}


async def poll(polling: Service, *ids: str) -> None:
    claims = await polling.store.polls.claim(list(ids), lease_until=utc_now() + polling.lease)
    async for _ in poll_now(polling.store, polling.poller, claims):
        pass


async def deliver_all(polling: Service, seconds: float = 5.0) -> None:
    """Run the dispatcher until nothing is pending (or ``seconds`` pass)."""
    dispatcher = polling.dispatcher
    dispatcher.start()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        await dispatcher.tick()
        await asyncio.sleep(0.05)
        pending = [d async for d in polling.store.outbox.deliveries(state="pending")]
        if not pending:
            break
    await dispatcher.stop(1.0)
