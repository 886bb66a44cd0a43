"""Where transitions are delivered: one small protocol, an explicit registry."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import httpx

from tracker.config import EmailSinkSettings, Settings, WebhookSinkSettings
from tracker.model import DueDelivery, SendResult
from tracker.sinks.email import EmailSink
from tracker.sinks.webhook import WebhookSink


class Sink(Protocol):
    """Something that delivers one stored event body and says how it went."""

    #: The sink's configured name.
    name: str

    async def send(self, delivery: DueDelivery) -> SendResult:
        """Attempt the delivery once; never raises for a receiver's failure."""
        ...


def build_sinks(settings: Settings, http: httpx.AsyncClient) -> dict[str, Sink]:
    """One sink per ``[[sinks]]`` entry, by type, sharing one HTTP client."""
    sinks: dict[str, Sink] = {}
    for entry in settings.sinks:
        if isinstance(entry, WebhookSinkSettings):
            sinks[entry.name] = WebhookSink(entry, http)
        elif isinstance(entry, EmailSinkSettings):
            sinks[entry.name] = EmailSink(entry, settings.smtp)
    return sinks


def routes(settings: Settings) -> Mapping[str, tuple[str, ...]]:
    """Each sink's ``on`` patterns, by name, in configuration order."""
    return {entry.name: entry.on for entry in settings.sinks}


__all__ = ["EmailSink", "Sink", "WebhookSink", "build_sinks", "routes"]
