"""The active orders per status as the database keeps them (``order_counts``), on both backends:
every way an order is written keeps them equal to a count of the orders, and folds lose none."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.histories import D0, DAY, History, poll_once, record_history
from tests.postgres import Cluster
from tests.schema import downgrade_to, engine_for
from tests.support import (
    ScriptedUpstream,
    make_settings,
    ok,
    run_until,
    settings_mapping,
    tracker_cli,
    write_config,
)
from tracker.clock import utc_now
from tracker.service import open_service
from tracker.store import Store, open_store, upgrade
from tracker.store.db import SCHEMA_HEAD
from tracker.store.tables import order_counts
from tracker.store.tables import watched_orders as w
from tracker.store.tally import FOLD_ABOVE

STALE = D0 - 10 * DAY


def order(n: int) -> str:
    """A well-formed order id."""
    return f"prdo_tally{n:019d}"


@pytest.fixture
async def store(database: str) -> AsyncIterator[Store]:
    """A migrated store on the test's database."""
    async with open_store(database) as opened:
        yield opened


def counted(url: str) -> dict[str | None, int]:
    """The active orders per status, counted from the orders themselves."""
    engine = engine_for(url)
    with engine.connect() as conn:
        found = conn.execute(
            sa.select(w.c.status, sa.func.count()).where(w.c.active).group_by(w.c.status)
        )
        counts = {row[0]: int(row[1]) for row in found}
    engine.dispose()
    return counts


def count_rows(url: str) -> int:
    """How many rows ``order_counts`` holds."""
    engine = engine_for(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(sa.func.count()).select_from(order_counts)).scalar_one()
    engine.dispose()
    return int(rows)


async def kept(store: Store) -> dict[str | None, int]:
    """The active orders per status as the board reads them."""
    board = await store.reports.board(stale_before=D0)
    return dict(board.active)


class TestOrderCounts:
    """``order_counts`` follows every write of ``watched_orders``."""

    async def test_every_kind_of_write_keeps_the_counts(self, store: Store, database: str) -> None:
        """Watching, first snapshots, changes, retiring, removing and watching again keep the
        board's counts equal to a count of the active orders."""
        history: History = {
            order(1): ("metrify", [(0, "ordered"), (2, "checked"), (5, "installation_planning")]),
            order(2): ("metrify", [(0, "ordered"), (3, "blocked")]),
            order(3): ("voltaro", [(1, "waiting")]),
            order(4): ("voltaro", [(1, "ordered"), (4, "activated")]),
        }
        await record_history(store, history)
        await store.orders.watch([order(5), order(6)], source="manual", now=D0)
        assert await kept(store) == counted(database)
        assert await kept(store) == {
            "installation_planning": 1,
            "blocked": 1,
            "waiting": 1,
            "activated": 1,
            None: 2,
        }
        await poll_once(store, order(4), "activated", at=D0 + 30 * DAY, retire=True)
        await store.orders.unwatch([order(2), order(5)], now=D0 + DAY)
        assert (
            await kept(store)
            == counted(database)
            == {
                "installation_planning": 1,
                "waiting": 1,
                None: 1,
            }
        )
        await store.orders.watch([order(2)], source="cli", now=D0 + 2 * DAY)
        await store.sweeps.watch_new([order(7), order(8)], now=D0, lease_until=D0 + DAY)
        assert (
            await kept(store)
            == counted(database)
            == {
                "installation_planning": 1,
                "waiting": 1,
                "blocked": 1,
                None: 3,
            }
        )

    async def test_a_fold_keeps_the_counts_in_one_row_per_status(
        self, store: Store, database: str
    ) -> None:
        """A fold of more rows than it leaves alone writes one row per status with the same
        counts; fewer rows are left as they are."""
        await store.orders.watch([order(n) for n in range(5)], source="manual", now=D0)
        assert count_rows(database) == 5
        assert await store.tally.fold() == 0  # few rows: nothing to fold
        many = [order(n) for n in range(5, 5 + FOLD_ABOVE)]
        await store.orders.watch(many, source="manual", now=D0)
        await store.orders.unwatch(many[:10], now=D0)
        before = await kept(store)
        assert before == counted(database) == {None: FOLD_ABOVE - 5}
        assert await store.tally.fold() == FOLD_ABOVE + 5 + 10
        assert count_rows(database) == 1
        assert await kept(store) == before
        await store.orders.unwatch(many[10:], now=D0)  # the count of none falls to 0
        assert await kept(store) == counted(database) == {None: 5}

    async def test_a_fold_beside_a_write_not_yet_committed(self, postgres: Cluster) -> None:
        """On PostgreSQL, a write that commits after a fold began keeps its counts: the fold
        removes only the rows it summed (SQLite has one writer at a time)."""
        url = postgres.clone()
        async with open_store(url) as store:
            ids = [order(n) for n in range(FOLD_ABOVE + 1)]
            await store.orders.watch(ids, source="cli", now=D0)
            engine = engine_for(url)
            with engine.connect() as writer:
                writer.execute(sa.update(w).where(w.c.order_id == ids[0]).values(status="ordered"))
                assert await store.tally.fold() == FOLD_ABOVE + 1  # the uncommitted rows wait
                writer.commit()
            engine.dispose()
            assert await kept(store) == counted(url) == {None: FOLD_ABOVE, "ordered": 1}

    async def test_migration_backfills_the_counts(self, store: Store, database: str) -> None:
        """Downgrading to 0011 and upgrading again counts the active orders already there."""
        two: History = {
            order(1): ("metrify", [(0, "ordered"), (2, "checked")]),
            order(2): ("metrify", [(0, "ordered")]),
        }
        await record_history(store, two)
        await store.orders.watch([order(3)], source="manual", now=D0)
        await store.orders.unwatch([order(2)], now=D0 + timedelta(hours=1))
        await store.close()
        downgrade_to(database, "0011")
        assert upgrade(database) == [f"0011 -> {SCHEMA_HEAD}"]
        assert count_rows(database) == 2  # one row per status, from the backfill
        async with open_store(database) as again:
            assert await kept(again) == counted(database) == {"checked": 1, None: 1}


async def test_a_running_daemon_folds_the_counts(
    database: str, tmp_path: Path, upstream: tuple[ScriptedUpstream, str]
) -> None:
    """A daemon folds the counts' rows into one per status as it starts (then every minute)."""
    _scripted, url = upstream
    ids = [order(n) for n in range(FOLD_ABOVE + 50)]
    async with open_service(make_settings(tmp_path, url)) as service:
        later = utc_now() + timedelta(days=1)  # none comes due while the test runs
        await service.store.orders.watch(ids, source="cli", now=later)
        assert count_rows(database) == FOLD_ABOVE + 50

        async def folded() -> bool:
            return count_rows(database) == 1

        await run_until(service, folded, limit=60)
        assert await kept(service.store) == counted(database) == {None: FOLD_ABOVE + 50}


async def test_polling_without_a_daemon_folds_the_counts(
    database: str, tmp_path: Path, upstream: tuple[ScriptedUpstream, str]
) -> None:
    """`tracker poll --all` (from cron, with no daemon) folds the counts' rows as it ends."""
    scripted, url = upstream
    ids = [order(n) for n in range(FOLD_ABOVE + 20)]
    polled = ids[:3]
    for order_id in polled:
        scripted.script(order_id, ok("ordered"))
    config = write_config(tmp_path / "tracker.toml", settings_mapping(tmp_path, url))
    async with open_service(make_settings(tmp_path, url)) as service:
        await service.store.orders.watch(ids, source="cli", now=utc_now())
        await service.store.orders.unwatch(ids[3:], now=utc_now())
    assert count_rows(database) > FOLD_ABOVE
    ran = await tracker_cli("poll", "--all", "--config", str(config))
    assert ran.code == 0, ran.err
    assert count_rows(database) == 1
    async with open_store(database) as store:
        assert await kept(store) == counted(database) == {"ordered": 3}
