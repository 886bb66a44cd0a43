"""Insight from the history: durations, lead times, the flow, the weekly trend, the SLA share.

One layer for every view: ``tracker report`` (``tracker.report_cli``), the API
(``/api/v1/reports/…``) and the page ``/reports`` call these functions and print, serve or draw
the objects they return, so the three never disagree.

Definitions (the README's "Reports" says the same):

- A **stay** is the time an order spent in one status: from the transition into it to the
  transition out of it. The first status an order is seen in began before watching did: its
  start is unknown, so it has no length (it is left out, never counted as zero).
- **Durations** count the finished stays of known start that *ended* in ``[since, until)``;
  current stays are not counted (their length is not known yet).
- **Lead time** runs from the first transition into ``ordered`` to the first transition into
  ``activated``, for orders whose first activation is in the period; an order seen first in
  ``ordered`` or later has no known start and is left out.
- **Percentiles** interpolate linearly between the closest ranks: for ``n`` sorted values
  ``v[0..n-1]`` the ``p``-quantile is at position ``h = (n - 1) * p``, ``v[⌊h⌋] + (h - ⌊h⌋) *
  (v[⌊h⌋+1] - v[⌊h⌋])`` (PostgreSQL's ``percentile_cont``, numpy's default).
"""

from __future__ import annotations

import bisect
import csv
import io
import itertools
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from tracker.errors import ConfigError
from tracker.export import neutralise, parse_moment

if TYPE_CHECKING:
    from tracker.store import Store
    from tracker.store.stays import Finished, Lead

#: The period a report covers when ``since`` is not given: the last twelve weeks.
DEFAULT_PERIOD = timedelta(weeks=12)
#: The longest period one report may cover: ten years is every history this tracker has.
MAX_PERIOD = timedelta(days=3660)
#: What ``by`` may name.
BY = ("provider",)
#: The lead-time distribution's bins: two weeks wide, the last one open (26 weeks or more).
LEAD_BIN = timedelta(weeks=2)
LEAD_BINS = 13
#: Monday 1970-01-05, where week numbers (``tracker.store.stays.WeekNumber``) start.
WEEK_ZERO = date(1970, 1, 5)
MICROS = 1_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class Period:
    """A report's period, ``[since, until)``, aware UTC."""

    since: datetime
    until: datetime

    @classmethod
    def parse(cls, since: str | None, until: str | None, *, now: datetime) -> Period:
        """``since`` and ``until`` as ``tracker export`` takes them (``YYYY-MM-DD`` or ISO 8601
        with an offset); ``until`` defaults to ``now``, ``since`` to :data:`DEFAULT_PERIOD`
        before ``until``. Raises :class:`ConfigError` naming the option."""
        end = parse_moment(until, "--until") if until else now
        try:
            start = parse_moment(since, "--since") if since else end - DEFAULT_PERIOD
        except OverflowError:  # --until in the first weeks of year 1
            raise ConfigError(f"--until {until!r} is out of range; give a later date") from None
        if start >= end:
            raise ConfigError(
                f"--since {start:%Y-%m-%d %H:%M} is not before --until {end:%Y-%m-%d %H:%M}"
            )
        if end - start > MAX_PERIOD:
            raise ConfigError(
                f"the period is longer than {MAX_PERIOD.days} days; give a shorter one"
            )
        return cls(since=start, until=end)


def by_provider(by: str | None) -> bool:
    """Whether ``by`` asks for one row per provider; anything but ``provider`` is refused."""
    if by is None or by == "":
        return False
    if by not in BY:
        raise ConfigError(f"--by {by!r} is not known; use --by provider")
    return True


# -- percentiles -----------------------------------------------------------------------------


def quantile(values: Sequence[int], p: Fraction) -> int | Fraction:
    """The ``p``-quantile of ``values`` (sorted, at least one): linear interpolation between
    the closest ranks around position ``(len - 1) * p``."""
    position = (len(values) - 1) * p
    low = math.floor(position)
    below = values[low]
    above = values[low + 1] if low + 1 < len(values) else below
    return below + (position - low) * (above - below)


def quantile_of_runs(runs: Sequence[Sequence[int]], p: Fraction) -> int | Fraction:
    """:func:`quantile` of the values of several sorted runs together, without merging
    them: the two ranks around the position are found by :func:`ranked`."""
    if len(runs) == 1:
        return quantile(runs[0], p)
    total = sum(map(len, runs))
    position = (total - 1) * p
    low = math.floor(position)
    below = ranked(runs, low)
    above = below
    if sum(bisect.bisect_right(run, below) for run in runs) <= low + 1 < total:
        # Rank low + 1 is past every copy of ``below``: the smallest value after it.
        above = min(run[i] for run in runs if (i := bisect.bisect_right(run, below)) < len(run))
    return below + (position - low) * (above - below)


def ranked(runs: Sequence[Sequence[int]], rank: int) -> int:
    """The value at ``rank`` (from 0) of the sorted runs' values together: the smallest value
    that at least ``rank + 1`` of them do not exceed, found by bisection over the values."""
    low = min(run[0] for run in runs if run)
    high = max(run[-1] for run in runs if run)
    while low < high:
        middle = (low + high) // 2
        if sum(bisect.bisect_right(run, middle) for run in runs) > rank:
            high = middle
        else:
            low = middle + 1
    return low


MEDIAN = Fraction(1, 2)
P90 = Fraction(9, 10)


def seconds(micros: int | Fraction) -> float:
    """Microseconds as seconds, kept to the microsecond."""
    return round(float(micros) / MICROS, 6)


# -- the reports -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Duration:
    """How long stays in ``status`` lasted (all statuses together when ``None``)."""

    status: str | None
    provider: str | None
    count: int
    median_seconds: float
    p90_seconds: float

    def json(self) -> dict[str, Any]:
        """The API's and ``--format json``'s object."""
        return {
            "status": self.status,
            "provider": self.provider,
            "count": self.count,
            "median_seconds": self.median_seconds,
            "p90_seconds": self.p90_seconds,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class LeadTime:
    """Lead times ``ordered`` → ``activated`` of a provider's orders (all when ``None``)."""

    provider: str | None
    count: int
    median_seconds: float
    p90_seconds: float
    #: How many lead times fell in each :data:`LEAD_BIN`-wide bin (the last one open).
    bins: tuple[int, ...]

    def json(self) -> dict[str, Any]:
        """The API's and ``--format json``'s object."""
        return {
            "provider": self.provider,
            "count": self.count,
            "median_seconds": self.median_seconds,
            "p90_seconds": self.p90_seconds,
            "bins": list(self.bins),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Flow:
    """How many orders moved from one status to another in the period."""

    from_status: str
    to_status: str
    provider: str | None
    count: int

    def json(self) -> dict[str, Any]:
        """The API's and ``--format json``'s object."""
        return {
            "from": self.from_status,
            "to": self.to_status,
            "provider": self.provider,
            "count": self.count,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Week:
    """One week's entries into ``activated``, ``cancelled`` and the blocked statuses."""

    #: The week's Monday (weeks run Monday 00:00 UTC to Monday).
    week: date
    activated: int
    cancelled: int
    blocked: int

    def json(self) -> dict[str, Any]:
        """The API's and ``--format json``'s object."""
        return {
            "week": self.week.isoformat(),
            "activated": self.activated,
            "cancelled": self.cancelled,
            "blocked": self.blocked,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class OverTarget:
    """Stays in ``status`` longer than its ``[alerts.stuck]`` target (all providers: ``None``)."""

    status: str
    provider: str | None
    target_seconds: float
    count: int
    over: int

    @property
    def share(self) -> float:
        """The share of stays over the target, 0 to 1."""
        return round(self.over / self.count, 4) if self.count else 0.0

    def json(self) -> dict[str, Any]:
        """The API's and ``--format json``'s object."""
        return {
            "status": self.status,
            "provider": self.provider,
            "target_seconds": self.target_seconds,
            "count": self.count,
            "over": self.over,
            "share": self.share,
        }


async def finished(store: Store, period: Period) -> Finished:
    """The period's finished stays, read once for :func:`durations_of`, :func:`flow_of` and
    :func:`over_target_of`."""
    return await store.stays.finished(since=period.since, until=period.until)


def durations_of(stays: Finished, *, by: bool) -> list[Duration]:
    """Per status (and provider, with ``by``), how long the finished stays lasted."""
    groups: dict[tuple[str, str | None], list[Sequence[int]]] = {}
    for status, provider in stays.groups():
        key = (status, provider if by else None)
        groups.setdefault(key, []).append(stays.lengths((status, provider)))
    result = []
    for (status, provider), runs in sorted(groups.items(), key=_by_names):
        result.append(
            Duration(
                status=status,
                provider=provider,
                count=sum(map(len, runs)),
                median_seconds=seconds(quantile_of_runs(runs, MEDIAN)),
                p90_seconds=seconds(quantile_of_runs(runs, P90)),
            )
        )
    return result


def _named(group: tuple[str, str | None]) -> tuple[str, str]:
    """A (status, provider) group's sort key: by names, no provider first."""
    status, provider = group
    return (status, provider or "")


def _by_names(item: tuple[tuple[str, str | None], Any]) -> tuple[str, str]:
    return _named(item[0])


async def durations(store: Store, period: Period, *, by: bool) -> list[Duration]:
    """Per status (and provider, with ``by``), the finished stays of the period."""
    return durations_of(await finished(store, period), by=by)


async def lead_times(store: Store, period: Period, *, by: bool) -> list[LeadTime]:
    """Lead times of the orders first activated in the period, overall or per provider."""
    return lead_times_of(await leads(store, period), by=by)


async def leads(store: Store, period: Period) -> list[Lead]:
    """The orders first activated in the period, with their times, for :func:`lead_times_of`."""
    return await store.stays.lead_times(since=period.since, until=period.until)


def lead_times_of(found: Sequence[Lead], *, by: bool) -> list[LeadTime]:
    """Lead times of ``found``, overall or per provider, with their distribution."""
    groups: dict[str | None, list[int]] = {}
    for provider, micros in found:
        groups.setdefault(provider if by else None, []).append(micros)
    result = []
    for provider in sorted(groups, key=lambda name: name or ""):
        values = sorted(groups[provider])
        result.append(
            LeadTime(
                provider=provider,
                count=len(values),
                median_seconds=seconds(quantile(values, MEDIAN)),
                p90_seconds=seconds(quantile(values, P90)),
                bins=lead_bins(values),
            )
        )
    return result


def lead_bins(values: Sequence[int]) -> tuple[int, ...]:
    """How many of ``values`` (microseconds, sorted, positive) fall in each
    :data:`LEAD_BIN`-wide bin, the last one open: counted between the bins' edges."""
    width = LEAD_BIN // timedelta(microseconds=1)
    edges = [0, *(bisect.bisect_left(values, k * width) for k in range(1, LEAD_BINS)), len(values)]
    return tuple(end - start for start, end in itertools.pairwise(edges))


def flow_of(stays: Finished, *, by: bool) -> list[Flow]:
    """The transitions of the period counted by (from, to) (and provider, with ``by``), the
    most taken first."""
    counts: dict[tuple[str, str, str | None], int] = {}
    for (source, target, provider), count in stays.moves.items():
        key = (source, target, provider if by else None)
        counts[key] = counts.get(key, 0) + count
    ranked = sorted(counts.items(), key=lambda item: (-item[1], *item[0][:2], item[0][2] or ""))
    return [
        Flow(from_status=source, to_status=target, provider=provider, count=count)
        for (source, target, provider), count in ranked
    ]


async def flow(store: Store, period: Period, *, by: bool) -> list[Flow]:
    """The transitions of the period counted by (from, to) (and provider, with ``by``)."""
    return flow_of(await finished(store, period), by=by)


async def weekly(store: Store, period: Period) -> list[Week]:
    """Activations, cancellations and blocks per week of the period, every week listed."""
    found = await store.stays.weekly(since=period.since, until=period.until)
    counts: dict[int, dict[str, int]] = {}
    for week, status, count in found:
        counts.setdefault(week, {})[status] = count
    first = (period.since.date() - WEEK_ZERO).days // 7
    last = ((period.until - timedelta(microseconds=1)).date() - WEEK_ZERO).days // 7
    weeks = []
    for number in range(first, last + 1):
        seen = counts.get(number, {})
        weeks.append(
            Week(
                week=WEEK_ZERO + timedelta(weeks=number),
                activated=seen.get("activated", 0),
                cancelled=seen.get("cancelled", 0),
                blocked=seen.get("blocked", 0) + seen.get("blocked_wim", 0),
            )
        )
    return weeks


def over_target_of(stays: Finished, targets: Mapping[str, timedelta]) -> list[OverTarget]:
    """Per status with a target, overall and then per provider: the finished stays of known
    length, and how many of them lasted longer than the target."""
    overall: dict[str, tuple[int, int]] = {}
    rows = []
    for status, provider in sorted(stays.groups(), key=_named):
        if status not in targets:
            continue
        lengths = stays.lengths((status, provider))  # parsed only for statuses with a target
        limit = targets[status] // timedelta(microseconds=1)
        over = len(lengths) - bisect.bisect_right(lengths, limit)  # sorted: those past it
        count, total_over = overall.get(status, (0, 0))
        overall[status] = (count + len(lengths), total_over + over)
        rows.append((status, provider, len(lengths), over))
    return [
        OverTarget(
            status=status,
            provider=provider,
            target_seconds=seconds(targets[status] // timedelta(microseconds=1)),
            count=count,
            over=over,
        )
        for status, provider, count, over in [
            *[(status, None, *totals) for status, totals in sorted(overall.items())],
            *rows,
        ]
    ]


async def over_target(
    store: Store, period: Period, targets: Mapping[str, timedelta]
) -> list[OverTarget]:
    """Per status with a target, overall and per provider: finished stays over the target."""
    if not targets:
        return []
    return over_target_of(await finished(store, period), targets)


#: The reports ``tracker report`` and the API serve by name: each gives its JSON objects.
Fetch = Callable[["Store", Period, bool], Awaitable[Sequence[Any]]]


async def _durations(store: Store, period: Period, by: bool) -> Sequence[Any]:
    return await durations(store, period, by=by)


async def _lead_times(store: Store, period: Period, by: bool) -> Sequence[Any]:
    return await lead_times(store, period, by=by)


async def _flow(store: Store, period: Period, by: bool) -> Sequence[Any]:
    return await flow(store, period, by=by)


REPORTS: Mapping[str, Fetch] = {
    "durations": _durations,
    "lead-time": _lead_times,
    "flow": _flow,
}
#: Each report's columns, in the order of its JSON objects' keys (CSV header, table).
COLUMNS: Mapping[str, tuple[str, ...]] = {
    "durations": ("status", "provider", "count", "median_seconds", "p90_seconds"),
    "lead-time": ("provider", "count", "median_seconds", "p90_seconds", "bins"),
    "flow": ("from", "to", "provider", "count"),
    "weekly": ("week", "activated", "cancelled", "blocked"),
    "over-target": ("status", "provider", "target_seconds", "count", "over", "share"),
}


async def report_items(
    store: Store, name: str, period: Period, *, by: bool
) -> list[dict[str, Any]]:
    """The JSON objects of the report ``name`` (one of :data:`REPORTS`)."""
    return [row.json() for row in await REPORTS[name](store, period, by)]


def cell(value: Any) -> str:
    """One CSV or table cell: empty for null, space-separated for a list."""
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(str(item) for item in value)
    return str(value)


def csv_text(columns: Sequence[str], items: Sequence[Mapping[str, Any]]) -> str:
    """RFC 4180 CSV (CRLF) with a header row. Every value is a status, a provider name, a
    number or a date: a status or provider that a spreadsheet would read as a formula gets a
    single quote in front, as ``tracker export`` does."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    for item in items:
        writer.writerow(
            [
                neutralise(cell(item[key])) if isinstance(item[key], str) else cell(item[key])
                for key in columns
            ]
        )
    return buffer.getvalue()


def utc_day(moment: datetime) -> str:
    """A moment as ``YYYY-MM-DD`` when it is midnight UTC, else ISO 8601 with ``Z``."""
    moment = moment.astimezone(UTC)
    if moment == datetime.combine(moment.date(), datetime.min.time(), UTC):
        return moment.date().isoformat()
    return moment.isoformat().replace("+00:00", "Z")


#: How many of the period's most taken moves a weekly digest lists.
DIGEST_FLOW = 12
#: How many weeks of trend a weekly digest shows (the reported week last).
DIGEST_WEEKS = 4


async def weekly_digest_report(
    store: Store, until: datetime, targets: Mapping[str, timedelta]
) -> dict[str, Any]:
    """The week before ``until`` as a digest carries it (``digest_report = "weekly"``): the
    durations per status, the lead time, the most taken moves and the SLA share of
    ``[until - 7 days, until)``, and the trend of the :data:`DIGEST_WEEKS` whole weeks (Monday
    to Monday, UTC) before ``until``; plain JSON."""
    period = Period(since=until - timedelta(days=7), until=until)
    stays = await finished(store, period)
    lead = lead_times_of(await leads(store, period), by=False)
    monday = until.astimezone(UTC).date() - timedelta(days=until.astimezone(UTC).weekday())
    last_week_end = datetime.combine(monday, datetime.min.time(), UTC)  # whole weeks only
    trend = Period(since=last_week_end - timedelta(weeks=DIGEST_WEEKS), until=last_week_end)
    return {
        "period_start": utc_day(period.since),
        "period_end": utc_day(period.until),
        "durations": [row.json() for row in durations_of(stays, by=False)],
        "lead_time": lead[0].json() if lead else None,
        "flow": [row.json() for row in flow_of(stays, by=False)[:DIGEST_FLOW]],
        "over_target": [
            row.json() for row in over_target_of(stays, targets) if row.provider is None
        ],
        "weeks": [week.json() for week in await weekly(store, trend)],
    }
