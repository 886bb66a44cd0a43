"""TOML file -> validated, frozen settings. The only module that reads files and the environment."""

from __future__ import annotations

import base64
import binascii
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from tracker.errors import ConfigError, InvalidOrderId
from tracker.lifecycle import Status, is_known
from tracker.model import validate_order_id
from tracker.schedule import PollingPolicy

DEFAULT_PATH = Path("tracker.toml")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_KNOWN_STATUS_NAMES = ", ".join(sorted(Status))
#: The keys whose values are secrets (``SecretStr``): a refusal never quotes what they hold.
SECRET_KEYS = frozenset({"token", "client_secret", "webhook_secret", "password", "secret", "url"})
_NOT_QUOTED = "invalid value (not quoted: it is a secret or comes from an environment variable)"
#: Where tomllib ends its message: ``(at line 3, column 9)`` or ``(at end of document)``.
_TOML_POSITION = re.compile(r"\s*\(at (line \d+, column \d+|end of document)\)$")
#: tomllib messages that quote the file (a character, a key): they may be part of a secret.
_TOML_QUOTING = (
    (re.compile(r"Found invalid character .*"), "invalid character"),
    (re.compile(r"Illegal character .*"), "illegal character"),
    (re.compile(r"Cannot declare .* twice"), "a table is declared twice"),
    (re.compile(r"Cannot mutate immutable namespace .*"), "cannot add to an inline value"),
    (re.compile(r"Cannot redefine namespace .*"), "a table is defined twice"),
    (re.compile(r"Duplicate inline table key .*"), "a key is repeated in an inline table"),
)


def parse_duration(value: object) -> timedelta:
    """A number of seconds (``90``, ``0.5``) or a string with a unit (``"15m"``, ``"7d"``)."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return timedelta(seconds=value)
    if isinstance(value, str) and (match := _DURATION.fullmatch(value.strip())):
        return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
    raise ValueError(
        f"invalid duration {value!r}: use seconds (90, 0.5) or a number with a unit "
        '("30s", "15m", "6h", "7d")'
    )


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UpstreamSettings(_Section):
    """``[upstream]``: where the Nomos API is and how to talk to it."""

    base_url: str = "https://api.nomos.energy"
    api_version: str = "2026-01-29.edison"
    token: SecretStr | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    timeout: Duration = timedelta(seconds=10)
    #: Bytes an answer may have; a meter order is a few hundred, so this is room, not a need.
    max_body: int = Field(default=2 * 1024 * 1024, ge=1024)
    requests_per_second: float = Field(default=8, gt=0)
    max_concurrency: int = Field(default=8, ge=1, le=256)
    #: Signs the provider's webhooks (``POST /hooks/nomos``): absent, hints are refused.
    webhook_secret: SecretStr | None = None

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
            raise ValueError(f"{_url_shown(value)!r} is not an http(s) URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_kind_of_auth(self) -> UpstreamSettings:
        if self.token is not None and (self.client_id or self.client_secret):
            raise ValueError("set either token or client_id and client_secret, not both")
        if (self.client_id is None) != (self.client_secret is None):
            raise ValueError("client_id and client_secret go together: set both")
        return self


class DatabaseSettings(_Section):
    """``[database]``: the SQLAlchemy URL of the store."""

    url: str = "sqlite:///tracker.db"

    @field_validator("url")
    @classmethod
    def _supported(cls, value: str) -> str:
        if not re.match(r"(sqlite(\+aiosqlite)?|postgresql(\+psycopg)?)://", value):
            scheme = value.split("://", 1)[0] if "://" in value else ""
            # Only the scheme is named: the rest of a URL may hold a password.
            named = (
                f"unsupported scheme {scheme!r}"
                if re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]{0,19}", scheme)
                else "not a URL with a scheme"
            )
            raise ValueError(
                f"{named}: use sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
            )
        return value


class PollingSettings(_Section):
    """``[polling]``: how often orders are polled, and when final ones are retired."""

    interval: Duration = timedelta(hours=1)
    jitter: Duration | None = None
    intervals: dict[str, Duration] = Field(default_factory=dict)
    final_grace: Duration = timedelta(days=7)
    #: How due orders are learned: ``auto`` (list pages when they cost fewer requests),
    #: ``list`` (pages whenever an order's customer is known) or ``ids`` (one request each).
    sweep: Literal["auto", "list", "ids"] = "auto"

    @field_validator("intervals")
    @classmethod
    def _statuses(cls, value: dict[str, timedelta]) -> dict[str, timedelta]:
        for status in value:
            if not is_known(status):
                raise ValueError(f"unknown status {status!r}; known: {_KNOWN_STATUS_NAMES}")
        return value

    def policy(self) -> PollingPolicy:
        """These settings as a :class:`PollingPolicy`."""
        jitter = self.jitter if self.jitter is not None else self.interval / 10
        return PollingPolicy(
            interval=self.interval,
            jitter=jitter,
            intervals=dict(self.intervals),
            final_grace=self.final_grace,
        )


class WatchSettings(_Section):
    """``[watch]``: order ids watched from the configuration."""

    orders: tuple[str, ...] = ()

    @field_validator("orders")
    @classmethod
    def _ids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for order_id in value:
            try:
                validate_order_id(order_id)
            except InvalidOrderId as exc:
                raise ValueError(str(exc)) from None
        return value


class DeliverySettings(_Section):
    """``[delivery]``: how failed deliveries are retried."""

    backoff: tuple[Duration, ...] = tuple(
        parse_duration(d) for d in ("5s", "5m", "30m", "2h", "5h", "10h", "10h")
    )
    max_concurrency: int = Field(default=8, ge=1, le=256)
    timeout: Duration = timedelta(seconds=10)


class AlertSettings(_Section):
    """``[alerts]``: orders that stay too long in a status, or whose polls keep failing."""

    #: The longest normal stay per status (``waiting = "14d"``); longer raises ``stuck``.
    stuck: dict[str, Duration] = Field(default_factory=dict)
    #: Failed polls in a row that raise ``poll_failing``; absent: never.
    failing_after: int | None = Field(default=None, ge=1)

    @field_validator("stuck")
    @classmethod
    def _statuses(cls, value: dict[str, timedelta]) -> dict[str, timedelta]:
        for status, threshold in value.items():
            if not is_known(status):
                raise ValueError(f"unknown status {status!r}; known: {_KNOWN_STATUS_NAMES}")
            if threshold <= timedelta(0):
                raise ValueError(f"the threshold of {status!r} must be longer than zero")
        return value


class LogSettings(_Section):
    """``[log]``: format and level of the structured log."""

    format: Literal["json", "console"] | None = None
    level: Literal["debug", "info", "warning", "error"] = "info"


class SmtpSettings(_Section):
    """``[smtp]``: the mail server e-mail sinks send through."""

    host: str = "localhost"
    port: int = Field(default=25, ge=1, le=65535)
    starttls: bool = False
    tls: bool = False
    username: str | None = None
    password: SecretStr | None = None
    sender: str = Field(default="Meter order tracker <tracker@localhost>", alias="from")
    timeout: Duration = timedelta(seconds=10)
    ca_file: Path | None = None
    require_tls: bool = False

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("ca_file")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value} is not a file; give the PEM file of the relay's CA")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SmtpSettings:
        if self.starttls and self.tls:
            raise ValueError("starttls and tls exclude each other: set one")
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together: set both or neither")
        if self.require_tls and not self.encrypted:
            raise ValueError("require_tls is set but neither starttls nor tls: set one of them")
        return self

    @property
    def encrypted(self) -> bool:
        """Whether the session runs over TLS (STARTTLS or implicit)."""
        return self.starttls or self.tls


#: The shortest bearer token accepted: 16 random characters are beyond guessing over HTTP.
MIN_TOKEN_LENGTH = 16


@dataclass(frozen=True, slots=True)
class Address:
    """Where the HTTP listener binds: a host name or address, and a port (0: any free one)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_address(value: str) -> Address:
    """``"127.0.0.1:8080"``, ``"localhost:8080"`` or ``"[::1]:8080"``."""
    host, colon, port = value.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not colon or not host or not port.isdigit() or (":" in host and "[" not in value):
        raise ValueError(
            f'{value!r} is not HOST:PORT, e.g. "127.0.0.1:8080" (or "[::1]:8080" for IPv6)'
        )
    if not 0 <= int(port) <= 65535:
        raise ValueError(f"port {port} is out of range: use 1 to 65535 (0 picks a free one)")
    if not re.fullmatch(r"[A-Za-z0-9.:_-]+", host):
        raise ValueError(f"{host!r} is not a host name or IP address")
    return Address(host=host, port=int(port))


class HttpUser(_Section):
    """A ``[[http.users]]`` entry: a bearer token for the API and the pages, and its role."""

    #: Appears in the logs of write actions.
    name: str = Field(pattern=r"^[A-Za-z0-9_.@-]{1,64}$")
    #: Compared in constant time; never logged.
    token: SecretStr
    #: ``read``, or ``write`` (which can also watch, unwatch and retry).
    role: Literal["read", "write"]
    #: The pages' language for this user, over ``[http] language``; absent: as configured there.
    language: Literal["auto", "en", "de"] | None = None

    @field_validator("token")
    @classmethod
    def _strong(cls, value: SecretStr) -> SecretStr:
        text = value.get_secret_value()
        # The message never quotes the token: a refused one may still be a real secret.
        if len(text) < MIN_TOKEN_LENGTH:
            raise ValueError(
                f"shorter than {MIN_TOKEN_LENGTH} characters; generate one with "
                "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        if not re.fullmatch(r"[\x21-\x7e]+", text):
            raise ValueError("must be printable ASCII without spaces (it travels in a header)")
        return value


class HttpSettings(_Section):
    """``[http]``: the listener for health, metrics, the API and the support pages."""

    #: ``HOST:PORT``; absent: no listener.
    listen: str | None = None
    users: tuple[HttpUser, ...] = ()
    #: The pages' address as users reach them (``https://tracker.example.com``): links in
    #: messages point there. Absent: messages carry no link.
    public_url: str | None = None
    #: The pages' language: ``auto`` (the browser's ``Accept-Language``), ``en`` or ``de``.
    language: Literal["auto", "en", "de"] = "auto"
    #: The zone the pages show times in (an IANA name); the API stays in UTC.
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}: use an IANA name like Europe/Berlin or UTC"
            ) from None
        return value

    @field_validator("public_url")
    @classmethod
    def _public(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value):
            raise ValueError(
                f"{_url_shown(value)!r} is not an http(s) URL without query, "
                'e.g. "https://tracker.example.com"'
            )
        return value.rstrip("/") if value is not None else None

    @field_validator("listen")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None:
            parse_address(value)
        return value

    @field_validator("users")
    @classmethod
    def _unique(cls, value: tuple[HttpUser, ...]) -> tuple[HttpUser, ...]:
        names = [user.name for user in value]
        tokens = [user.token.get_secret_value() for user in value]
        for index, name in enumerate(names):
            if names.count(name) > 1:
                raise ValueError(f"user name {name!r} is used twice; names must be unique")
            if tokens.count(tokens[index]) > 1:
                raise ValueError(f"user {name!r} shares its token with another user")
        return value

    @property
    def address(self) -> Address | None:
        """Where to listen, if anywhere."""
        return parse_address(self.listen) if self.listen is not None else None


class _SinkBase(_Section):
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
                        f"known: {_KNOWN_STATUS_NAMES}"
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


def _url_shown(url: str) -> str:
    """``url`` as far as its host, without user or password: its path may hold a token too."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        scheme, rest = "", url
    host = rest.split("/", 1)[0].rpartition("@")[2]
    return f"{scheme}{separator}{host}" + ("/…" if "/" in rest else "")


def _alert_pattern(pattern: str) -> None:
    kind, colon, status = pattern.partition(":")
    if kind == "stuck" and colon and (status == "*" or is_known(status)):
        return
    if kind == "stuck" and colon:
        raise ValueError(
            f"pattern {pattern!r} names unknown status {status!r}; known: {_KNOWN_STATUS_NAMES}"
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
            raise ValueError(f"{_url_shown(value)!r} is not an http(s) URL")
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
                f"{_url_shown(text)!r} is not an http(s) URL; "
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


class Settings(_Section):
    """The whole configuration file."""

    upstream: UpstreamSettings = UpstreamSettings()
    database: DatabaseSettings = DatabaseSettings()
    polling: PollingSettings = PollingSettings()
    watch: WatchSettings = WatchSettings()
    delivery: DeliverySettings = DeliverySettings()
    alerts: AlertSettings = AlertSettings()
    log: LogSettings = LogSettings()
    smtp: SmtpSettings = SmtpSettings()
    http: HttpSettings = HttpSettings()
    sinks: tuple[SinkSettings, ...] = ()

    @field_validator("sinks")
    @classmethod
    def _unique_names(cls, value: tuple[SinkSettings, ...]) -> tuple[SinkSettings, ...]:
        names = [sink.name for sink in value]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"sink name {name!r} is used twice; names must be unique")
        return value

    def routes(self) -> Mapping[str, tuple[str, ...]]:
        """Each sink's ``on`` patterns, by name, in configuration order.

        A sink with a daily digest gets no message per event: its digest holds them.
        """
        return {
            entry.name: entry.on
            for entry in self.sinks
            if not (isinstance(entry, MessageSinkSettings) and entry.digest is not None)
        }


def resolve_path(explicit: str | None, environ: Mapping[str, str]) -> Path:
    """``--config``, else ``$TRACKER_CONFIG``, else ``./tracker.toml``."""
    if explicit:
        return Path(explicit)
    if environ.get("TRACKER_CONFIG"):
        return Path(environ["TRACKER_CONFIG"])
    return DEFAULT_PATH


def load(path: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Read, expand and validate the configuration file at ``path``.

    A file that does not decode or parse is refused by position, never by content: the file
    holds secrets, and the parsers' own errors carry the text they stopped at.
    """
    env = os.environ if environ is None else environ
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} not found: copy config.example.toml to {path} "
            "or pass --config PATH"
        ) from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from exc
    return from_mapping(_parsed(_decoded(data, path), path), env, origin=str(path))


# The parsers' errors are raised from after their ``except`` blocks, so they carry neither a
# cause nor a context: a UnicodeDecodeError holds the whole file (``object``), a
# TOMLDecodeError may too (``doc``, Python 3.14), and a ValidationError holds the values.


def _decoded(data: bytes, path: Path) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        where = _byte_position(exc)
    raise ConfigError(f"config file {path} is not UTF-8: {where}")


def _parsed(text: str, path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        reason = _toml_error(exc)
    except RecursionError:  # tomllib parses nested arrays and tables by recursion
        reason = "arrays or inline tables nested too deeply"
    raise ConfigError(f"config file {path} is not valid TOML: {reason}")


def _byte_position(exc: UnicodeDecodeError) -> str:
    data = exc.object
    line = data.count(b"\n", 0, exc.start) + 1
    column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
    return (
        f"the byte at line {line}, column {column} (offset {exc.start}) cannot be decoded; "
        "save the file as UTF-8"
    )


def _toml_error(exc: tomllib.TOMLDecodeError) -> str:
    message = str(exc).splitlines()[0] if str(exc) else ""
    position = _TOML_POSITION.search(message)
    reason = message[: position.start()] if position else message
    for quoting, plain in _TOML_QUOTING:
        if quoting.fullmatch(reason):
            reason = plain
    if position is None:  # not a message this code knows: its text may quote the file
        return "the parser stopped (no position given)"
    return f"{reason[:1].lower()}{reason[1:]} at {position.group(1)}"


#: Where a ``${VAR}`` was expanded (keys and list indexes, as pydantic locates errors), and to what.
Expansions = dict[tuple[str | int, ...], list[str]]


def from_mapping(raw: Mapping[str, Any], environ: Mapping[str, str], origin: str) -> Settings:
    """Validate an already parsed configuration, expanding ``${VAR}`` from ``environ``."""
    expansions: Expansions = {}
    expanded = _expand(raw, environ, (), expansions)
    try:
        return Settings.model_validate(expanded)
    except ValidationError as exc:
        refusal = _first_error(exc, expansions)
    raise ConfigError(f"{origin}: {refusal}")


def _expand(
    value: Any, environ: Mapping[str, str], where: tuple[str | int, ...], expansions: Expansions
) -> Any:
    if isinstance(value, str):
        return _VARIABLE.sub(
            lambda match: _variable(match.group(1), environ, where, expansions), value
        )
    if isinstance(value, Mapping):
        return {
            key: _expand(item, environ, (*where, key), expansions) for key, item in value.items()
        }
    if isinstance(value, list):
        return [
            _expand(item, environ, (*where, index), expansions) for index, item in enumerate(value)
        ]
    return value


def _variable(
    name: str, environ: Mapping[str, str], where: tuple[str | int, ...], expansions: Expansions
) -> str:
    if name not in environ:
        raise ConfigError(
            f"{_dotted(where)}: environment variable {name} is not set; export it or remove the key"
        )
    expansions.setdefault(where, []).append(environ[name])
    return environ[name]


def _dotted(location: tuple[str | int, ...]) -> str:
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "(top level)"


def _first_error(exc: ValidationError, expansions: Expansions) -> str:
    error = exc.errors(include_url=False)[0]
    # A discriminated union puts the sink type into the location; users never wrote it.
    location = tuple(part for part in error["loc"] if part not in SINK_TYPES)
    key = _dotted(location)
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key; see config.example.toml for the keys"
    if error["type"] == "missing":
        return f"{key}: required key is missing"
    message = str(error["msg"]).removeprefix("Value error, ")
    if any(_quotes(message, value) for value in _hidden(location, error["input"], expansions)):
        return f"{key}: {_NOT_QUOTED}"
    return f"{key}: {message}"


def _quotes(message: str, value: str) -> bool:
    """Whether ``value`` stands in ``message`` (a short token "short" is not in "shorter")."""
    return re.search(rf"(?<![A-Za-z0-9]){re.escape(value)}(?![A-Za-z0-9])", message) is not None


def _hidden(location: tuple[Any, ...], given: object, expansions: Expansions) -> list[str]:
    """What a refusal at ``location`` must not quote: a secret key's value, and what came
    from the environment into the refused value (``${VAR}`` is how secrets are kept out of
    the file). A section's refusal (``given`` a table) is made of this module's own words."""
    if isinstance(given, Mapping):
        return []
    secret = bool(location) and location[-1] in SECRET_KEYS
    hidden = [given] if secret and isinstance(given, str) else []
    hidden += [
        value
        for where, values in expansions.items()
        if where[: len(location)] == location
        for value in values
    ]
    return [value for value in hidden if value]
