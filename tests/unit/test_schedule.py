"""When orders are polled next: intervals, jitter, backoff, retirement."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from tracker.schedule import PollingPolicy

NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)
POLICY = PollingPolicy(
    interval=timedelta(hours=1),
    jitter=timedelta(minutes=2),
    intervals={"installation_scheduled": timedelta(minutes=15)},
    final_grace=timedelta(days=7),
)


class TestNextPoll:
    """Successful polls come back after the status's interval, give or take the jitter."""

    def test_default_and_per_status_intervals_with_jitter(self) -> None:
        """The next poll comes after the default or per-status interval, within the jitter."""
        rng = random.Random(1)
        for _ in range(200):
            wait = POLICY.next_poll(NOW, "ordered", rng) - NOW
            assert timedelta(minutes=58) <= wait <= timedelta(minutes=62)
            wait = POLICY.next_poll(NOW, "installation_scheduled", rng) - NOW
            assert timedelta(minutes=13) <= wait <= timedelta(minutes=17)


class TestBackoff:
    """Failures back off exponentially, with jitter, within caps."""

    def test_transient_grows_and_is_capped_by_the_interval(self) -> None:
        """Transient failures back off exponentially, never beyond the status's interval."""
        rng = random.Random(2)
        waits = [POLICY.retry_at(NOW, "transient", n, "ordered", rng) - NOW for n in range(1, 12)]
        assert timedelta(seconds=15) <= waits[0] <= timedelta(seconds=30)
        assert timedelta(seconds=60) <= waits[2] <= timedelta(seconds=120)
        assert all(w <= timedelta(hours=1) for w in waits)
        assert waits[-1] >= timedelta(minutes=30)

    def test_not_found_is_not_polled_every_interval(self) -> None:
        """A not-found order backs off for hours, capped at a week."""
        rng = random.Random(3)
        third = POLICY.retry_at(NOW, "not_found", 3, "ordered", rng) - NOW
        assert third >= timedelta(hours=2)
        assert POLICY.retry_at(NOW, "not_found", 40, None, rng) - NOW <= timedelta(days=7)

    def test_retry_after_wins_when_longer(self) -> None:
        """A Retry-After longer than the backoff sets the retry time."""
        rng = random.Random(4)
        wait = POLICY.retry_at(NOW, "rate_limited", 1, "ordered", rng, retry_after=120) - NOW
        assert wait == timedelta(seconds=120)


class TestRetirement:
    """Final orders are polled for final_grace, then retired."""

    def test_final_since_and_retirement(self) -> None:
        """A final status starts the grace once, and the order retires when the grace ends."""
        assert POLICY.final_since(None, "ordered", NOW) is None
        assert POLICY.final_since(None, "activated", NOW) == NOW
        earlier = NOW - timedelta(days=3)
        assert POLICY.final_since(earlier, "cancelled", NOW) == earlier
        assert not POLICY.should_retire(earlier, NOW)
        assert POLICY.should_retire(NOW - timedelta(days=7), NOW)
        assert not POLICY.should_retire(None, NOW)
