"""A ``Retry-After`` header is read one way, for the upstream and for the sinks alike."""

from __future__ import annotations

import pytest

from tracker.text import MAX_RETRY_AFTER, retry_after


class TestRetryAfter:
    """Seconds within a day are believed; anything else is no answer."""

    @pytest.mark.parametrize(
        ("value", "seconds"),
        [("0", 0.0), ("30", 30.0), ("1.5", 1.5), (" 7 ", 7.0), (str(MAX_RETRY_AFTER), 86400.0)],
    )
    def test_seconds_are_taken(self, value: str, seconds: float) -> None:
        """A number of seconds from zero to a day is taken as it is."""
        assert retry_after(value) == seconds

    @pytest.mark.parametrize(
        "value",
        [
            None,
            "",
            "soon",
            "-1",
            "86401",
            "1e12",
            "nan",
            "inf",
            "Wed, 21 Oct 2026 07:28:00 GMT",
        ],
    )
    def test_anything_else_is_none(self, value: str | None) -> None:
        """Absent, negative, over a day, not a number or an HTTP date: ``None``."""
        assert retry_after(value) is None
