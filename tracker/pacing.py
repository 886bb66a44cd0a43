"""One pace for every request to the upstream: a rate budget, a concurrency cap and pauses."""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from tracker.errors import Paused


class Pacer:
    """Admits requests so that at most ``rate`` reach the upstream in any one-second window.

    A request counts against the window from the moment it is admitted until one window after
    its answer began to come back. The upstream sees it arrive somewhere in between (the bytes
    may leave late when the event loop is busy or a connection is being opened), so counting
    the whole span keeps the promise at the upstream's end too, bursts after an idle spell or a
    restart included. The span ends when the answer's head arrives (the upstream has surely
    counted the request by then), not when its body is read: an answer that drips for seconds
    costs one request of the budget, like any other. A rate that is not whole admits its whole
    part per second (8.5 admits 8: "at most that many start" in any one-second window); a
    rate below one becomes one request per ``1 / rate`` seconds. Admissions are also spread
    evenly, one every ``1 / rate`` seconds, so an upstream whose limiter is a leaky bucket
    never sees a burst above the rate (20 per second arrive 50 ms apart, not within one tick's
    few milliseconds). :meth:`pause` holds every
    request back, e.g. after a 429; a request that would wait more than ``patience`` seconds
    for a pause raises :class:`Paused` instead (one-shot commands; the daemon waits, its
    claims renewed).
    """

    def __init__(
        self,
        rate: float,
        concurrency: int,
        clock: Callable[[], float] | None = None,
        patience: float | None = None,
    ) -> None:
        self._rate = rate
        self._set_rate(rate)
        #: A larger share waiting to apply (see :meth:`share`): when, and the rate.
        self._raise: tuple[float, float] | None = None
        self._finished: deque[float] = deque()
        self._in_flight = 0
        self._slots = asyncio.Semaphore(concurrency)
        self._turn = asyncio.Lock()
        self._done = asyncio.Event()
        self._clock = clock or asyncio.get_running_loop().time
        self._paused_until = 0.0
        #: When the last request was admitted: the next one waits ``1 / rate`` after it.
        self._admitted_at = -math.inf
        self._patience = patience

    def _set_rate(self, rate: float) -> None:
        self._burst = max(1, math.floor(rate))
        self._window = max(1.0, self._burst / rate)

    @property
    def rate(self) -> float:
        """The requests per second this pacer admits now (its share of the budget)."""
        return self._burst / self._window

    def share(self, members: int, rank: int = 0) -> None:
        """Spend this member's share of the configured rate: daemons sharing one budget.

        The budget's whole requests are dealt out as whole shares that add up to it (40 among
        three: 14, 13 and 13, the larger ones to the lower ``rank``), so every share keeps the
        one-second rule and together they spend all of it. A budget smaller than the number of
        members is split evenly instead. A lower rate holds back the next admissions at once;
        the requests already counted keep counting until their window ends. A higher one (a
        daemon left) applies one window later, since the leaver's last requests still count.
        """
        members = max(members, 1)
        whole = math.floor(self._rate)
        if whole < members:
            rate = self._rate / members
        else:
            base, extra = divmod(whole, members)
            rate = base + (1 if rank < extra else 0)
        if rate > self.rate:
            # A daemon left: its last second's requests may still count at the upstream, and
            # it cannot say so any more. A larger share applies one window later.
            self._raise = (self._clock() + max(1.0, self._window), rate)
        else:
            self._raise = None
            self._set_rate(rate)

    @property
    def in_flight(self) -> int:
        """Requests admitted whose answer has not begun to come back."""
        return self._in_flight

    def paused_for(self) -> float:
        """Seconds the current pause still holds every request back (0 when none)."""
        return max(0.0, self._paused_until - self._clock())

    def pause(self, seconds: float) -> None:
        """Start no request for ``seconds`` from now (a longer pause already set stays)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[Callable[[], None]]:
        """Wait for a concurrency slot and for the budget, then hold the slot while in use.

        Yields ``answered``: call it when the answer's head arrives, so that the request's
        count in the budget ends then rather than when the slot is given back.
        """
        async with self._slots:
            await self._admit()
            counted = True

            def answered() -> None:
                nonlocal counted
                if counted:
                    counted = False
                    self._in_flight -= 1
                    self._finished.append(self._clock())
                    self._done.set()

            try:
                yield answered
            finally:
                answered()

    async def _admit(self) -> None:
        async with self._turn:
            while (wait := self._wait()) != 0:
                if wait is None:
                    self._done.clear()
                    await self._done.wait()
                    continue
                pause = self._paused_until - self._clock()
                if self._patience is not None and pause > self._patience:
                    raise Paused(
                        f"every request is paused for {pause:.0f} s more (after a 429 or refused "
                        "credentials); not waiting",
                        retry_after=pause,
                    )
                await asyncio.sleep(wait)
            self._in_flight += 1
            self._admitted_at = self._clock()

    def _wait(self) -> float | None:
        """Seconds to wait before the next admission; ``None``: until a request finishes."""
        now = self._clock()
        if self._raise is not None and now >= self._raise[0]:
            self._set_rate(self._raise[1])
            self._raise = None
        horizon = now - self._window
        while self._finished and self._finished[0] <= horizon:
            self._finished.popleft()
        pause = max(self._paused_until - now, self._admitted_at + self._window / self._burst - now)
        excess = self._in_flight + len(self._finished) - self._burst
        if excess < 0:
            return pause if pause > 0 else 0
        if excess >= len(self._finished):
            return None
        return max(pause, self._finished[excess] + self._window - now)
