"""Slowing down guessers, and logging floods as counts rather than one line each.

:class:`Throttle` keeps a small bucket of allowed failures per key (a client address): each
failed login, bearer token or webhook signature takes one, and they come back at a steady
rate. A key whose bucket is empty is answered 429 with ``Retry-After`` *before* its guess is
checked, so a brute force learns nothing more until the bucket refills, while a user who mistyped
a token twice never notices. :class:`Tally` logs the first of a run of like events at once and
the rest as one line with their count at the end of each interval. Pure: standard library and
structlog, the clock passed in.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

log = structlog.get_logger("tracker.web")

Clock = Callable[[], float]

#: Failures a client may make before it is slowed down: a person mistyping a token a few times
#: is never refused.
FREE_FAILURES = 5
#: Seconds for one failure to be forgiven: after the free ones, a guesser gets one try per this.
REFILL_SECONDS = 12.0
#: Keys (client addresses) remembered at once; the least recently seen are forgotten first, so
#: a crowd of addresses holds bounded memory (a forgotten key starts with a full bucket).
MAX_KEYS = 10_000
#: Seconds over which repeated events are counted into one log line.
TALLY_INTERVAL = 60.0
#: Distinct clients named in a tally's line, at most (the count covers all of them).
TALLY_CLIENTS = 20


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class Throttle:
    """Failures allowed per key: :data:`FREE_FAILURES`, one more every :data:`REFILL_SECONDS`."""

    def __init__(
        self,
        *,
        free: int = FREE_FAILURES,
        refill: float = REFILL_SECONDS,
        clock: Clock = time.monotonic,
        max_keys: int = MAX_KEYS,
    ) -> None:
        self._free = free
        self._refill = refill
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def _bucket(self, key: str) -> _Bucket:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(tokens=float(self._free), at=now)
            self._buckets[key] = bucket
            while len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(float(self._free), bucket.tokens + (now - bucket.at) / self._refill)
            bucket.at = now
        return bucket

    def wait(self, key: str) -> int | None:
        """Seconds ``key`` must wait before its next try is checked, or ``None`` if it may try."""
        bucket = self._bucket(key)
        if bucket.tokens >= 1:
            return None
        return max(1, math.ceil((1 - bucket.tokens) * self._refill))

    def failed(self, key: str) -> None:
        """Count one failure against ``key``."""
        bucket = self._bucket(key)
        bucket.tokens = max(0.0, bucket.tokens - 1)


class Tally:
    """One event logged at once, the like ones after it as one line per interval with a count.

    ``add`` logs the first event of a quiet spell with its fields; the events within the next
    :data:`TALLY_INTERVAL` seconds are counted, and logged as one line (``count``, the distinct
    ``clients``, at most :data:`TALLY_CLIENTS` of them named) when the interval ends.
    """

    def __init__(
        self, event: str, *, interval: float = TALLY_INTERVAL, level: str = "warning"
    ) -> None:
        self._event = event
        self._interval = interval
        self._level = level
        self._open = False
        self._count = 0
        self._clients: set[str] = set()
        self._more_clients = False
        self._fields: dict[str, Any] = {}
        self._timer: asyncio.TimerHandle | None = None

    def add(self, client: str | None = None, **fields: Any) -> None:
        """Count one event (from ``client``); the first of a quiet spell is logged at once."""
        if not self._open:
            self._open = True
            getattr(log, self._level)(self._event, client=client, **fields)
            self._timer = asyncio.get_running_loop().call_later(self._interval, self.flush)
            return
        self._count += 1
        self._fields = fields
        if client is not None:
            if len(self._clients) < TALLY_CLIENTS:
                self._clients.add(client)
            elif client not in self._clients:
                self._more_clients = True

    def flush(self) -> None:
        """Log the events counted since the first one, if any; the next one opens a new spell."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._count:
            getattr(log, self._level)(
                self._event,
                count=self._count,
                interval_s=self._interval,
                clients=sorted(self._clients) + (["..."] if self._more_clients else []),
                **self._fields,
            )
        self._open = False
        self._count = 0
        self._clients = set()
        self._more_clients = False
        self._fields = {}
