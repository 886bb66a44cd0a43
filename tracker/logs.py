"""structlog setup: JSON or console lines with stable snake_case event names."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

from tracker.config import LogSettings
from tracker.text import printable

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _escaped(
    _logger: object, _name: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """Text from outside (a status, a receiver's answer) cannot drive the terminal."""
    for key, value in event.items():
        if isinstance(value, str):
            # A traceback keeps its lines; everything else is escaped whole.
            event[key] = "\n".join(map(printable, value.split("\n")))
    return event


def configure(settings: LogSettings, *, stream: TextIO | None = None) -> None:
    """Send log lines to ``stream`` (stdout by default) in the configured format and level."""
    out = stream if stream is not None else sys.stdout
    fmt = settings.format or ("console" if out.isatty() else "json")
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=out.isatty())
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    # JSON escapes control characters itself; console lines need it done for them.
    escape = [_escaped] if fmt == "console" else []
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            *escape,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[settings.level]),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=True,
    )
    # Libraries that use the standard library (APScheduler) speak only when something is wrong.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, force=True)
    # A tick that finds the previous one still running is skipped by design (max_instances=1);
    # APScheduler calls that a warning, which would only be noise under load.
    logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)
