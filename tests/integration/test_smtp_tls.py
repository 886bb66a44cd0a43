"""E-mail over TLS against real local SMTP servers, with certificates made by trustme."""

from __future__ import annotations

import asyncio
import email
import email.message
import email.policy
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
import trustme
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.support import make_settings, settings_mapping
from tracker.config import Settings, from_mapping
from tracker.errors import ConfigError
from tracker.model import DueDelivery, SendResult
from tracker.sinks import render
from tracker.sinks.registry import build_sinks

#: make_settings needs an upstream; these tests never contact it.
UPSTREAM = "http://127.0.0.1:1"
USER = "tracker-relay"
PASSWORD = "pw-7Hq2-never-logged"
TO = "ops@example.com"
MAIL_SINK = {"name": "mail", "type": "email", "to": [TO], "on": ["*"]}
#: Whatever else goes wrong, no await in these tests may take longer than this (a bound on a
#: hang: a loaded machine may take seconds over a TLS session).
LIMIT = 30.0


class Mailbox:
    """An aiosmtpd handler: keeps each message, the logins, and whether each ran over TLS.

    With ``delay``, every hook (EHLO, MAIL, RCPT, DATA) waits that long before answering.
    """

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.messages: list[email.message.EmailMessage] = []
        self.over_tls: list[bool] = []
        self.logins: list[str] = []
        self.commands: list[str] = []

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        """The relay's one account: ``USER`` with ``PASSWORD``."""
        accepted = (
            isinstance(data, LoginPassword)
            and data.login == USER.encode()
            and data.password == PASSWORD.encode()
        )
        if accepted:
            self.logins.append(USER)
        return AuthResult(success=accepted)

    async def _hook(self, command: str) -> None:
        self.commands.append(command)
        if self.delay:
            await asyncio.sleep(self.delay)

    async def handle_EHLO(  # noqa: N802 - aiosmtpd's name
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        await self._hook("EHLO")
        session.host_name = hostname
        return responses

    async def handle_MAIL(  # noqa: N802 - aiosmtpd's name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        await self._hook("MAIL")
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        await self._hook("RCPT")
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        await self._hook("DATA")
        message = email.message_from_bytes(
            envelope.original_content or b"", policy=email.policy.default
        )
        assert isinstance(message, email.message.EmailMessage)
        self.messages.append(message)
        transport = server.transport
        self.over_tls.append(
            transport is not None and transport.get_extra_info("ssl_object") is not None
        )
        return "250 OK"


@asynccontextmanager
async def smtp_server(
    mailbox: Mailbox,
    *,
    starttls: ssl.SSLContext | None = None,
    implicit_tls: ssl.SSLContext | None = None,
    auth_required: bool = False,
) -> AsyncIterator[int]:
    """A real aiosmtpd server on 127.0.0.1; yields its port.

    ``starttls``: the server offers and requires STARTTLS, and offers AUTH only over TLS.
    ``implicit_tls``: the listening socket speaks TLS from the first byte (AUTH offered, as
    aiosmtpd cannot tell such a session is encrypted).
    """
    loop = asyncio.get_running_loop()

    def session() -> SMTP:
        return SMTP(
            mailbox,
            hostname="mail.test",
            tls_context=starttls,
            require_starttls=starttls is not None,
            authenticator=mailbox.authenticate,
            auth_required=auth_required,
            auth_require_tls=implicit_tls is None,
            timeout=LIMIT,
        )

    server = await loop.create_server(session, host="127.0.0.1", port=0, ssl=implicit_tls)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), LIMIT)


@pytest.fixture
def ca() -> trustme.CA:
    """A throwaway certificate authority, in no system trust store."""
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    """The test CA's certificate as a PEM file, for ``[smtp] ca_file``."""
    path = tmp_path / "relay-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def server_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    """A server-side TLS context presenting a certificate for ``names``, issued by ``ca``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    return context


@pytest.fixture
def relay_context(ca: trustme.CA) -> ssl.SSLContext:
    """The relay's certificate, valid for the name and address the tracker connects to."""
    return server_context(ca, "localhost", "127.0.0.1")


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """The HTTP client build_sinks shares between webhook sinks (unused by e-mail)."""
    async with httpx.AsyncClient() as client:
        yield client


def mail_settings(
    tmp_path: Path, smtp: dict[str, Any], delivery: dict[str, Any] | None = None
) -> Settings:
    """Settings with one e-mail sink named ``mail`` sending through ``smtp``."""
    sections: dict[str, Any] = {"smtp": {"host": "127.0.0.1", **smtp}, "sinks": [MAIL_SINK]}
    if delivery is not None:
        sections["delivery"] = delivery
    return make_settings(tmp_path, UPSTREAM, **sections)


async def send_once(settings: Settings, http: httpx.AsyncClient) -> SendResult:
    """Build the sinks as the tracker does and send one test event through ``mail``."""
    sink = build_sinks(settings, http)["mail"]
    delivery = DueDelivery(
        id=1,
        event_id="evt_tls_0001",
        sink="mail",
        attempts=0,
        payload=render.test_event("evt_tls_0001", datetime.now(UTC)),
    )
    return await asyncio.wait_for(sink.send(delivery), LIMIT)


class TestStarttls:
    """A relay that requires STARTTLS and AUTH over TLS gets the message and the login."""

    async def test_delivers_after_starttls_and_login(
        self, tmp_path: Path, http: httpx.AsyncClient, ca_file: Path, relay_context: ssl.SSLContext
    ) -> None:
        """With STARTTLS and a CA file, the login and the message go over TLS."""
        mailbox = Mailbox()
        async with smtp_server(mailbox, starttls=relay_context, auth_required=True) as port:
            settings = mail_settings(
                tmp_path,
                {
                    "port": port,
                    "starttls": True,
                    "require_tls": True,
                    "username": USER,
                    "password": PASSWORD,
                    "ca_file": str(ca_file),
                },
            )
            result = await send_once(settings, http)
        assert result.ok, result.error
        assert result.status == 250
        assert mailbox.logins == [USER]
        assert mailbox.over_tls == [True]
        [message] = mailbox.messages
        assert message["To"] == TO
        assert message["Message-ID"] == "<evt_tls_0001.mail@meter-order-tracker>"

    async def test_server_refuses_a_plain_session(
        self, tmp_path: Path, http: httpx.AsyncClient, relay_context: ssl.SSLContext
    ) -> None:
        """A relay that requires STARTTLS refuses a plain session with 530 and gets nothing."""
        mailbox = Mailbox()
        async with smtp_server(mailbox, starttls=relay_context, auth_required=True) as port:
            result = await send_once(mail_settings(tmp_path, {"port": port}), http)
        assert not result.ok
        assert result.status == 530  # "Must issue a STARTTLS command first"
        assert mailbox.messages == []


class TestImplicitTls:
    """With ``tls = true`` the session is TLS from the first byte and delivers."""

    async def test_delivers_over_implicit_tls(
        self, tmp_path: Path, http: httpx.AsyncClient, ca_file: Path, relay_context: ssl.SSLContext
    ) -> None:
        """With implicit TLS, the login and the message go over TLS."""
        mailbox = Mailbox()
        async with smtp_server(mailbox, implicit_tls=relay_context) as port:
            settings = mail_settings(
                tmp_path,
                {
                    "port": port,
                    "tls": True,
                    "require_tls": True,
                    "username": USER,
                    "password": PASSWORD,
                    "ca_file": str(ca_file),
                },
            )
            result = await send_once(settings, http)
        assert result.ok, result.error
        assert mailbox.logins == [USER]
        assert mailbox.over_tls == [True]
        assert len(mailbox.messages) == 1


MODES = [pytest.param({"starttls": True}, id="starttls"), pytest.param({"tls": True}, id="tls")]


class TestRefusedCertificates:
    """A relay certificate that does not verify ends the attempt before any message is sent."""

    @staticmethod
    async def refused(
        tmp_path: Path, http: httpx.AsyncClient, context: ssl.SSLContext, smtp: dict[str, Any]
    ) -> tuple[SendResult, Mailbox]:
        mailbox = Mailbox()
        implicit = smtp.get("tls", False)
        async with smtp_server(
            mailbox,
            starttls=None if implicit else context,
            implicit_tls=context if implicit else None,
        ) as port:
            settings = mail_settings(
                tmp_path, {"port": port, "username": USER, "password": PASSWORD, **smtp}
            )
            result = await send_once(settings, http)
        return result, mailbox

    @pytest.mark.parametrize("mode", MODES)
    async def test_certificate_for_another_host(
        self,
        tmp_path: Path,
        http: httpx.AsyncClient,
        ca: trustme.CA,
        ca_file: Path,
        mode: dict[str, Any],
    ) -> None:
        """A certificate for another host fails verification before login or message."""
        other = server_context(ca, "mail.example.org")
        result, mailbox = await self.refused(
            tmp_path, http, other, {**mode, "ca_file": str(ca_file)}
        )
        assert not result.ok
        assert result.error is not None
        assert "certificate verify failed" in result.error.lower(), result.error
        assert mailbox.messages == []
        assert mailbox.logins == []

    @pytest.mark.parametrize("mode", MODES)
    async def test_ca_not_configured(
        self,
        tmp_path: Path,
        http: httpx.AsyncClient,
        relay_context: ssl.SSLContext,
        mode: dict[str, Any],
    ) -> None:
        """A certificate from a CA not configured fails verification before login or message."""
        result, mailbox = await self.refused(tmp_path, http, relay_context, mode)
        assert not result.ok
        assert result.error is not None
        assert "certificate verify failed" in result.error.lower(), result.error
        assert mailbox.messages == []
        assert mailbox.logins == []


class TestTlsConfiguration:
    """Settings that cannot give the promised TLS are refused when the configuration loads."""

    def test_require_tls_without_tls(self, tmp_path: Path) -> None:
        """require_tls without STARTTLS or TLS is refused naming smtp.require_tls."""
        mapping = settings_mapping(tmp_path, UPSTREAM, smtp={"require_tls": True})
        with pytest.raises(ConfigError) as raised:
            from_mapping(mapping, {}, origin="test")
        message = str(raised.value)
        assert "smtp" in message
        assert "require_tls" in message

    @pytest.mark.parametrize("mode", MODES)
    def test_require_tls_with_tls(self, tmp_path: Path, mode: dict[str, Any]) -> None:
        """require_tls with STARTTLS or TLS loads."""
        mapping = settings_mapping(tmp_path, UPSTREAM, smtp={"require_tls": True, **mode})
        assert from_mapping(mapping, {}, origin="test").smtp.require_tls

    def test_missing_ca_file(self, tmp_path: Path) -> None:
        """A CA file that does not exist is refused naming smtp.ca_file."""
        missing = tmp_path / "no-such-ca.pem"
        mapping = settings_mapping(
            tmp_path, UPSTREAM, smtp={"starttls": True, "ca_file": str(missing)}
        )
        with pytest.raises(ConfigError) as raised:
            from_mapping(mapping, {}, origin="test")
        assert "smtp.ca_file" in str(raised.value)

    async def test_ca_file_without_a_certificate(
        self, tmp_path: Path, http: httpx.AsyncClient
    ) -> None:
        """A CA file holding no certificate is refused when the sinks are built."""
        garbage = tmp_path / "not-a-ca.pem"
        garbage.write_text("not a certificate\n")
        settings = make_settings(
            tmp_path,
            UPSTREAM,
            smtp={"starttls": True, "ca_file": str(garbage)},
            sinks=[{"name": "mail", "type": "email", "to": ["a@example.com"]}],
        )
        with pytest.raises(ConfigError, match=r"smtp\.ca_file: .* holds no usable certificate"):
            build_sinks(settings, http)


class TestCredentialsWithoutTls:
    """Credentials on a plain session are warned about once, and the password is never logged."""

    async def test_warned_once(self, tmp_path: Path, http: httpx.AsyncClient) -> None:
        """Credentials without TLS are warned about once for all sinks, password unlogged."""
        settings = make_settings(
            tmp_path,
            UPSTREAM,
            smtp={"host": "127.0.0.1", "username": USER, "password": PASSWORD},
            sinks=[MAIL_SINK, {**MAIL_SINK, "name": "mail-2"}],
        )
        with structlog.testing.capture_logs() as entries:
            sinks = build_sinks(settings, http)
        assert set(sinks) == {"mail", "mail-2"}
        warnings = [e for e in entries if e["event"] == "smtp_credentials_without_tls"]
        assert len(warnings) == 1
        assert warnings[0]["log_level"] == "warning"
        assert PASSWORD not in repr(entries)

    @pytest.mark.parametrize("mode", MODES)
    async def test_not_warned_with_tls(
        self, tmp_path: Path, http: httpx.AsyncClient, mode: dict[str, Any]
    ) -> None:
        """Credentials over STARTTLS or TLS give no warning and never log the password."""
        settings = mail_settings(tmp_path, {"username": USER, "password": PASSWORD, **mode})
        with structlog.testing.capture_logs() as entries:
            build_sinks(settings, http)
        assert not [e for e in entries if e["event"] == "smtp_credentials_without_tls"]
        assert PASSWORD not in repr(entries)


class TestSlowServer:
    """The whole SMTP session ends at the deadline, though each reply arrives in time."""

    @pytest.mark.parametrize(
        ("smtp_timeout", "delivery_timeout"),
        [
            pytest.param(1, 1, id="smtp-1s"),
            pytest.param(10, 1, id="delivery-1s"),
            pytest.param(1, 10, id="smtp-1s-delivery-10s"),
        ],
    )
    async def test_times_out_at_the_deadline(
        self, tmp_path: Path, http: httpx.AsyncClient, smtp_timeout: int, delivery_timeout: int
    ) -> None:
        """A slow relay's session times out at the deadline, though each reply is in time."""
        mailbox = Mailbox(delay=0.7)
        async with smtp_server(mailbox) as port:
            settings = mail_settings(
                tmp_path,
                {"port": port, "timeout": smtp_timeout},
                delivery={"timeout": delivery_timeout},
            )
            result = await send_once(settings, http)
        assert not result.ok
        assert result.error == "timed out after 1 s"
        # The deadline, not the 0.7 s x 4 the relay would take: the session never got past
        # MAIL, whose reply comes 1.4 s in (after the deadline, however late it fires).
        assert "RCPT" not in mailbox.commands
        assert mailbox.messages == []
