"""Chat sinks: one short message per event to a Slack or Microsoft Teams incoming webhook.

The text comes from a Jinja2 template per kind of event (``chat.transition.txt``,
``chat.stuck.txt``, ``chat.poll_failing.txt``, ``chat.poll_recovered.txt``,
``chat.digest.txt``), packaged or from the sink's ``templates`` folder, written in the service's
own markup: every ``{{ value }}`` is escaped for it, and ``bold(text)`` and ``link(url, label)``
write its emphasis and links. The same template is also rendered as plain text for the places
that take no markup (a Teams card's summary). Each service's body wraps the text (Slack's
``{"text": …}`` and optional Block Kit blocks; a Teams adaptive or message card), and is sent
through a :class:`~tracker.sinks.posting.Poster` that keeps the URL, a secret, out of every error.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import jinja2

from tracker.config_sinks import MessageSinkSettings, SlackSinkSettings, TeamsSinkSettings
from tracker.model import DueDelivery, SendResult
from tracker.sinks.posting import Poster
from tracker.sinks.render import CHAT_KINDS, chat_context, sample_payload
from tracker.sinks.templating import compiled, environment
from tracker.text import one_line

#: Characters of a message's text. Far below what either service takes (Slack cuts at 40,000;
#: Teams refuses a body over 28 KB), and more than a digest's bounded lists need.
TEXT_LIMIT = 12_000
#: Characters of one Block Kit section's text: Slack refuses a longer one.
SECTION_LIMIT = 3000
#: Characters a value from outside may fill in a message (a status, an error).
VALUE_LIMIT = 500
#: Characters of a headline shown alone (Slack's header block takes 150).
HEADER_LIMIT = 150


class Formatted(str):
    """Markup a template helper made (a link, bold text): written as it is, never escaped."""

    __slots__ = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Markup:
    """How one service writes text: what a value needs escaped, and how links and bold look."""

    #: Makes a value from outside plain text in this markup.
    escape: Callable[[str], str]
    #: ``(url, escaped label)`` -> a link.
    link: Callable[[str, str], str]
    #: Escaped text -> bold text.
    bold: Callable[[str], str]


def _slack_escape(text: str) -> str:
    # Slack's three control characters; everything else is text.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _teams_escape(text: str) -> str:
    # Markdown that could make a value a link, code or emphasis. "_" stays: statuses hold it
    # mid-word, where it emphasises nothing, and an escape would show in some clients.
    for char in "\\`*[]<>":
        text = text.replace(char, "\\" + char)
    return text


#: Slack's mrkdwn: ``<url|label>`` and ``*bold*``.
SLACK = Markup(
    escape=_slack_escape,
    link=lambda url, label: f"<{_quoted(url, '<>|')}|{label}>",
    bold=lambda text: f"*{text}*",
)
#: The Markdown Teams renders in cards: ``[label](url)`` and ``**bold**``.
TEAMS = Markup(
    escape=_teams_escape,
    link=lambda url, label: f"[{label}]({_quoted(url, '()<> ')})",
    bold=lambda text: f"**{text}**",
)
#: No markup: for a card's summary.
PLAIN = Markup(escape=lambda text: text, link=lambda _url, label: label, bold=lambda text: text)


def _quoted(url: str, chars: str) -> str:
    """``url`` with each of ``chars`` percent-encoded, so it cannot end the markup around it."""
    for char in chars:
        url = url.replace(char, f"%{ord(char):02X}")
    return url


def _environment(overrides: str | None, markup: Markup) -> jinja2.Environment:
    def finalize(value: Any) -> Any:
        if value is None or isinstance(value, Formatted):
            return "" if value is None else value
        return markup.escape(one_line(value, VALUE_LIMIT))

    def text(value: object) -> str:
        return value if isinstance(value, Formatted) else markup.escape(one_line(value))

    return environment(
        overrides,
        finalize=finalize,
        helpers={
            "link": lambda url, label: Formatted(markup.link(str(url), text(label))),
            "bold": lambda value: Formatted(markup.bold(text(value))),
        },
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """One event's message: its text in the service's markup, and the same as plain text."""

    kind: str
    text: str
    plain: str

    @property
    def lines(self) -> list[str]:
        """The text's lines that say something."""
        return [line for line in self.text.splitlines() if line.strip()]

    @property
    def headline(self) -> str:
        """The first line of the plain text: a summary or a notification's preview."""
        return next((line for line in self.plain.splitlines() if line.strip()), self.kind)


def _cut(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ChatTemplates:
    """A chat sink's templates in its service's markup and in plain text, checked at start."""

    def __init__(
        self, settings: MessageSinkSettings, markup: Markup, public_url: str | None
    ) -> None:
        overrides = str(settings.templates) if settings.templates else None
        self._public_url = public_url
        now = datetime.now(UTC)
        self._templates: dict[tuple[str, bool], jinja2.Template] = {}
        for plain, used in ((False, markup), (True, PLAIN)):
            jinja = _environment(overrides, used)
            for kind in CHAT_KINDS:
                _kind, sample = chat_context(sample_payload(kind, now), public_url)
                self._templates[kind, plain] = compiled(
                    jinja, settings.name, f"chat.{kind}.txt", sample
                )

    def message(self, payload: str) -> Message:
        """The message of a stored event body."""
        kind, context = chat_context(payload, self._public_url)
        return Message(
            kind=kind,
            text=_cut(self._templates[kind, False].render(context), TEXT_LIMIT),
            plain=_cut(self._templates[kind, True].render(context), TEXT_LIMIT),
        )


def slack_body(message: Message, *, blocks: bool) -> dict[str, Any]:
    """Slack's ``{"text": …}``; with ``blocks``, also Block Kit: the headline as a header and
    the other lines as mrkdwn sections (``text`` stays, for notifications)."""
    body: dict[str, Any] = {"text": message.text}
    if blocks:
        header = {"type": "plain_text", "text": _cut(message.headline, HEADER_LIMIT)}
        body["blocks"] = [
            {"type": "header", "text": header},
            *(
                {"type": "section", "text": {"type": "mrkdwn", "text": section}}
                for section in _sections(message.lines[1:])
            ),
        ]
    return body


def _sections(lines: list[str]) -> list[str]:
    """``lines`` joined into as few texts of at most :data:`SECTION_LIMIT` characters as they
    fit, a line never split between two."""
    sections: list[str] = []
    for line in lines:
        cut = _cut(line, SECTION_LIMIT)
        if sections and len(sections[-1]) + 1 + len(cut) <= SECTION_LIMIT:
            sections[-1] += "\n" + cut
        else:
            sections.append(cut)
    return sections


def adaptive_card(message: Message) -> dict[str, Any]:
    """A Teams message holding one adaptive card, a text block per line, the first one larger
    (the shape Teams' Workflows webhooks take)."""
    blocks = [
        {"type": "TextBlock", "text": line, "wrap": True}
        | ({"weight": "Bolder", "size": "Medium"} if index == 0 else {})
        for index, line in enumerate(message.lines)
    ]
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": blocks,
    }
    attachment = {
        "contentType": "application/vnd.microsoft.card.adaptive",
        "contentUrl": None,
        "content": card,
    }
    return {"type": "message", "attachments": [attachment]}


def message_card(message: Message) -> dict[str, Any]:
    """A legacy Office 365 connector card: ``summary`` (plain) and ``text`` (a paragraph per
    line: a connector joins single line breaks)."""
    return {
        "@type": "MessageCard",
        "@context": "https://schema.org/extensions",
        "summary": _cut(message.headline, HEADER_LIMIT),
        "text": "\n\n".join(message.lines),
    }


#: Why an answer means "never retry": the webhook, or the channel behind it, is gone.
GONE = "the webhook was revoked or deleted, or its channel archived: set a new url, then retry"


def slack_never_retry(status: int, said: str) -> str | None:
    """404 (``no_service``, ``channel_not_found``), 410 (``channel_is_archived``) and 403
    ``invalid_token`` (a revoked webhook) never pass by themselves."""
    if status in {404, 410} or (status == 403 and said == "invalid_token"):
        return GONE
    return None


def teams_never_retry(status: int, _said: str) -> str | None:
    """404 and 410: the connector or the workflow is gone."""
    return GONE if status in {404, 410} else None


def teams_refusal(_status: int, said: str) -> str | None:
    """A legacy connector may answer 200 with its failure in the text (e.g. its own 429)."""
    return said if "delivery failed" in said.lower() else None


class ChatSink:
    """POSTs each event as a chat message, rendered from the stored body at every attempt."""

    def __init__(
        self,
        name: str,
        templates: ChatTemplates,
        body: Callable[[Message], dict[str, Any]],
        poster: Poster,
    ) -> None:
        self.name = name
        self._templates = templates
        self._body = body
        self._poster = poster

    def body(self, delivery: DueDelivery) -> dict[str, Any]:
        """What one delivery posts."""
        return self._body(self._templates.message(delivery.payload))

    async def send(self, delivery: DueDelivery) -> SendResult:
        """POST once; 2xx is success, a gone webhook is a dead letter, anything else retried."""
        content = json.dumps(self.body(delivery), ensure_ascii=False).encode()
        return await self._poster.post(content, {"content-type": "application/json"})


def slack_sink(
    settings: SlackSinkSettings,
    http: httpx.AsyncClient,
    *,
    deadline: float,
    public_url: str | None,
) -> ChatSink:
    """A sink posting to a Slack incoming webhook."""
    blocks = settings.blocks
    return ChatSink(
        settings.name,
        ChatTemplates(settings, SLACK, public_url),
        lambda message: slack_body(message, blocks=blocks),
        Poster(
            http,
            settings.url.get_secret_value(),
            deadline=deadline,
            secret_url=True,
            never_retry=slack_never_retry,
        ),
    )


def teams_sink(
    settings: TeamsSinkSettings,
    http: httpx.AsyncClient,
    *,
    deadline: float,
    public_url: str | None,
) -> ChatSink:
    """A sink posting to a Microsoft Teams webhook (Workflows or a legacy connector)."""
    return ChatSink(
        settings.name,
        ChatTemplates(settings, TEAMS, public_url),
        adaptive_card if settings.card == "adaptive" else message_card,
        Poster(
            http,
            settings.url.get_secret_value(),
            deadline=deadline,
            secret_url=True,
            never_retry=teams_never_retry,
            refusal=teams_refusal,
        ),
    )
