"""What the working parts report as they work: polls, upstream requests, transitions, deliveries.

Pure: the parts call a :class:`Telemetry`; ``tracker.web.metrics`` turns the calls into
Prometheus counters, and :data:`SILENT` drops them where nothing is exported (``tracker poll``).
Every call sits on a hot path, so an implementation does no I/O and allocates little.
"""

from __future__ import annotations

from typing import Final, Protocol


class PollResult:
    """The ``result`` of one poll."""

    #: The answer equals the last stored one: bookkeeping only.
    UNCHANGED: Final = "unchanged"
    #: The answer differs from the last stored one (or is the first): a snapshot is stored.
    CHANGED: Final = "changed"
    #: No usable answer: an upstream failure, or the tracker's own.
    FAILED: Final = "failed"


#: ``code`` of an upstream request that got no answer (timeout, connection failed).
NO_ANSWER: Final = "error"


class Telemetry(Protocol):
    """Receives one call per event; it must return at once and never raise."""

    def polled(self, result: str) -> None:
        """One poll ended with ``result`` (a :class:`PollResult` value)."""
        ...

    def requested(self, code: int | None, seconds: float) -> None:
        """One upstream request ended: its HTTP status (``None``: no answer) and duration."""
        ...

    def started_late(self, seconds: float) -> None:
        """A poll's request started ``seconds`` after the order came due."""
        ...

    def transitioned(self, from_status: str, to_status: str) -> None:
        """One transition was stored."""
        ...

    def delivered(self, sink: str, result: str) -> None:
        """One delivery attempt ended: ``delivered``, ``failed`` (retried later) or ``dead``."""
        ...


class Silent:
    """Telemetry that goes nowhere."""

    def polled(self, result: str) -> None:
        """Dropped."""

    def requested(self, code: int | None, seconds: float) -> None:
        """Dropped."""

    def started_late(self, seconds: float) -> None:
        """Dropped."""

    def transitioned(self, from_status: str, to_status: str) -> None:
        """Dropped."""

    def delivered(self, sink: str, result: str) -> None:
        """Dropped."""


SILENT: Final[Telemetry] = Silent()
