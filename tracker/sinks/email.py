"""E-mail: one multipart (text and HTML) message per event, through aiosmtplib."""

from __future__ import annotations

import email.utils
from email.message import EmailMessage

import aiosmtplib
import jinja2

from tracker.config import EmailSinkSettings, SmtpSettings
from tracker.model import DueDelivery, SendResult
from tracker.sinks.render import message_context, one_line

_TEMPLATES = ("subject.txt", "body.txt", "body.html")


def _environment(overrides: str | None) -> jinja2.Environment:
    loaders: list[jinja2.BaseLoader] = []
    if overrides is not None:
        loaders.append(jinja2.FileSystemLoader(overrides))
    loaders.append(jinja2.PackageLoader("tracker", "templates"))
    return jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


class EmailSink:
    """Sends each event as one message to the sink's ``to`` addresses."""

    def __init__(self, settings: EmailSinkSettings, smtp: SmtpSettings) -> None:
        self.name = settings.name
        self._to = settings.to
        self._smtp = smtp
        environment = _environment(str(settings.templates) if settings.templates else None)
        self._templates = {name: environment.get_template(name) for name in _TEMPLATES}

    def message(self, delivery: DueDelivery) -> EmailMessage:
        """The message for a delivery; the same event always yields the same Message-ID."""
        context = message_context(delivery.payload)
        message = EmailMessage()
        message["Subject"] = one_line(self._templates["subject.txt"].render(context), 300)
        message["From"] = self._smtp.sender
        message["To"] = ", ".join(self._to)
        message["Message-ID"] = f"<{delivery.event_id}.{self.name}@meter-order-tracker>"
        message["Date"] = email.utils.formatdate(usegmt=True)
        message["X-Meter-Order"] = one_line(context["order_id"])
        message.set_content(self._templates["body.txt"].render(context))
        message.add_alternative(self._templates["body.html"].render(context), subtype="html")
        return message

    async def send(self, delivery: DueDelivery) -> SendResult:
        """Hand the message to the SMTP server once."""
        smtp = self._smtp
        try:
            errors, _answer = await aiosmtplib.send(
                self.message(delivery),
                hostname=smtp.host,
                port=smtp.port,
                use_tls=smtp.tls,
                start_tls=smtp.starttls,
                username=smtp.username,
                password=smtp.password.get_secret_value() if smtp.password else None,
                timeout=smtp.timeout.total_seconds(),
            )
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
