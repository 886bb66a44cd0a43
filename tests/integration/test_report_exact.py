"""The reports to the microsecond, on SQLite and PostgreSQL: lengths and lead times that are
whole days give the same numbers whatever the arithmetic, these do not.

The history (after ``D0``, a Monday at midnight UTC; µs is one microsecond), each order seen
first in ``waiting``, then ``ordered``, then ``activated``:

- E (metrify): ``ordered`` at 1 day + 1 µs, ``activated`` at 3 days + 1 µs: 2 days in
  ``ordered``, exactly the target, not over it.
- F (inexogy): ``ordered`` at 1 day, ``activated`` at 3 days + 1 µs: 2 days + 1 µs, over it.
- G (inexogy): ``ordered`` at 12 h + 3 µs, ``activated`` at 36 h + 10 µs: 1 day + 7 µs.

The stays in ``ordered`` are also the lead times (each order's first entry into ``ordered``
and into ``activated``): sorted, 1 d + 7 µs, 2 d, 2 d + 1 µs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from tests.histories import D0, DAY, History, holding
from tracker.insight import Period, durations, flow, lead_times, over_target
from tracker.store import Store

#: Every test here runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.usefixtures("database")

US = timedelta(microseconds=1)
HOUR = timedelta(hours=1)
EXACT: History = {
    "prdo_eeeeeeeeeeeeeeeeeeeeeeee": (
        "metrify",
        [(0.0, "waiting"), (DAY + US, "ordered"), (3 * DAY + US, "activated")],
    ),
    "prdo_ffffffffffffffffffffffff": (
        "inexogy",
        [(0.0, "waiting"), (DAY, "ordered"), (3 * DAY + US, "activated")],
    ),
    "prdo_gggggggggggggggggggggggg": (
        "inexogy",
        [(0.0, "waiting"), (12 * HOUR + 3 * US, "ordered"), (36 * HOUR + 10 * US, "activated")],
    ),
}
PERIOD = Period(since=D0, until=D0 + 7 * DAY)
#: Seconds in a day.
D = 86_400


@pytest.fixture
async def store(database: str) -> AsyncIterator[Store]:
    """A migrated store holding :data:`EXACT`."""
    async with holding(database, EXACT) as opened:
        yield opened


class TestToTheMicrosecond:
    """Percentiles, lead times and the share over target keep every microsecond."""

    async def test_durations(self, store: Store) -> None:
        """Overall the providers' sorted lengths merge: median 2 d, p90 2 d + 0.8 µs (kept
        to the microsecond); inexogy alone interpolates between 1 d + 7 µs and 2 d + 1 µs."""
        found = [
            (d.status, d.provider, d.count, d.median_seconds, d.p90_seconds)
            for by in (False, True)
            for d in await durations(store, PERIOD, by=by)
            if d.status == "ordered"
        ]
        assert found == [
            ("ordered", None, 3, 2 * D, 2 * D + 0.000001),
            ("ordered", "inexogy", 2, 1.5 * D + 0.000004, 1.9 * D + 0.000002),
            ("ordered", "metrify", 1, 2 * D, 2 * D),
        ]

    async def test_lead_times(self, store: Store) -> None:
        """Each order's lead time is exact: the same values as the stays in ordered."""
        [overall] = await lead_times(store, PERIOD, by=False)
        assert (overall.count, overall.median_seconds, overall.p90_seconds) == (
            3,
            2 * D,
            2 * D + 0.000001,
        )
        assert overall.bins == (3, *([0] * 12))
        by = [
            (lead.provider, lead.count, lead.median_seconds, lead.p90_seconds)
            for lead in await lead_times(store, PERIOD, by=True)
        ]
        assert by == [
            ("inexogy", 2, 1.5 * D + 0.000004, 1.9 * D + 0.000002),
            ("metrify", 1, 2 * D, 2 * D),
        ]

    async def test_over_target(self, store: Store) -> None:
        """A stay exactly as long as the target is not over it; one microsecond more is."""
        found = [
            (o.status, o.provider, o.count, o.over)
            for o in await over_target(store, PERIOD, {"ordered": 2 * DAY})
        ]
        assert found == [
            ("ordered", None, 3, 1),
            ("ordered", "inexogy", 2, 1),
            ("ordered", "metrify", 1, 0),
        ]

    async def test_flow(self, store: Store) -> None:
        """The moves are counted per provider as per status pair."""
        found = [
            (f.from_status, f.to_status, f.provider, f.count)
            for f in await flow(store, PERIOD, by=True)
        ]
        assert found == [
            ("ordered", "activated", "inexogy", 2),
            ("waiting", "ordered", "inexogy", 2),
            ("ordered", "activated", "metrify", 1),
            ("waiting", "ordered", "metrify", 1),
        ]
