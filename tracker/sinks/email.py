"""E-mail: one multipart (text and HTML) message per event, through aiosmtplib."""

from __future__ import annotations

import asyncio
import email.utils
import ssl
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import jinja2

from tracker.config import SmtpSettings
from tracker.config_sinks import EmailSinkSettings
from tracker.errors import ConfigError
from tracker.model import DueDelivery, SendResult
from tracker.sinks.render import (
    alert_context,
    alert_kind,
    digest_context,
    is_digest,
    message_context,
    sample_alert,
    sample_digest,
    test_event,
)
from tracker.sinks.templating import compiled, environment
from tracker.text import one_line

_TEMPLATES = ("subject.txt", "body.txt", "body.html")
#: Alerts (stuck, failing, recovered) have templates of their own, with these names.
_ALERT_TEMPLATES = ("alert.subject.txt", "alert.body.txt", "alert.body.html")
#: A sink's daily digest (``digest = "08:00 Europe/Berlin"``) has its own, too.
_DIGEST_TEMPLATES = ("digest.subject.txt", "digest.body.txt", "digest.body.html")


def _templates(settings: EmailSinkSettings) -> dict[str, jinja2.Template]:
    """Compile the sink's templates and render each once, so a broken one fails at start."""
    jinja = environment(str(settings.templates) if settings.templates else None)
    now = datetime.now(UTC)
    samples = {
        _TEMPLATES: message_context(test_event("evt_sample", now)),
        _ALERT_TEMPLATES: alert_context(sample_alert(now)),
        _DIGEST_TEMPLATES: digest_context(sample_digest(now)),
    }
    found: dict[str, jinja2.Template] = {}
    for names, sample in samples.items():
        for name in names:
            found[name] = compiled(jinja, settings.name, name, sample)
    return found


def tls_context(smtp: SmtpSettings) -> ssl.SSLContext | None:
    """The context that verifies the relay's certificate (against ``ca_file`` when set)."""
    if not smtp.encrypted:
        return None
    cafile = str(smtp.ca_file) if smtp.ca_file is not None else None
    try:
        return ssl.create_default_context(cafile=cafile)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"smtp.ca_file: {cafile} holds no usable certificate ({exc.reason}); "
            "give the PEM file of the relay's CA"
        ) from None


def _context(payload: str) -> tuple[str, dict[str, Any]]:
    """The prefix of the templates a stored body is rendered with, and what they see."""
    if is_digest(payload):
        return "digest.", digest_context(payload)
    if alert_kind(payload) is not None:
        return "alert.", alert_context(payload)
    return "", message_context(payload)


class EmailSink:
    """Sends each event as one message to the sink's ``to`` addresses.

    One attempt is one SMTP session, and the whole session (connect, TLS, login, every reply)
    ends within ``deadline`` seconds: a server that answers each line just inside the per-reply
    timeout cannot hold a delivery longer.
    """

    def __init__(
        self,
        settings: EmailSinkSettings,
        smtp: SmtpSettings,
        *,
        deadline: float,
        context: ssl.SSLContext | None = None,
    ) -> None:
        self.name = settings.name
        self._to = settings.to
        self._smtp = smtp
        self._deadline = deadline
        self._context = context
        self._templates = _templates(settings)

    def message(self, delivery: DueDelivery) -> EmailMessage:
        """The message for a delivery; the same event always yields the same Message-ID."""
        prefix, context = _context(delivery.payload)
        message = EmailMessage()
        message["Subject"] = one_line(self._templates[f"{prefix}subject.txt"].render(context), 300)
        message["From"] = self._smtp.sender
        message["To"] = ", ".join(self._to)
        message["Message-ID"] = f"<{delivery.event_id}.{self.name}@meter-order-tracker>"
        message["Date"] = email.utils.formatdate(usegmt=True)
        if "order_id" in context:  # a digest is about many orders
            message["X-Meter-Order"] = one_line(context["order_id"])
        message.set_content(self._templates[f"{prefix}body.txt"].render(context))
        message.add_alternative(
            self._templates[f"{prefix}body.html"].render(context), subtype="html"
        )
        return message

    async def send(self, delivery: DueDelivery) -> SendResult:
        """Hand the message to the SMTP server once, within the deadline."""
        smtp = self._smtp
        message = self.message(delivery)
        try:
            async with asyncio.timeout(self._deadline):
                errors, _answer = await aiosmtplib.send(
                    message,
                    hostname=smtp.host,
                    port=smtp.port,
                    use_tls=smtp.tls,
                    start_tls=smtp.starttls,
                    tls_context=self._context,
                    username=smtp.username,
                    password=smtp.password.get_secret_value() if smtp.password else None,
                    timeout=self._deadline,
                )
        except TimeoutError:
            return SendResult(ok=False, error=f"timed out after {self._deadline:g} s")
        except aiosmtplib.SMTPResponseException as exc:
            return SendResult(
                ok=False, status=exc.code, error=f"SMTP {exc.code}: {one_line(exc.message)}"
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            return SendResult(ok=False, error=f"SMTP failed: {type(exc).__name__}: {one_line(exc)}")
        if errors:
            refused = ", ".join(sorted(errors))
            return SendResult(ok=False, error=f"SMTP refused recipients: {one_line(refused)}")
        return SendResult(ok=True, status=250)
