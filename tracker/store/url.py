"""The database URL's shape, read as the store reads it, without connecting (``config check``)."""

from __future__ import annotations

import re

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from tracker.errors import ConfigError
from tracker.store.sql import where

_USAGE = "use sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
#: What a host name never holds: a user name or password with an unencoded ``@``, ``/``, ``?``
#: or ``#`` moves part of itself into the host (SQLAlchemy splits at the last ``@``).
_NOT_IN_A_HOST = re.compile(r"[@/?#\s]")


def database_shape(url: str) -> str:
    """Where ``url`` points, never with its password.

    A URL the store could not use as meant is a :class:`ConfigError` that quotes none of it:
    it may hold a password.
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise ConfigError(f"database.url: cannot be read as a URL; {_USAGE}") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database in {None, "", ":memory:"}:
            raise ConfigError(f"database.url: names no database file; {_USAGE}")
        return where(parsed)
    if not parsed.database:
        raise ConfigError(f"database.url: names no database; {_USAGE}")
    if parsed.host is not None and _NOT_IN_A_HOST.search(parsed.host):
        raise ConfigError(
            "database.url: the host part is not a host name; percent-encode @ : / ? # in the "
            f"user name and password (%40 %3A %2F %3F %23); {_USAGE}"
        )
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise ConfigError(f"database.url: port {parsed.port} is not between 1 and 65535")
    return f"postgresql at {where(parsed)}"
