"""What every section of the configuration shares: frozen models that refuse unknown keys,
durations written as ``"15m"``, the known status names for error messages."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict

from tracker.lifecycle import Status

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
#: The statuses, for an error that names an unknown one.
KNOWN_STATUS_NAMES = ", ".join(sorted(Status))


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


class Section(BaseModel):
    """A table of the file: its keys are all known (another is an error), its values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def url_shown(url: str) -> str:
    """``url`` as far as its host, without user or password: its path may hold a token too."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        scheme, rest = "", url
    host = rest.split("/", 1)[0].rpartition("@")[2]
    return f"{scheme}{separator}{host}" + ("/…" if "/" in rest else "")
