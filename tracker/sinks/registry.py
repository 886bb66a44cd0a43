"""Where transitions are delivered: one small protocol, an explicit registry."""

from __future__ import annotations

import urllib.parse
from typing import Protocol

import httpx
import structlog

from tracker.config import Settings
from tracker.config_sinks import (
    EmailSinkSettings,
    SlackSinkSettings,
    TeamsSinkSettings,
    WebhookSinkSettings,
)
from tracker.model import DueDelivery, SendResult
from tracker.sinks.chat import slack_sink, teams_sink
from tracker.sinks.email import EmailSink, tls_context
from tracker.sinks.posting import masked
from tracker.sinks.webhook import WebhookSink

log = structlog.get_logger("tracker.sinks")


class Sink(Protocol):
    """Something that delivers one stored event body and says how it went."""

    #: The sink's configured name.
    name: str

    async def send(self, delivery: DueDelivery) -> SendResult:
        """Attempt the delivery once; never raises for a receiver's failure."""
        ...


def build_sinks(settings: Settings, http: httpx.AsyncClient) -> dict[str, Sink]:
    """One sink per ``[[sinks]]`` entry, by type, sharing one HTTP client.

    A template that does not compile or names an unknown variable is a :class:`ConfigError`.
    """
    smtp = settings.smtp
    deadline = min(settings.delivery.timeout, smtp.timeout).total_seconds()
    sinks: dict[str, Sink] = {}
    mail = [entry for entry in settings.sinks if isinstance(entry, EmailSinkSettings)]
    if mail and smtp.username is not None and not smtp.encrypted:
        log.warning(
            "smtp_credentials_without_tls",
            host=smtp.host,
            hint="the password travels in clear: set starttls or tls (require_tls refuses this)",
        )
    context = tls_context(smtp) if mail else None
    timeout = settings.delivery.timeout.total_seconds()
    public_url = settings.http.public_url
    for entry in settings.sinks:
        if isinstance(entry, WebhookSinkSettings):
            sinks[entry.name] = WebhookSink(entry, http, deadline=timeout, public_url=public_url)
        elif isinstance(entry, EmailSinkSettings):
            sinks[entry.name] = EmailSink(entry, smtp, deadline=deadline, context=context)
        elif isinstance(entry, SlackSinkSettings):
            _warn_in_clear(entry)
            sinks[entry.name] = slack_sink(entry, http, deadline=timeout, public_url=public_url)
        else:
            _warn_in_clear(entry)
            sinks[entry.name] = teams_sink(entry, http, deadline=timeout, public_url=public_url)
    return sinks


def _warn_in_clear(entry: SlackSinkSettings | TeamsSinkSettings) -> None:
    """A chat webhook's URL is its credential: over plain HTTP anyone on the way can post."""
    url = entry.url.get_secret_value()
    host = urllib.parse.urlsplit(url).hostname
    if url.startswith("http://") and host not in {"localhost", "127.0.0.1", "::1"}:
        log.warning(
            "chat_url_without_tls",
            sink=entry.name,
            url=masked(url),
            hint="the webhook URL is a secret and travels in clear: use https",
        )
