"""Handler messages that a page can say in its visitor's language.

A handler that words a problem or a notice with values (``status 'x' is not a known status``)
gives a :class:`Message`: it reads as the English text wherever a string goes (an error's
JSON, a log, a test), and keeps its msgid and values so that a page says it in German
(``_macros.html``'s ``say``). The msgids are extracted like the templates' (``Message`` is a
gettext keyword to ``tests/unit/test_i18n.py``), so each has an entry in the German catalog.
"""

from __future__ import annotations


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
