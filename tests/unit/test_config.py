"""Configuration: TOML, ${VAR} expansion, durations, refusals that name the key."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import get_args

import pytest
from pydantic import BaseModel

from tracker.config import SECRET_KEYS, Settings, load, resolve_path
from tracker.config_base import parse_duration
from tracker.errors import ConfigError

SECRET = "whsec_" + "c2VjcmV0LXNlY3JldC1zZWNyZXQ="  # base64 of a 21-byte key
EXAMPLE = Path(__file__).parents[2] / "config.example.toml"
TOKEN = "tok_0123456789abcdef"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tracker.toml"
    path.write_text(text)
    return path


def refusal(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, text), environ or {})
    message = str(caught.value)
    assert "\n" not in message
    return message


class TestDurations:
    """A number of seconds or a string with a unit."""

    @pytest.mark.parametrize(
        ("given", "seconds"),
        [
            (90, 90),
            (0.5, 0.5),
            ("15m", 900),
            ("6h", 21600),
            ("7d", 604800),
            ("30s", 30),
            ("250ms", 0.25),
            ("45", 45),
        ],
    )
    def test_valid(self, given: object, seconds: float) -> None:
        """A number or a string with a unit parses to its duration."""
        assert parse_duration(given) == timedelta(seconds=seconds)

    @pytest.mark.parametrize("given", ["15 minutes", "-5", -5, True, "", "1w", None])
    def test_invalid(self, given: object) -> None:
        """A value that is not a duration is refused as invalid."""
        with pytest.raises(ValueError, match="invalid duration"):
            parse_duration(given)


class TestLoad:
    """Valid files load; every mistake is one line naming the key."""

    def test_example_file_loads_with_its_variables_set(self) -> None:
        """The example file loads once its environment variables are set."""
        environ = {
            "NOMOS_API_TOKEN": "nom_live_abc",
            "SMTP_USER": "u",
            "SMTP_PASSWORD": "p",
            "OPS_WEBHOOK_SECRET": SECRET,
            "TRACKER_SUPPORT_TOKEN": TOKEN,
        }
        settings = load(EXAMPLE, environ)
        assert str(settings.http.address) == "127.0.0.1:8080"
        assert [user.role for user in settings.http.users] == ["read"]
        assert settings.upstream.api_version == "2026-01-29.edison"
        assert settings.upstream.token is not None
        assert settings.upstream.token.get_secret_value() == "nom_live_abc"
        assert [sink.name for sink in settings.sinks] == ["ops", "support"]

    def test_secrets_never_print(self, tmp_path: Path) -> None:
        """A loaded secret shows in neither the settings' repr nor their str."""
        settings = load(write(tmp_path, '[upstream]\ntoken = "${T}"\n'), {"T": "nom_supersecret"})
        assert "nom_supersecret" not in repr(settings)
        assert "nom_supersecret" not in str(settings.upstream)

    def test_defaults(self, tmp_path: Path) -> None:
        """An empty file gives the documented polling defaults and the SQLite database."""
        settings = load(write(tmp_path, ""), {})
        policy = settings.polling.policy()
        assert policy.interval == timedelta(hours=1)
        assert policy.jitter == timedelta(minutes=6)
        assert policy.final_grace == timedelta(days=7)
        assert settings.database.url == "sqlite:///tracker.db"

    def test_per_status_intervals(self, tmp_path: Path) -> None:
        """A per-status interval overrides the default for that status."""
        settings = load(
            write(tmp_path, '[polling.intervals]\ninstallation_scheduled = "15m"\n'), {}
        )
        assert settings.polling.policy().interval_for("installation_scheduled") == timedelta(
            minutes=15
        )

    @pytest.mark.parametrize(
        ("text", "named"),
        [
            ("[upstream]\ntimoeut = 5\n", "upstream.timoeut: unknown key"),
            ("[upstrem]\n", "upstrem: unknown key"),
            ('[polling]\ninterval = "soon"\n', "polling.interval: invalid duration 'soon'"),
            (
                "[polling.intervals]\ninstalled_x = 5\n",
                "polling.intervals: unknown status 'installed_x'",
            ),
            ('[watch]\norders = ["prdo_OK"]\n', "watch.orders: invalid order id 'prdo_OK'"),
            ("[upstream]\nrequests_per_second = 0\n", "upstream.requests_per_second: "),
            ('[upstream]\nbase_url = "ftp://x"\n', "upstream.base_url: 'ftp://x' is not an http"),
            (
                '[upstream]\ntoken = "a"\nclient_id = "b"\nclient_secret = "c"\n',
                "upstream: set either token or client_id",
            ),
            ('[upstream]\nclient_id = "b"\n', "upstream: client_id and client_secret go together"),
            ('[log]\nformat = "xml"\n', "log.format: "),
            (
                '[[sinks]]\nname = "a"\ntype = "webhook"\nurl = "http://x"\nsecret = "abc"\n',
                "sinks[0].secret: must be whsec_",
            ),
            (
                '[[sinks]]\nname = "a"\ntype = "email"\nto = ["x@y"]\non = ["ordered->chekced"]\n',
                "sinks[0].on: pattern 'ordered->chekced' names unknown status 'chekced'",
            ),
            (
                '[[sinks]]\nname = "a"\ntype = "email"\nto = ["x@y"]\non = ["ordered"]\n',
                "sinks[0].on: pattern 'ordered' is not FROM->TO",
            ),
            (
                '[[sinks]]\nname = "a"\ntype = "email"\nto = ["x@y"]\non = ["stuck:wating"]\n',
                "sinks[0].on: pattern 'stuck:wating' names unknown status 'wating'",
            ),
            (
                '[[sinks]]\nname = "a"\ntype = "email"\nto = ["x@y"]\non = ["paging:*"]\n',
                "sinks[0].on: pattern 'paging:*' is not FROM->TO (each a status or *) nor an alert",
            ),
            ('[alerts.stuck]\nwating = "14d"\n', "alerts.stuck: unknown status 'wating'"),
            ('[alerts.stuck]\nwaiting = "two weeks"\n', "alerts.stuck.waiting: invalid duration"),
            ("[alerts]\nfailing_after = 0\n", "alerts.failing_after: "),
            (
                '[[sinks]]\nname = "a"\ntype = "email"\nto = ["x@y"]\ndigest = "8am"\n',
                "sinks[0].digest: '8am' is not HH:MM ZONE",
            ),
            (
                '[[sinks]]\nname = "a"\ntype = "email"\nto = ["x@y"]\ndigest = "08:00 CEST+1"\n',
                "sinks[0].digest: unknown time zone 'CEST+1'",
            ),
            (
                '[[sinks]]\nname = "a"\ntype = "email"\nto = ["x@y"]\ndigest = "07:60 UTC"\n',
                "sinks[0].digest: '07:60 UTC' is not HH:MM ZONE",
            ),
            ('[[sinks]]\nname = "a"\ntype = "pager"\n', "sinks[0]: "),
            ("[smtp]\nstarttls = true\ntls = true\n", "smtp: starttls and tls exclude each other"),
            ('[smtp]\nusername = "u"\n', "smtp: username and password go together"),
            ('[database]\nurl = "mysql://x"\n', "database.url: unsupported scheme 'mysql': use"),
            ('[database]\nurl = "postgresql+asyncpg://x"\n', "use sqlite:///PATH or postgresql://"),
            ("this is = not toml =", "is not valid TOML"),
            ('[http]\nlisten = "8080"\n', "http.listen: '8080' is not HOST:PORT"),
            ('[http]\nlisten = "::1:8080"\n', "http.listen: '::1:8080' is not HOST:PORT"),
            ('[http]\nlisten = "127.0.0.1:70000"\n', "http.listen: port 70000 is out of range"),
            ('[http]\nlisten = "a host:80"\n', "http.listen: 'a host' is not a host name"),
            ('[http]\nlisen = "127.0.0.1:80"\n', "http.lisen: unknown key"),
            (
                '[http]\ntimezone = "Mars/Olympus"\n',
                "http.timezone: unknown time zone 'Mars/Olympus'",
            ),
            ('[http]\nlanguage = "fr"\n', "http.language: "),
            (
                f'[[http.users]]\nname = "ui"\ntoken = "{TOKEN}"\nrole = "read"\nlanguage = "nl"\n',
                "http.users[0].language: ",
            ),
            (
                f'[[http.users]]\nname = "ui"\ntoken = "{TOKEN}"\nrole = "admin"\n',
                "http.users[0].role: ",
            ),
            ('[[http.users]]\nname = "ui"\nrole = "read"\n', "http.users[0].token: required"),
            (
                '[[http.users]]\nname = "ui"\ntoken = "short"\nrole = "read"\n',
                "http.users[0].token: shorter than 16 characters",
            ),
            (
                '[[http.users]]\nname = "ui"\ntoken = "has a space in it!!"\nrole = "read"\n',
                "http.users[0].token: must be printable ASCII without spaces",
            ),
            (
                f'[[http.users]]\nname = "a b"\ntoken = "{TOKEN}"\nrole = "read"\n',
                "http.users[0].name: ",
            ),
            (
                f'[[http.users]]\nname = "ui"\ntoken = "{TOKEN}"\nrole = "read"\n'
                f'[[http.users]]\nname = "ui"\ntoken = "{TOKEN}x"\nrole = "write"\n',
                "http.users: user name 'ui' is used twice",
            ),
            (
                f'[[http.users]]\nname = "ui"\ntoken = "{TOKEN}"\nrole = "read"\n'
                f'[[http.users]]\nname = "ops"\ntoken = "{TOKEN}"\nrole = "write"\n',
                "http.users: user 'ui' shares its token with another user",
            ),
        ],
    )
    def test_refusals_name_the_key(self, tmp_path: Path, text: str, named: str) -> None:
        """Each mistake in a file is refused naming its key."""
        assert named in refusal(tmp_path, text)

    def test_a_refused_database_url_never_shows_its_password(self, tmp_path: Path) -> None:
        """A refused database URL is named by its scheme, never with its password."""
        message = refusal(tmp_path, '[database]\nurl = "mysql://app:hunter2@db/x"\n')
        assert "database.url: unsupported scheme 'mysql'" in message
        assert "hunter2" not in message

    def test_http_listener_and_users(self, tmp_path: Path) -> None:
        """The listener address, IPv6 included, and the users with their roles load."""
        text = (
            '[http]\nlisten = "[::1]:8080"\n'
            '[[http.users]]\nname = "support-ui"\ntoken = "${T}"\nrole = "read"\n'
            f'[[http.users]]\nname = "ops"\ntoken = "{TOKEN}"\nrole = "write"\n'
        )
        settings = load(write(tmp_path, text), {"T": "tok_supersecret_value"})
        assert settings.http.address is not None
        assert (settings.http.address.host, settings.http.address.port) == ("::1", 8080)
        assert str(settings.http.address) == "[::1]:8080"
        assert [(u.name, u.role) for u in settings.http.users] == [
            ("support-ui", "read"),
            ("ops", "write"),
        ]
        assert settings.http.users[0].token.get_secret_value() == "tok_supersecret_value"
        assert "tok_supersecret_value" not in repr(settings)

    def test_no_listener_by_default(self, tmp_path: Path) -> None:
        """Without an [http] section there is no listener and no user."""
        settings = load(write(tmp_path, ""), {})
        assert settings.http.address is None
        assert settings.http.users == ()

    def test_a_refused_token_is_never_quoted(self, tmp_path: Path) -> None:
        """A refused user token is never quoted in the refusal."""
        message = refusal(
            tmp_path, '[[http.users]]\nname = "u"\ntoken = "hunter2"\nrole = "read"\n'
        )
        assert "hunter2" not in message

    def test_unset_variable_is_named(self, tmp_path: Path) -> None:
        """An unset environment variable is refused naming it and its key."""
        message = refusal(tmp_path, '[upstream]\ntoken = "${NOMOS_API_TOKEN}"\n')
        assert "upstream.token: environment variable NOMOS_API_TOKEN is not set" in message

    def test_missing_file_points_to_the_example(self, tmp_path: Path) -> None:
        """A missing file is refused pointing to config.example.toml."""
        with pytest.raises(ConfigError, match=r"not found: copy config.example.toml"):
            load(tmp_path / "nope.toml", {})

    def test_path_resolution(self) -> None:
        """--config wins over TRACKER_CONFIG, which wins over tracker.toml."""
        assert resolve_path("a.toml", {"TRACKER_CONFIG": "b.toml"}) == Path("a.toml")
        assert resolve_path(None, {"TRACKER_CONFIG": "b.toml"}) == Path("b.toml")
        assert resolve_path(None, {}) == Path("tracker.toml")


#: A value the refusals below must never show, in whole or in part.
HIDDEN = "Hunter2Secret9Zq"


def _never_shown(message: str) -> None:
    assert HIDDEN not in message
    assert HIDDEN[:6] not in message
    assert "\n" not in message


class TestRefusalsNeverQuoteTheFile:
    """A file that does not decode, parse or validate is refused by position, not by content."""

    def test_a_bad_byte_is_named_by_line_column_and_offset(self, tmp_path: Path) -> None:
        """A non-UTF-8 byte is refused by its position, with none of the file's text."""
        path = tmp_path / "tracker.toml"
        path.write_bytes(f'[upstream]\ntoken = "{HIDDEN}"\n# caf\xe9\n'.encode("latin-1"))
        with pytest.raises(ConfigError) as caught:
            load(path, {})
        message = str(caught.value)
        offset = len(f'[upstream]\ntoken = "{HIDDEN}"\n# caf')
        assert f"is not UTF-8: the byte at line 3, column 6 (offset {offset})" in message
        _never_shown(message)
        # Nothing chained either: a UnicodeDecodeError holds the whole file.
        assert caught.value.__cause__ is None
        assert caught.value.__context__ is None

    def test_a_bad_byte_inside_a_secret_shows_none_of_it(self, tmp_path: Path) -> None:
        """A non-UTF-8 byte within a secret's value is named without the value around it."""
        path = tmp_path / "tracker.toml"
        path.write_bytes(b'[smtp]\npassword = "' + HIDDEN.encode() + b'\xff\xfe"\n')
        with pytest.raises(ConfigError) as caught:
            load(path, {})
        assert "line 2, column 29" in str(caught.value)
        _never_shown(str(caught.value))

    @pytest.mark.parametrize(
        ("text", "named"),
        [
            (f'[upstream]\ntoken = "{HIDDEN}\n', "illegal character at line 2, column 26"),
            (f"[upstream]\ntoken = {HIDDEN}\n", "invalid value at line 2, column 9"),
            (f'[upstream]\ntoken = "{HIDDEN}"x\n', "at line 2, column 27"),
            (f'[upstream]\ntoken = "{HIDDEN[:3]}\x00{HIDDEN}"\n', "illegal character at line 2"),
            (f"[upstream]\n{HIDDEN} x = 1\n", "at line 2, column"),
            (f"[smtp]\nx = {{{HIDDEN} = 1, {HIDDEN} = 2}}\n", "key is repeated in an inline"),
            (f"[{HIDDEN}]\n[{HIDDEN}]\n", "a table is declared twice at line 2"),
            pytest.param(
                f'[upstream]\ntoken = "{HIDDEN}"\nx = {"[" * 100_000}\n',
                "nested too deeply",
                id="nested-too-deeply",
            ),
        ],
    )
    def test_toml_errors_are_named_by_position(self, tmp_path: Path, text: str, named: str) -> None:
        """A TOML syntax error names its line and column, never the text found there."""
        message = refusal(tmp_path, text)
        assert "is not valid TOML: " in message
        assert named in message
        _never_shown(message)
        assert "\\x00" not in message

    def test_a_validation_error_has_no_cause(self, tmp_path: Path) -> None:
        """A refused value is not chained to pydantic's error, which holds every value."""
        with pytest.raises(ConfigError) as caught:
            load(write(tmp_path, f'[smtp]\npassword = "{HIDDEN}"\nport = "x"\n'), {})
        assert "smtp.port: " in str(caught.value)
        assert caught.value.__cause__ is None
        assert caught.value.__context__ is None

    @pytest.mark.parametrize(
        ("text", "named"),
        [
            (f'[database]\nurl = "tracker:{HIDDEN}@db/x"\n', "database.url: not a URL with"),
            (f'[upstream]\nbase_url = "ftp://u:{HIDDEN}@x/{HIDDEN}"\n', "'ftp://x/…' is not"),
            (
                '[[sinks]]\nname = "a"\ntype = "webhook"\nsecret = "whsec_x"\n'
                f'url = "hooks.example/T0/{HIDDEN}"\n',
                "sinks[0].url: 'hooks.example/…' is not an http(s) URL",
            ),
        ],
    )
    def test_a_refused_url_shows_no_credentials_nor_path(
        self, tmp_path: Path, text: str, named: str
    ) -> None:
        """A refused URL is shown as far as its host, without a user, password or path."""
        message = refusal(tmp_path, text)
        assert named in message
        _never_shown(message)

    def test_a_value_from_the_environment_is_never_quoted(self, tmp_path: Path) -> None:
        """A refused value built from ${VAR} is refused without what the variable held."""
        text = '[[sinks]]\nname = "a"\ntype = "email"\nto = ["ops@x", "${TO}"]\n'
        message = refusal(tmp_path, text, {"TO": f"{HIDDEN}-no-at-sign"})
        assert message.endswith(
            "sinks[0].to: invalid value (not quoted: it is a secret or comes "
            "from an environment variable)"
        )
        _never_shown(message)

    def test_secret_keys_are_every_secret_field(self) -> None:
        """SECRET_KEYS names exactly the SecretStr fields of every section."""
        found: set[str] = set()
        models: list[type[BaseModel]] = [Settings]
        while models:
            for name, field in models.pop().model_fields.items():
                if "SecretStr" in str(field.annotation):
                    found.add(name)
                models += _models_in(field.annotation)
        assert found == SECRET_KEYS


def _models_in(annotation: object) -> list[type[BaseModel]]:
    """The pydantic models an annotation names, however deep in unions and tuples."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for part in get_args(annotation) for model in _models_in(part)]
