"""Chat sinks in the configuration: refusals in one line that never quote the webhook URL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog

from tracker.clock import utc_now
from tracker.config import from_mapping
from tracker.config_sinks import SlackSinkSettings, TeamsSinkSettings
from tracker.errors import ConfigError
from tracker.sinks.registry import build_sinks
from tracker.sinks.render import test_delivery as marked_test_delivery

SECRET = "T0TEAM/B0HOOK/Xq7TESTsecretTOKENpart9w3"
SLACK_URL = f"https://hooks.slack.com/services/{SECRET}"


def refusal(*sinks: dict[str, Any], environ: dict[str, str] | None = None, **sections: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        from_mapping({"sinks": list(sinks), **sections}, environ or {}, origin="c.toml")
    message = str(caught.value)
    assert "\n" not in message
    assert SECRET not in message
    return message


class TestRefusals:
    """A wrong chat sink is refused by key, in one line, without its URL's secret part."""

    def test_url_is_required(self) -> None:
        """A slack sink without url names the key."""
        message = refusal({"name": "chat", "type": "slack"})
        assert message == "c.toml: sinks[0].url: required key is missing"

    @pytest.mark.parametrize("kind", ["slack", "teams"])
    def test_url_must_be_http(self, kind: str) -> None:
        """A URL that is not http(s) is refused showing its host at most."""
        given = f"hooks.slack.com/services/{SECRET}"
        message = refusal({"name": "chat", "type": kind, "url": given})
        assert message.startswith("c.toml: sinks[0].url: 'hooks.slack.com/…' is not an http(s) URL")

    def test_url_from_the_environment_is_not_quoted(self) -> None:
        """A refused URL that came from ${VAR} is never quoted, even in part."""
        message = refusal(
            {"name": "chat", "type": "teams", "url": "${TEAMS_URL}"},
            environ={"TEAMS_URL": f"ftp://example.com/{SECRET}"},
        )
        assert message.startswith("c.toml: sinks[0].url: ")

    def test_unknown_card(self) -> None:
        """A Teams card other than adaptive or message is refused by key."""
        message = refusal({"name": "chat", "type": "teams", "url": SLACK_URL, "card": "hero"})
        assert message.startswith("c.toml: sinks[0].card: ")
        assert "'adaptive'" in message

    def test_unknown_key(self) -> None:
        """A typo in a chat sink is an unknown key, not silently ignored."""
        message = refusal({"name": "chat", "type": "slack", "url": SLACK_URL, "block": True})
        assert (
            message == "c.toml: sinks[0].block: unknown key; see config.example.toml for the keys"
        )

    def test_public_url(self) -> None:
        """[http] public_url must be an http(s) URL."""
        message = refusal(http={"public_url": "tracker.example.com"})
        assert message.startswith(
            "c.toml: http.public_url: 'tracker.example.com' is not an http(s)"
        )


class TestAccepted:
    """What a valid chat sink becomes."""

    def test_defaults_and_secret(self) -> None:
        """The URL is a secret (masked in every repr); Teams sends adaptive cards by default."""
        settings = from_mapping(
            {
                "http": {"public_url": "https://tracker.example.com/"},
                "sinks": [
                    {"name": "s", "type": "slack", "url": SLACK_URL},
                    {"name": "t", "type": "teams", "url": SLACK_URL, "on": ["stuck:*"]},
                ],
            },
            {},
            origin="test",
        )
        slack, teams = settings.sinks
        assert isinstance(slack, SlackSinkSettings)
        assert isinstance(teams, TeamsSinkSettings)
        assert (slack.blocks, teams.card, slack.on) == (False, "adaptive", ("*",))
        assert slack.url.get_secret_value() == SLACK_URL
        assert SECRET not in repr(settings)
        assert settings.http.public_url == "https://tracker.example.com"

    def test_digest_sink_gets_no_message_per_event(self) -> None:
        """A chat sink with a daily digest is left out of the routes of single events."""
        settings = from_mapping(
            {
                "sinks": [
                    {"name": "daily", "type": "slack", "url": SLACK_URL, "digest": "08:00 UTC"},
                    {"name": "live", "type": "teams", "url": SLACK_URL},
                ]
            },
            {},
            origin="test",
        )
        assert list(settings.routes()) == ["live"]

    async def test_plain_http_is_warned_without_the_secret(self) -> None:
        """A webhook URL over plain HTTP to another host is warned about, host only."""
        settings = from_mapping(
            {"sinks": [{"name": "chat", "type": "slack", "url": f"http://chat.example/{SECRET}"}]},
            {},
            origin="test",
        )
        async with httpx.AsyncClient() as http:
            with structlog.testing.capture_logs() as logs:
                build_sinks(settings, http)
        [line] = [line for line in logs if line["event"] == "chat_url_without_tls"]
        assert line["url"] == "http://chat.example/…"
        assert SECRET not in str(logs)

    async def test_unusable_url_is_a_dead_letter(self) -> None:
        """A URL the HTTP client cannot use fails at once, naming neither it nor its secret."""
        url = f"http://xn--a.example/{SECRET}"  # accepted as a URL, refused by IDNA
        settings = from_mapping(
            {"sinks": [{"name": "chat", "type": "teams", "url": url}]}, {}, origin="test"
        )
        async with httpx.AsyncClient() as http:
            sink = build_sinks(settings, http)["chat"]
            result = await sink.send(marked_test_delivery("chat", utc_now()))
        assert (result.ok, result.gone) == (False, True)
        assert result.error is not None
        assert result.error.startswith("the url cannot be used (")
        assert SECRET not in result.error
        assert "xn--a" not in result.error


class TestTemplates:
    """A sink's own templates are checked when the sinks are built, as e-mail ones are."""

    async def test_broken_template_is_refused(self, tmp_path: Path) -> None:
        """A template with a syntax error names the sink, the template and the line."""
        (tmp_path / "chat.stuck.txt").write_text("{{ order_id }}\n{% if %}\n")
        message = await _built(tmp_path)
        assert message.startswith("sink 'chat': template chat.stuck.txt line 2: ")

    async def test_unknown_variable_is_refused(self, tmp_path: Path) -> None:
        """A variable the event does not have is refused, with the ones it has."""
        (tmp_path / "chat.transition.txt").write_text("{% if test %}{{ customer }}{% endif %}\n")
        message = await _built(tmp_path)
        assert message.startswith(
            "sink 'chat': template chat.transition.txt: 'customer' is undefined"
        )
        assert "order_url" in message


async def _built(folder: Path) -> str:
    settings = from_mapping(
        {"sinks": [{"name": "chat", "type": "slack", "url": SLACK_URL, "templates": str(folder)}]},
        {},
        origin="test",
    )
    async with httpx.AsyncClient() as http:
        with pytest.raises(ConfigError) as caught:
            build_sinks(settings, http)
    return str(caught.value)
