"""``[[sinks]]``: webhook, e-mail, Slack and Teams entries, their ``on`` patterns and digests."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator, model_validator

from tracker.config_base import KNOWN_STATUS_NAMES, Section, url_shown
from tracker.lifecycle import is_known


class _SinkBase(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    on: tuple[str, ...] = ("*",)

    @field_validator("on")
    @classmethod
    def _patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            if pattern == "*":  # the contract's own example: every transition, same as "*->*"
                continue
            if "->" not in pattern:
                _alert_pattern(pattern)
                continue
            sides = pattern.split("->")
            if len(sides) != 2:
                raise ValueError(f"pattern {pattern!r} is not FROM->TO (each a status or *)")
            for side in sides:
                if side != "*" and not is_known(side):
                    raise ValueError(
                        f"pattern {pattern!r} names unknown status {side!r}; "
                        f"known: {KNOWN_STATUS_NAMES}"
                    )
        return value


@dataclass(frozen=True, slots=True)
class DigestTime:
    """A time of day in a zone: when a daily digest is due."""

    at: time
    zone: ZoneInfo

    def last_due(self, now: datetime) -> datetime:
        """The latest due moment at or before ``now`` (UTC), across DST changes."""
        local = now.astimezone(self.zone)
        due = datetime.combine(local.date(), self.at, tzinfo=self.zone)
        if due > local:
            due = datetime.combine(local.date() - timedelta(days=1), self.at, tzinfo=self.zone)
        return due.astimezone(UTC)


def parse_digest_time(value: str) -> DigestTime:
    """``"08:00 Europe/Berlin"`` (an IANA zone; ``UTC`` is one)."""
    clock, _, zone = value.strip().partition(" ")
    match = re.fullmatch(r"([01]\d|2[0-3]):([0-5]\d)", clock)
    if match is None or not zone.strip():
        raise ValueError(f'{value!r} is not HH:MM ZONE, e.g. "08:00 Europe/Berlin"')
    try:
        info = ZoneInfo(zone.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {zone.strip()!r}: use an IANA name like Europe/Berlin or UTC"
        ) from None
    return DigestTime(at=time(int(match.group(1)), int(match.group(2))), zone=info)


def _alert_pattern(pattern: str) -> None:
    kind, colon, status = pattern.partition(":")
    if kind == "stuck" and colon and (status == "*" or is_known(status)):
        return
    if kind == "stuck" and colon:
        raise ValueError(
            f"pattern {pattern!r} names unknown status {status!r}; known: {KNOWN_STATUS_NAMES}"
        )
    if pattern not in {"poll_failing", "poll_recovered"}:
        raise ValueError(
            f"pattern {pattern!r} is not FROM->TO (each a status or *) nor an alert kind "
            '("stuck:STATUS", "stuck:*", "poll_failing", "poll_recovered")'
        )


class WebhookSinkSettings(_SinkBase):
    """A ``[[sinks]]`` entry of ``type = "webhook"``: Standard Webhooks POSTs."""

    type: Literal["webhook"]
    url: str
    secret: SecretStr
    #: A Jinja2 file whose rendering is the body instead of the stored event's JSON: the shape
    #: another service takes (Discord, ntfy, Mattermost, …). It sees ``event`` (that JSON,
    #: parsed), ``kind`` and ``order_url``; signed all the same.
    body_template: Path | None = None
    #: The body's ``Content-Type``.
    content_type: str = "application/json"

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.fullmatch(r"https?://\S+", value):
            raise ValueError(f"{url_shown(value)!r} is not an http(s) URL")
        return value

    @field_validator("body_template")
    @classmethod
    def _template_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"file {value} does not exist; create it or remove the key")
        return value

    @field_validator("content_type")
    @classmethod
    def _media_type(cls, value: str) -> str:
        if not re.fullmatch(r"[\w.+-]+/[\w.+-]+(\s*;\s*[\w.+-]+=[\w.+-]+)*", value):
            raise ValueError(f'{value!r} is not a media type, e.g. "text/plain; charset=utf-8"')
        return value

    @field_validator("secret")
    @classmethod
    def _whsec(cls, value: SecretStr) -> SecretStr:
        text = value.get_secret_value()
        if not text.startswith("whsec_"):
            raise ValueError("must be whsec_ followed by base64 (a Standard Webhooks secret)")
        try:
            key = base64.b64decode(text.removeprefix("whsec_"), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("the part after whsec_ is not valid base64") from None
        if len(key) < 16:
            raise ValueError("the key after whsec_ is shorter than 16 bytes")
        return value


class MessageSinkSettings(_SinkBase):
    """What the sinks that send people a message (e-mail, chat) share: their ``templates``
    folder, and an optional daily ``digest`` instead of one message per event."""

    templates: Path | None = None
    #: ``"08:00 Europe/Berlin"``: one message a day at that time instead of one per event.
    digest: str | None = None
    #: ``"weekly"``: the digest due on a Monday (in the digest's zone) adds the week's report.
    digest_report: Literal["weekly"] | None = None

    @field_validator("digest")
    @classmethod
    def _daily(cls, value: str | None) -> str | None:
        if value is not None:
            parse_digest_time(value)
        return value

    @model_validator(mode="after")
    def _report_needs_digest(self) -> MessageSinkSettings:
        if self.digest_report is not None and self.digest is None:
            raise ValueError(
                'digest_report needs a daily digest; add digest = "08:00 Europe/Berlin" '
                "(or your time) to the sink, or remove digest_report"
            )
        return self

    def digest_time(self) -> DigestTime | None:
        """When this sink's daily digest is due, if it has one."""
        return parse_digest_time(self.digest) if self.digest is not None else None

    @field_validator("templates")
    @classmethod
    def _folder(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError(f"folder {value} does not exist; create it or remove the key")
        return value


class EmailSinkSettings(MessageSinkSettings):
    """A ``[[sinks]]`` entry of ``type = "email"``: one message per transition."""

    type: Literal["email"]
    to: tuple[str, ...] = Field(min_length=1)

    @field_validator("to")
    @classmethod
    def _addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for address in value:
            if not re.fullmatch(r"[^@\s<>\r\n]+@[^@\s<>\r\n]+", address):
                raise ValueError(f"{address!r} is not an e-mail address")
        return value


class _ChatSinkBase(MessageSinkSettings):
    #: An incoming-webhook URL: whoever holds it can post, so it is a secret (never logged,
    #: never quoted in a refusal, only its host shown).
    url: SecretStr

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: SecretStr) -> SecretStr:
        text = value.get_secret_value()
        try:
            usable = re.fullmatch(r"https?://[^\s/]+/\S*", text) and urlsplit(text).port != 0
        except ValueError:  # a port out of range, an unclosed IPv6 bracket
            usable = False
        if not usable:
            raise ValueError(
                f"{url_shown(text)!r} is not an http(s) URL; "
                "paste the incoming-webhook URL the service gave you"
            )
        return value


class SlackSinkSettings(_ChatSinkBase):
    """A ``[[sinks]]`` entry of ``type = "slack"``: a message to a Slack incoming webhook (or
    any service that takes Slack's ``{"text": …}``, such as Mattermost)."""

    type: Literal["slack"]
    #: Also send Block Kit blocks: the headline as a header, the rest as sections.
    blocks: bool = False


class TeamsSinkSettings(_ChatSinkBase):
    """A ``[[sinks]]`` entry of ``type = "teams"``: a card to a Microsoft Teams webhook."""

    type: Literal["teams"]
    #: ``adaptive`` (a Workflows webhook) or ``message`` (a legacy Office 365 connector).
    card: Literal["adaptive", "message"] = "adaptive"


#: The ``type`` of each kind of sink, as ``[[sinks]]`` entries name it.
SINK_TYPES = ("webhook", "email", "slack", "teams")

SinkSettings = Annotated[
    WebhookSinkSettings | EmailSinkSettings | SlackSinkSettings | TeamsSinkSettings,
    Field(discriminator="type"),
]
