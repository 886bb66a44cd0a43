"""The wall clock, the one place the tracker reads it (tests move it with time-machine)."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    """The wall clock, aware UTC."""
    return datetime.now(UTC)
