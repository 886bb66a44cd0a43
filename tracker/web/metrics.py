"""Prometheus metrics: counters of this process, gauges read from the database at scrape time.

Counters (polls, upstream requests, transitions, delivery attempts) count what this process
did; Prometheus sums them over the daemons. Gauges (the outbox, the watched orders, the last
successful poll) describe the one database every daemon shares, so they are read from it when
scraped, at most once per :data:`GAUGE_CACHE` seconds, and every daemon reports the same values
(take ``max`` across instances, not ``sum``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Iterable
from datetime import datetime

import structlog
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric

from tracker.clock import utc_now
from tracker.errors import clip, first_line
from tracker.lifecycle import Status, is_known
from tracker.model import STALE_AFTER, DeliveryState
from tracker.store import Board, Store
from tracker.telemetry import NO_ANSWER, PollResult
from tracker.trust import SweepState

log = structlog.get_logger("tracker.web")

#: Seconds a reading of the database's gauges is served again: several scrapers (or a scraper
#: and a person) cost one set of grouped queries, and a value is never older than this.
GAUGE_CACHE = 5.0
#: Seconds a scrape waits for the database: well within Prometheus's default scrape timeout
#: (10 s), so that a slow database yields the counters without gauges, not a failed scrape.
GAUGE_TIMEOUT = 3.0
#: Upstream requests take milliseconds to a timeout of seconds (10 s by default).
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Seconds a poll starts after its due time: fine below a second, where a paced daemon lives.
LATENESS_BUCKETS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 30.0, 120.0, 600.0)
#: What became of a provider webhook (``tracker_hints_total``): each appears, if at 0.
HINT_RESULTS = ("accepted", "ignored", "replayed", "refused")
#: The ``status`` label of a status outside the 14: what an upstream sends must not create
#: series without bound.
UNKNOWN_STATUS = "unknown"
#: The ``status`` label of an order that has not been answered yet.
NO_STATUS = "none"

#: The exposition's media type: the classic text format, which every Prometheus reads.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

# The library's switch (process-wide): a ``*_created`` series beside every counter doubles the
# series scraped, and no dashboard of ours reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]


def status_label(status: str | None) -> str:
    """One of the 14 statuses, ``unknown`` for any other, ``none`` before the first answer."""
    if status is None:
        return NO_STATUS
    return status if is_known(status) else UNKNOWN_STATUS


class Metrics:
    """The counters (fed as :class:`tracker.telemetry.Telemetry`) and the database's gauges.

    Each instance has its own registry, so tests and several apps in one process never
    collide. Labelled children are made once and kept: a poll costs one increment.
    """

    def __init__(
        self, *, cache: float = GAUGE_CACHE, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        polls = Counter("tracker_polls", "Polls by result.", ["result"], registry=self.registry)
        self._polls = {
            result: polls.labels(result=result)
            for result in (PollResult.UNCHANGED, PollResult.CHANGED, PollResult.FAILED)
        }
        self._requests = Counter(
            "tracker_upstream_requests",
            "Requests to the upstream by HTTP status (error: no answer).",
            ["code"],
            registry=self.registry,
        )
        self._codes: dict[int | None, Counter] = {}
        self._duration = Histogram(
            "tracker_upstream_request_duration_seconds",
            "Duration of upstream requests, the whole answer read.",
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self._lateness = Histogram(
            "tracker_poll_lateness_seconds",
            "How long after its due time a poll's request started (pace and queue).",
            buckets=LATENESS_BUCKETS,
            registry=self.registry,
        )
        self._transitions = Counter(
            "tracker_transitions",
            "Stored transitions by status.",
            ["from_status", "to_status"],
            registry=self.registry,
        )
        self._moves: dict[tuple[str, str], Counter] = {}
        self._deliveries = Counter(
            "tracker_deliveries",
            "Delivery attempts by sink and result (failed: retried later).",
            ["sink", "result"],
            registry=self.registry,
        )
        self._attempts: dict[tuple[str, str], Counter] = {}
        hints = Counter(
            "tracker_hints",
            "Provider webhooks (push hints) at /hooks/nomos by result.",
            ["result"],
            registry=self.registry,
        )
        self._hints = {result: hints.labels(result=result) for result in HINT_RESULTS}
        self._ready = Gauge(
            "tracker_ready",
            "1 while /readyz would answer 200 and the database answers the gauges' reading.",
            registry=self.registry,
        )
        self._gauges = _DatabaseGauges()
        self.registry.register(self._gauges)
        self._cache = cache
        self._clock = clock
        self._read_at: float | None = None
        self._reading = asyncio.Lock()
        self._failing = False

    # -- Telemetry ---------------------------------------------------------------------------

    def polled(self, result: str) -> None:
        """Count one poll."""
        self._polls[result].inc()

    def requested(self, code: int | None, seconds: float) -> None:
        """Count one upstream request and observe its duration."""
        child = self._codes.get(code)
        if child is None:
            label = NO_ANSWER if code is None else str(code)
            child = self._codes[code] = self._requests.labels(code=label)
        child.inc()
        self._duration.observe(seconds)

    def started_late(self, seconds: float) -> None:
        """Observe how late a poll started."""
        self._lateness.observe(max(seconds, 0.0))

    def transitioned(self, from_status: str, to_status: str) -> None:
        """Count one stored transition."""
        key = (from_status, to_status)
        child = self._moves.get(key)
        if child is None:
            child = self._moves[key] = self._transitions.labels(
                from_status=status_label(from_status), to_status=status_label(to_status)
            )
        child.inc()

    def delivered(self, sink: str, result: str) -> None:
        """Count one delivery attempt."""
        self._delivery(sink, result).inc()

    def _delivery(self, sink: str, result: str) -> Counter:
        key = (sink, result)
        child = self._attempts.get(key)
        if child is None:
            child = self._attempts[key] = self._deliveries.labels(sink=sink, result=result)
        return child

    def hinted(self, result: str) -> None:
        """Count one provider webhook by result (one of :data:`HINT_RESULTS`)."""
        self._hints[result].inc()

    # -- exposition --------------------------------------------------------------------------

    async def refresh(
        self, store: Store, sinks: Collection[str], *, unready: str | None = None
    ) -> None:
        """Read the gauges from the database unless a reading is fresh enough.

        Scrapes that come together share one reading. A database that does not answer within
        :data:`GAUGE_TIMEOUT` leaves the gauges out until a reading succeeds (logged once).
        ``unready`` is why the process is not ready (``None``: it is); ``tracker_ready`` is 0
        for it and while the database does not answer. Every sink's dead letters are counted
        from 0, so that the first one is an increase.
        """
        for sink in sinks:
            self._delivery(sink, DeliveryState.DEAD)
        async with self._reading:
            await self._read(store, sinks)
        self._ready.set(0 if unready is not None or self._failing else 1)

    async def _read(self, store: Store, sinks: Collection[str]) -> None:
        """Read the board's counts into the gauges, unless the last reading is fresh enough."""
        if self._read_at is not None and self._clock() - self._read_at < self._cache:
            return
        try:
            async with asyncio.timeout(GAUGE_TIMEOUT):
                now = utc_now()
                board = await store.reports.board(stale_before=now - STALE_AFTER)
        except Exception as exc:
            self._gauges.families = []
            if not self._failing:
                kind = type(getattr(exc, "orig", None) or exc).__name__
                said = first_line(exc)
                error = kind if said == kind else f"{kind}: {said}"
                log.warning("metrics_database_failed", error=clip(error))
            self._failing = True
        else:
            self._gauges.families = gauges(board, now, sinks)
            self._failing = False
        self._read_at = self._clock()

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


class _DatabaseGauges:
    """A collector that hands out the last reading of the database's gauges."""

    def __init__(self) -> None:
        self.families: list[Metric] = []

    def collect(self) -> Iterable[Metric]:
        """The last reading (replaced whole, so a scrape never sees half of one)."""
        return self.families


def gauges(board: Board, now: datetime, sinks: Collection[str]) -> list[Metric]:
    """The gauges of one reading: every configured sink and every status appear, if at 0."""
    pending = dict.fromkeys(sinks, 0)
    oldest: dict[str, float] = dict.fromkeys(sinks, 0.0)
    for sink, count, since in board.pending_by_sink:
        pending[sink] = pending.get(sink, 0) + count
        age = (now - since).total_seconds() if since is not None else 0.0
        oldest[sink] = max(oldest.get(sink, 0.0), age, 0.0)
    watched = {str(status): 0 for status in Status}
    for status, count in board.active:
        label = status_label(status)
        watched[label] = watched.get(label, 0) + count
    outbox = GaugeMetricFamily(
        "tracker_outbox_pending", "Deliveries not yet delivered nor dead.", labels=["sink"]
    )
    ages = GaugeMetricFamily(
        "tracker_outbox_oldest_pending_age_seconds",
        "Age of the oldest pending delivery (0: none pending).",
        labels=["sink"],
    )
    for sink in sorted(pending):
        outbox.add_metric([sink], pending[sink])
        ages.add_metric([sink], round(oldest[sink], 3))
    orders = GaugeMetricFamily(
        "tracker_watched_orders", "Active watched orders by status.", labels=["status"]
    )
    for status in sorted(watched):
        orders.add_metric([status], watched[status])
    last = GaugeMetricFamily(
        "tracker_last_successful_poll_timestamp_seconds",
        "When the last poll of any daemon succeeded (Unix time).",
    )
    if board.last_success_at is not None:
        last.add_metric([], board.last_success_at.timestamp())
    stuck = GaugeMetricFamily(
        "tracker_stuck_orders",
        "Active orders whose current stay was reported stuck ([alerts.stuck]), by status.",
        labels=["status"],
    )
    stuck_by_status = {str(status): 0 for status in Status}
    for status, count in board.stuck:
        label = status_label(status)
        stuck_by_status[label] = stuck_by_status.get(label, 0) + count
    for status in sorted(stuck_by_status):
        stuck.add_metric([status], stuck_by_status[status])
    live = GaugeMetricFamily(
        "tracker_live_daemons", "Daemons whose heartbeat the database holds as fresh."
    )
    live.add_metric([], board.daemons)
    trusted = GaugeMetricFamily(
        "tracker_change_sweeps_trusted",
        "1 while change sweeps are trusted (full passes at [polling] reconcile), else 0.",
    )
    trusted.add_metric([], 1 if SweepState.loads(board.sweeps).trusted else 0)
    return [outbox, ages, orders, last, stuck, live, trusted]
