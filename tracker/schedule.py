"""When to poll an order next: per-status intervals, jitter, failure backoff and retirement.

Pure: standard library only, no I/O. Randomness comes from the ``random.Random`` passed in.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from tracker.lifecycle import is_final

#: How failures back an order off: (first wait, longest wait) per error kind.
#: ``None`` as the longest wait means "the order's normal interval".
_BACKOFF: Mapping[str, tuple[timedelta, timedelta | None]] = {
    "transient": (timedelta(seconds=30), None),
    "rate_limited": (timedelta(seconds=30), None),
    "malformed": (timedelta(minutes=5), None),
    # The tracker itself failed on this order (a bug); retrying at once would only fail again.
    "internal": (timedelta(minutes=5), None),
    "auth_failed": (timedelta(minutes=5), timedelta(hours=6)),
    "not_found": (timedelta(hours=1), timedelta(days=7)),
    "rejected": (timedelta(hours=1), timedelta(days=7)),
}
_SHORTEST = timedelta(seconds=1)


@dataclass(frozen=True, slots=True, kw_only=True)
class PollingPolicy:
    """The ``[polling]`` settings as a schedule."""

    interval: timedelta
    jitter: timedelta
    intervals: Mapping[str, timedelta] = field(default_factory=dict)
    final_grace: timedelta = timedelta(days=7)
    #: Set while change sweeps are trusted: every order is polled this often (full passes),
    #: whatever its status; a tenth of it is the jitter.
    reconcile: timedelta | None = None

    def interval_for(self, status: str | None) -> timedelta:
        """The time between two polls of an order in ``status``."""
        if self.reconcile is not None:
            return self.reconcile
        if status is None:
            return self.interval
        return self.intervals.get(status, self.interval)

    def next_poll(self, now: datetime, status: str | None, rng: random.Random) -> datetime:
        """When to poll an order next after a successful poll."""
        jitter = self.jitter if self.reconcile is None else self.reconcile / 10
        return now + self._jittered(self.interval_for(status), jitter, rng)

    def retry_at(  # noqa: PLR0917 - all five inputs shape the wait
        self,
        now: datetime,
        kind: str,
        failures: int,
        status: str | None,
        rng: random.Random,
        retry_after: float | None = None,
    ) -> datetime:
        """When to poll again after the ``failures``-th failure in a row of ``kind``.

        A 429 is about the budget, not the order: the order is due again right when the pause
        it set ends, however many came before.
        """
        if kind == "rate_limited":
            return now + max(timedelta(seconds=retry_after or 0), _SHORTEST)
        first, longest = _BACKOFF.get(kind, _BACKOFF["transient"])
        cap = max(longest if longest is not None else self.interval_for(status), first)
        wait = min(first * (1 << min(max(failures - 1, 0), 30)), cap)
        # Equal jitter: at least half the wait, so many failing orders do not retry in step.
        wait = wait / 2 + rng.random() * (wait / 2)
        if retry_after is not None:
            wait = max(wait, timedelta(seconds=retry_after))
        return now + max(wait, _SHORTEST)

    def final_since(self, previous: datetime | None, status: str, now: datetime) -> datetime | None:
        """Since when the order has been in a final status, or ``None`` if it is not in one."""
        if not is_final(status):
            return None
        return previous if previous is not None else now

    def should_retire(self, final_since: datetime | None, now: datetime) -> bool:
        """Whether a final order has been polled for long enough after it became final."""
        return final_since is not None and now - final_since >= self.final_grace

    @staticmethod
    def _jittered(interval: timedelta, jitter: timedelta, rng: random.Random) -> timedelta:
        offset = (rng.random() * 2 - 1) * jitter
        return max(interval + offset, _SHORTEST)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryPlan:
    """What to do with a delivery after an attempt."""

    state: str
    next_attempt_at: datetime


def plan_delivery(
    backoff: Sequence[timedelta],
    attempts: int,
    now: datetime,
    *,
    ok: bool,
    gone: bool = False,
    retry_after: float | None = None,
) -> DeliveryPlan:
    """After the ``attempts``-th attempt: delivered, retried after ``backoff``, or dead.

    ``backoff`` lists the waits between attempts, so a delivery gets ``len(backoff) + 1``
    attempts. A longer ``Retry-After`` from the receiver wins over the scheduled wait.
    """
    if ok:
        return DeliveryPlan(state="delivered", next_attempt_at=now)
    if gone or attempts > len(backoff):
        return DeliveryPlan(state="dead", next_attempt_at=now)
    wait = backoff[attempts - 1]
    if retry_after is not None:
        wait = max(wait, timedelta(seconds=retry_after))
    return DeliveryPlan(state="pending", next_attempt_at=now + wait)
