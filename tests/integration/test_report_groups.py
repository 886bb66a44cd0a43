"""The finished stays' groups as both databases find them: SQLite walks an index group by group
(a loose index scan), PostgreSQL groups the period's rows; both must find every group.

The history (days after ``D0``, a Monday; the period is its first week):

- H, of no known provider (null: stays kept before the provider was, or a name the column
  did not hold; set here after recording): ``waiting`` at 0, ``ordered`` at 1, ``checked``
  at 3, where it stays: ``checked`` has no finished stay at all.
- I (metrify): ``waiting`` at 0, ``ordered`` at 2, ``blocked`` at 4.5, ``ordered`` at 5.
- J (metrify): ``waiting`` at 0, ``ordered`` at 10: its move ends after the period.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from tests.histories import D0, DAY, History, holding
from tests.schema import engine_for
from tracker.insight import Period, durations, flow
from tracker.store import Store

#: Every test here runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.usefixtures("database")

H = "prdo_hhhhhhhhhhhhhhhhhhhhhhhh"
GROUPS: History = {
    H: (
        "energy-metering",
        [(0.0, "waiting"), (1.0, "ordered"), (3.0, "checked")],
    ),
    "prdo_iiiiiiiiiiiiiiiiiiiiiiii": (
        "metrify",
        [(0.0, "waiting"), (2.0, "ordered"), (4.5, "blocked"), (5.0, "ordered")],
    ),
    "prdo_jjjjjjjjjjjjjjjjjjjjjjjj": ("metrify", [(0.0, "waiting"), (10.0, "ordered")]),
}
PERIOD = Period(since=D0, until=D0 + 7 * DAY)
#: Seconds in a day.
D = 86_400


@pytest.fixture
async def store(database: str) -> AsyncIterator[Store]:
    """A migrated store holding :data:`GROUPS`."""
    async with holding(database, GROUPS) as opened:
        engine = engine_for(database)
        with engine.begin() as conn:
            conn.execute(text("UPDATE stays SET provider = NULL WHERE order_id = :id"), {"id": H})
        engine.dispose()
        yield opened


class TestEveryGroup:
    """The null provider, a status with only a current stay, a move after the period."""

    async def test_flow(self, store: Store) -> None:
        """Each move of the period once per provider, the null provider its own group."""
        found = [
            (f.from_status, f.to_status, f.provider, f.count)
            for f in await flow(store, PERIOD, by=True)
        ]
        assert found == [
            ("blocked", "ordered", "metrify", 1),
            ("ordered", "blocked", "metrify", 1),
            ("ordered", "checked", None, 1),
            ("waiting", "ordered", None, 1),
            ("waiting", "ordered", "metrify", 1),
        ]

    async def test_durations(self, store: Store) -> None:
        """Only stays of known start that ended in the period; overall, the null provider's
        and metrify's lengths together (2 d and 2.5 d)."""
        found = [
            (d.status, d.provider, d.count, d.median_seconds, d.p90_seconds)
            for by in (False, True)
            for d in await durations(store, PERIOD, by=by)
        ]
        assert found == [
            ("blocked", None, 1, 0.5 * D, 0.5 * D),
            ("ordered", None, 2, 194_400.0, 211_680.0),  # 2.25 d, 2.45 d
            ("blocked", "metrify", 1, 0.5 * D, 0.5 * D),
            ("ordered", None, 1, 2 * D, 2 * D),
            ("ordered", "metrify", 1, 2.5 * D, 2.5 * D),
        ]

    async def test_after_the_period(self, store: Store) -> None:
        """A period holding only J's move finds it alone."""
        later = Period(since=D0 + 9 * DAY, until=D0 + 11 * DAY)
        found = [
            (f.from_status, f.to_status, f.provider, f.count)
            for f in await flow(store, later, by=True)
        ]
        assert found == [("waiting", "ordered", "metrify", 1)]
        assert await durations(store, later, by=True) == []
