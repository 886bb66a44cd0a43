"""Text from outside: made safe for a mail header or a terminal, or read as a header's value;
and :class:`Message`, words with values that a page can say in its visitor's language.

A handler or a view that words something with values (``status 'x' is not a known status``)
gives a :class:`Message`: it reads as the English text wherever a string goes (an error's JSON,
a log, a test, the CLI), and keeps its msgid and values so that a page says it in German
(``_macros.html``'s ``say``). The msgids are extracted like the templates' (``Message`` is a
gettext keyword to ``tests/unit/test_i18n.py``), so each has an entry in the German catalog.

Pure: standard library only, no I/O.
"""

from __future__ import annotations

import re
from datetime import date

#: What may not reach a mail header or a terminal: C0 and C1 control characters (U+0085, the
#: "next line", among them), DEL, the Unicode line and paragraph separators, and the invisible
#: direction overrides that make a value read differently from what it is.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]+")
#: The longest ``Retry-After`` believed, in seconds: a day. A longer one (or a typo's billions)
#: would stop the upstream's requests, or a sink's deliveries, for good.
MAX_RETRY_AFTER = 86400


def one_line(value: object, limit: int = 200) -> str:
    """A value made safe for a mail header: no line breaks of any kind, no control characters."""
    return _CONTROL.sub(" ", str(value)).strip()[:limit]


def printable(value: object) -> str:
    """A value made safe for a terminal: each control character shown as its escape (``\\x1b``)."""
    return _CONTROL.sub(lambda match: match.group().encode("unicode_escape").decode(), str(value))


def retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` header's seconds, or ``None`` when absent, not a number of seconds
    (an HTTP date is not taken), negative or over :data:`MAX_RETRY_AFTER`."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if 0 <= seconds <= MAX_RETRY_AFTER else None


def human(seconds_: float) -> str:
    """A duration for people: ``12d 4h``, ``3h 20m``, ``45s``."""
    whole = round(seconds_)
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def week_label(monday: date) -> str:
    """A week as ISO calendar week, e.g. ``2026-W48``."""
    year, number, _ = monday.isocalendar()
    return f"{year}-W{number:02d}"


class Message(str):
    """``msgid % values`` in English, its msgid and values kept for a translation."""

    msgid: str
    values: dict[str, object]

    def __new__(cls, msgid: str, /, **values: object) -> Message:
        """The message ``msgid`` (``%(name)s`` placeholders, ``%%`` only with values)."""
        message = super().__new__(cls, msgid % values if values else msgid)
        message.msgid = msgid
        message.values = values
        return message
