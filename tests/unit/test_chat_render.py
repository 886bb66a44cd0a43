"""Chat messages: templates per kind, values escaped for each service, bodies within limits,
and webhook URLs kept out of errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from tracker.config_sinks import SlackSinkSettings, TeamsSinkSettings
from tracker.sinks.chat import (
    SECTION_LIMIT,
    SLACK,
    TEAMS,
    TEXT_LIMIT,
    ChatTemplates,
    Message,
    adaptive_card,
    message_card,
    slack_body,
    slack_never_retry,
    teams_never_retry,
    teams_refusal,
)
from tracker.sinks.posting import masked, scrub, secret_parts
from tracker.sinks.render import CHAT_KINDS, event_body, sample_payload

A = "prdo_aaaaaaaaaaaaaaaaaaaaaaaa"
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
PUBLIC = "https://tracker.example.com"


def slack_settings(templates: Path | None = None) -> SlackSinkSettings:
    return SlackSinkSettings(
        name="chat", type="slack", url=SecretStr("https://hooks.example/x"), templates=templates
    )


def teams_settings() -> TeamsSinkSettings:
    return TeamsSinkSettings(name="chat", type="teams", url=SecretStr("https://hooks.example/x"))


def moved(to_status: str) -> str:
    return event_body(
        event_id="evt_x",
        order_id=A,
        from_status="ordered",
        to_status=to_status,
        detected_at=NOW,
        order_raw=json.dumps({"id": A, "provider": "energy-metering"}),
    )


class TestTemplates:
    """Every kind of event has its packaged template, with and without public_url."""

    @pytest.mark.parametrize("kind", CHAT_KINDS)
    @pytest.mark.parametrize("public_url", [PUBLIC, None])
    def test_every_kind(self, kind: str, public_url: str | None) -> None:
        """Each kind renders a headline; the order page's link is there only with public_url."""
        message = ChatTemplates(slack_settings(), SLACK, public_url).message(
            sample_payload(kind, NOW)
        )
        assert message.kind == kind
        assert message.headline
        assert (f"<{PUBLIC}" in message.text) is (public_url is not None)
        assert "None" not in message.text

    def test_transition_text(self) -> None:
        """A transition names the order, FROM → TO, since when, and links its page."""
        message = ChatTemplates(slack_settings(), SLACK, PUBLIC).message(moved("checked"))
        assert message.text.splitlines() == [
            f"*{A}*: ordered → checked",
            "In checked since 2026-11-29 12:00 UTC · provider energy-metering",
            f"<{PUBLIC}/orders/{A}|Open the order page>",
        ]
        assert message.headline == f"{A}: ordered → checked"

    def test_own_template(self, tmp_path: Path) -> None:
        """A sink's folder overrides one kind's template; its helpers write the service's markup."""
        (tmp_path / "chat.transition.txt").write_text(
            "{{ bold(to_status) }} for {{ link(order_url, order_id) }}\n"
        )
        templates = ChatTemplates(slack_settings(tmp_path), SLACK, PUBLIC)
        assert templates.message(moved("checked")).text == (
            f"*checked* for <{PUBLIC}/orders/{A}|{A}>"
        )
        assert templates.message(sample_payload("stuck", NOW)).text.startswith("*prdo_test")


class TestEscaping:
    """A value from outside is text in every service: never a mention, a link or markup."""

    def test_slack(self) -> None:
        """Slack's &, < and > are escaped, so a status cannot ping a channel or hide a link."""
        text = (
            ChatTemplates(slack_settings(), SLACK, None)
            .message(moved("<!channel> & <https://evil.example|click>"))
            .text
        )
        assert "<!channel>" not in text
        assert "&lt;!channel&gt; &amp; &lt;https://evil.example|click&gt;" in text

    def test_teams(self) -> None:
        """Markdown that would make a link, code or emphasis is escaped; "_" stays as it is."""
        text = (
            ChatTemplates(teams_settings(), TEAMS, None)
            .message(moved("blocked_wim [click](https://evil.example) **loud** `code`"))
            .text
        )
        assert r"blocked_wim \[click\](https://evil.example) \*\*loud\*\* \`code\`" in text

    def test_line_breaks(self) -> None:
        """A stored status with line breaks stays on its line."""
        text = ChatTemplates(slack_settings(), SLACK, None).message(moved("checked\n*fake*")).text
        assert text.splitlines()[0] == f"*{A}*: ordered → checked *fake*"


class TestBodies:
    """Each service's body stays within what it accepts."""

    def test_slack_sections_split_between_lines(self) -> None:
        """A long text becomes sections of at most 3,000 characters, no line split in two."""
        lines = [f"• line {n} " + "x" * 90 for n in range(100)]
        message = Message(kind="digest", text="\n".join(["*head*", *lines]), plain="head")
        body = slack_body(message, blocks=True)
        header, *sections = body["blocks"]
        assert header == {"type": "header", "text": {"type": "plain_text", "text": "head"}}
        texts = [section["text"]["text"] for section in sections]
        assert all(len(text) <= SECTION_LIMIT for text in texts)
        assert "\n".join(texts).splitlines() == lines

    def test_text_is_cut(self, tmp_path: Path) -> None:
        """A template that writes too much is cut to the limit, marked where it was cut."""
        (tmp_path / "chat.transition.txt").write_text("{% for n in range(5000) %}word {% endfor %}")
        text = ChatTemplates(slack_settings(tmp_path), SLACK, None).message(moved("x")).text
        assert len(text) == TEXT_LIMIT
        assert text.endswith("…")

    def test_teams_cards(self) -> None:
        """The adaptive card has a block per line; the message card a paragraph per line."""
        message = Message(kind="transition", text="**a**\n\nb\nc", plain="a\nb\nc")
        card = adaptive_card(message)["attachments"][0]["content"]
        assert [block["text"] for block in card["body"]] == ["**a**", "b", "c"]
        legacy = message_card(message)
        assert (legacy["summary"], legacy["text"]) == ("a", "**a**\n\nb\n\nc")


class TestAnswers:
    """Which answers mean the webhook is gone for good, and which 2xx are failures."""

    @pytest.mark.parametrize(
        ("status", "said", "gone"),
        [
            (404, "no_service", True),
            (410, "channel_is_archived", True),
            (403, "invalid_token", True),
            (403, "action_prohibited", False),
            (400, "invalid_payload", False),
            (500, "rollup_error", False),
            (429, "", False),
        ],
    )
    def test_slack(self, status: int, said: str, gone: bool) -> None:
        """A revoked, deleted or archived Slack webhook is never retried; the rest are."""
        assert (slack_never_retry(status, said) is not None) is gone

    @pytest.mark.parametrize(("status", "gone"), [(404, True), (410, True), (403, False)])
    def test_teams(self, status: int, gone: bool) -> None:
        """A deleted Teams webhook or workflow is never retried."""
        assert (teams_never_retry(status, "") is not None) is gone

    def test_teams_200_that_failed(self) -> None:
        """A legacy connector's 200 whose text says delivery failed is a failure."""
        said = "Webhook message delivery failed with error: Microsoft Teams endpoint returned 429"
        assert teams_refusal(200, said) == said
        assert teams_refusal(200, "1") is None


class TestSecretUrls:
    """Only a webhook URL's host is ever shown."""

    URL = "https://x.logic.azure.com:443/workflows/abc/triggers/manual/paths/invoke?sv=1.0&sig=SIGsecretVALUE123"

    def test_masked(self) -> None:
        """The shown form stops at the host."""
        assert masked(self.URL) == "https://x.logic.azure.com:443/…"

    def test_scrubbed(self) -> None:
        """The URL, its path and query, or one long part alone are cut from a text."""
        hidden = secret_parts(self.URL)
        for quoted in (self.URL, self.URL.partition(".com:443")[2], "SIGsecretVALUE123"):
            assert scrub(f"could not post to {quoted}!", hidden) == "could not post to …!"
        assert scrub("HTTP 500: sv 1.0", hidden) == "HTTP 500: sv 1.0"  # short parts stay
