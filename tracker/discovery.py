"""Reading the organisation's list pages: the one list-page loop, and discovery sweeps.

:func:`list_pages` follows a listing's cursors for sweeps by customer (``tracker.poller``) and
for discovery alike. :class:`Discovery` reads the organisation's whole list, newest first, when
hundreds of orders never answered are due: their customer is not known, so no sweep by customer
can find them, and a page of 100 can answer for up to 100 of them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Protocol

import structlog

from tracker.errors import (
    AuthFailed,
    MalformedAnswer,
    OrderNotFound,
    RequestRejected,
    UpstreamError,
)
from tracker.model import Claim, MeterOrder
from tracker.store import PollOutcome, Store
from tracker.supervision import HeldClaims
from tracker.sweep import SweepPlanner
from tracker.upstream import ListPage

log = structlog.get_logger("tracker.discovery")

#: What a list request may meet that means "not this endpoint": polls by id do instead.
LIST_REFUSED = (OrderNotFound, RequestRejected, AuthFailed)
#: Due orders of unknown customer that make reading the organisation's whole list worth it.
DISCOVERY_MIN = 200
#: Pages a discovery sweep reads between two looks at its yield.
DISCOVERY_TRIAL = 10
#: After a discovery sweep found too few watched orders per page, polls by id for this long.
DISCOVERY_PAUSE = timedelta(hours=1)
#: After a discovery sweep read the whole list, the next one waits this long: watched orders
#: it did not show (unknown to the upstream, or of another organisation) are polled by id.
DISCOVERY_AGAIN = timedelta(minutes=10)
#: After a discovery sweep failed on the upstream, the next one waits this long.
DISCOVERY_RETRY = timedelta(minutes=1)

ReadPage = Callable[[Mapping[str, str], str | None], Awaitable[ListPage]]


async def list_pages(
    read: ReadPage,
    filters: Mapping[str, str],
    *,
    max_pages: int | None = None,
    start: str | None = None,
) -> AsyncGenerator[ListPage, None]:
    """The pages of one listing, following their cursors until the last (from the page of
    the cursor ``start``, if given).

    A page whose cursor leads back to a page already read, or one past ``max_pages``, raises
    :class:`MalformedAnswer` before it is yielded: nothing of it is applied.
    """
    cursor = start
    cursors: set[str] = set()
    pages = 0
    while True:
        page = await read(filters, cursor)
        pages += 1
        if page.next_page is None:
            yield page
            return
        if page.next_page in cursors:
            raise MalformedAnswer(
                f"list page {pages} repeats an earlier cursor", request_id=page.request_id
            )
        if max_pages is not None and pages >= max_pages:
            raise MalformedAnswer(f"the pages go on past {max_pages}", request_id=page.request_id)
        cursors.add(cursor := page.next_page)
        yield page


def claim_key(claim: Claim) -> str:
    """What a claimed order is held by: its id."""
    return claim.order_id


class Lister(Protocol):
    """What discovery needs of the poller: read a page, decide an item as a poll, count it."""

    async def page(self, filters: Mapping[str, str], cursor: str | None) -> ListPage:
        """One list page; a 429 is waited out as for a poll."""

    def apply(self, claim: Claim, order: MeterOrder) -> PollOutcome:
        """What to store for ``order``, listed for ``claim``."""

    def count(self, outcome: PollOutcome) -> None:
        """Report one outcome to telemetry as a poll."""


class Discovery:
    """Reads the organisation's whole list when orders of unknown customer pile up.

    One daemon of a fleet does it (the oldest); the others poll by id meanwhile, and a lease
    keeps each order to one. It stops early, and leaves the rest to polls by id for
    :data:`DISCOVERY_PAUSE`, when its pages hold fewer watched orders than pages read.
    """

    def __init__(
        self,
        *,
        lister: Lister,
        store: Store,
        claims: HeldClaims[str],
        record: Callable[[PollOutcome], None],
        planner: SweepPlanner,
        clock: Callable[[], datetime],
        oldest: Callable[[], bool],
        stop: asyncio.Event,
        lookahead: timedelta,
    ) -> None:
        self._lister = lister
        self._store = store
        self._claims = claims
        self._record = record
        self._planner = planner
        self._clock = clock
        self._oldest = oldest
        self._stop = stop
        #: How early an item may refresh its order (see ``tracker.poll_queue.lookahead``).
        self.lookahead = lookahead
        #: Whether the last tick found as many due orders of unknown customer as it could take
        #: (at the start: maybe); only then is the count that may start a discovery read.
        self.backlog = True
        self._after = datetime.min.replace(tzinfo=UTC)
        self._task: asyncio.Task[None] | None = None
        #: List pages read.
        self.pages = 0

    async def running(self, now: datetime) -> bool:
        """Whether a discovery sweep runs (started now if it is worth it): then polls by id
        leave the orders whose customer is not known to it."""
        if self._task is not None and not self._task.done():
            return True
        planner = self._planner
        if (
            planner.mode == "ids"
            or not planner.listing
            or not self._oldest()
            or now < self._after
            or not self.backlog
            or await self._store.polls.unkeyed_due(now=now, limit=DISCOVERY_MIN) < DISCOVERY_MIN
        ):
            return False
        self._task = asyncio.create_task(self._discover())
        return True

    async def cancel(self) -> None:
        """Stop a discovery sweep that runs; what it applied is recorded, the rest is polled."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _discover(self) -> None:
        """Read the organisation's list, applying each item whose order is watched and due
        (within the jitter) as a poll; stop early when pages hold too few watched orders."""
        read = found = 0
        log.info("discovery_started")
        try:
            pages = list_pages(self._lister.page, {})
            async with contextlib.aclosing(pages):
                async for page in pages:
                    read += 1
                    found += await self._apply(page)
                    if self._stop.is_set() or await self._enough(page, read, found):
                        break
        except LIST_REFUSED as exc:
            log.warning("list_unavailable", reason=exc.reason, request_id=exc.request_id)
            self._planner.unavailable()
        except MalformedAnswer as exc:
            log.warning("list_page_malformed", reason=exc.reason, request_id=exc.request_id)
            self._after = self._clock() + DISCOVERY_RETRY
        except UpstreamError as exc:
            log.warning("discovery_failed", reason=exc.reason, request_id=exc.request_id)
            self._after = self._clock() + DISCOVERY_RETRY
        except Exception:
            log.exception("discovery_crashed")
            self._after = self._clock() + DISCOVERY_PAUSE
        log.info("discovery_ended", pages=read, found=found)

    async def _enough(self, page: ListPage, read: int, found: int) -> bool:
        """Whether to stop after ``read`` pages that held ``found`` watched, due orders."""
        now = self._clock()
        if page.next_page is None:  # read to the end: what it did not show is polled by id
            self._after = now + DISCOVERY_AGAIN
            return True
        if read % DISCOVERY_TRIAL == 0:
            if found < read:  # less than one watched order per page: ids cost less
                self._after = now + DISCOVERY_PAUSE
                return True
            if not await self._store.polls.unkeyed_due(now=now, limit=1):
                return True
        return False

    async def _apply(self, page: ListPage) -> int:
        """Apply the page's items whose orders are watched and due; how many there were."""
        listed = {order.id: order for order in page.items}
        now = self._clock()
        claims = await self._store.polls.claim_listed(
            list(listed),
            now=now,
            until=now + self.lookahead,
            lease_until=self._claims.lease_until(),
        )
        for claim in self._claims.take_fresh(claims, claim_key):
            outcome = self._lister.apply(claim, listed[claim.order_id])
            self._lister.count(outcome)
            self._record(outcome)
        self.pages += 1
        return len(claims)
