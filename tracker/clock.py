"""The wall clock, the one place the tracker reads it (tests move it with time-machine)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

#: What reads the time: :func:`utc_now`, or a clock a test holds.
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The wall clock, aware UTC."""
    return datetime.now(UTC)
