"""TOML file -> validated, frozen settings. The only module that reads files and the environment."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from tracker.config_base import KNOWN_STATUS_NAMES, Duration, Section, parse_duration, url_shown
from tracker.config_sinks import SINK_TYPES, MessageSinkSettings, SinkSettings
from tracker.errors import ConfigError, InvalidOrderId
from tracker.lifecycle import is_known
from tracker.model import validate_order_id
from tracker.schedule import PollingPolicy

DEFAULT_PATH = Path("tracker.toml")
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
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


class UpstreamSettings(Section):
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
            raise ValueError(f"{url_shown(value)!r} is not an http(s) URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_kind_of_auth(self) -> UpstreamSettings:
        if self.token is not None and (self.client_id or self.client_secret):
            raise ValueError("set either token or client_id and client_secret, not both")
        if (self.client_id is None) != (self.client_secret is None):
            raise ValueError("client_id and client_secret go together: set both")
        return self


class DatabaseSettings(Section):
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


class PollingSettings(Section):
    """``[polling]``: how often orders are polled, and when final ones are retired."""

    interval: Duration = timedelta(hours=1)
    jitter: Duration | None = None
    intervals: dict[str, Duration] = Field(default_factory=dict)
    final_grace: Duration = timedelta(days=7)
    #: How due orders are learned: ``auto`` (list pages when they cost fewer requests),
    #: ``list`` (pages whenever an order's customer is known) or ``ids`` (one request each).
    sweep: Literal["auto", "list", "ids"] = "auto"
    #: With a ``[watch]`` rule: how often to sweep the orders updated since the last sweep
    #: (and the new ones); zero turns change sweeps off (new orders are still looked for).
    changes_every: Duration = timedelta(minutes=1)
    #: Full passes at this interval once change sweeps are trusted.
    reconcile: Duration = timedelta(hours=24)
    #: Full passes in a row that found nothing the change sweeps missed before they are
    #: trusted; 0 trusts them from the start (only for an upstream known to move updated_at).
    trust_after: int = Field(default=2, ge=0)

    @field_validator("intervals")
    @classmethod
    def _statuses(cls, value: dict[str, timedelta]) -> dict[str, timedelta]:
        for status in value:
            if not is_known(status):
                raise ValueError(f"unknown status {status!r}; known: {KNOWN_STATUS_NAMES}")
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


class WatchSettings(Section):
    """``[watch]``: order ids watched from the configuration, and rules that watch the orders
    of the organisation matching them (every one with ``all``)."""

    orders: tuple[str, ...] = ()
    all: bool = False
    customers: tuple[str, ...] = ()
    subscriptions: tuple[str, ...] = ()
    products: tuple[str, ...] = ()

    @property
    def rules(self) -> bool:
        """Whether any rule watches orders of the organisation."""
        return self.all or bool(self.customers or self.subscriptions or self.products)

    def matches(self, customer: str, subscription: str, product: str | None) -> bool:
        """Whether an order of these is watched by a rule."""
        return (
            self.all
            or customer in self.customers
            or subscription in self.subscriptions
            or (product is not None and product in self.products)
        )

    @field_validator("orders")
    @classmethod
    def _ids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for order_id in value:
            try:
                validate_order_id(order_id)
            except InvalidOrderId as exc:
                raise ValueError(str(exc)) from None
        return value


class DeliverySettings(Section):
    """``[delivery]``: how failed deliveries are retried."""

    backoff: tuple[Duration, ...] = tuple(
        parse_duration(d) for d in ("5s", "5m", "30m", "2h", "5h", "10h", "10h")
    )
    max_concurrency: int = Field(default=8, ge=1, le=256)
    timeout: Duration = timedelta(seconds=10)


class AlertSettings(Section):
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
                raise ValueError(f"unknown status {status!r}; known: {KNOWN_STATUS_NAMES}")
            if threshold <= timedelta(0):
                raise ValueError(f"the threshold of {status!r} must be longer than zero")
        return value


class LogSettings(Section):
    """``[log]``: format and level of the structured log."""

    format: Literal["json", "console"] | None = None
    level: Literal["debug", "info", "warning", "error"] = "info"


class SmtpSettings(Section):
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


class HttpUser(Section):
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


class HttpSettings(Section):
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
                f"{url_shown(value)!r} is not an http(s) URL without query, "
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


class Settings(Section):
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
