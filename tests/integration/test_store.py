"""The database on both backends: migrations build what the tables declare, upgrade data
written by the first revision, and run once when several processes start at once."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import sqlite3
import subprocess
import threading
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from tests.postgres import Cluster
from tests.schema import T0, assert_no_drift, engine_for
from tests.support import order_body
from tracker.diff import UNCHANGED, decide
from tracker.errors import StoreError
from tracker.fleet import gone_from_this_host
from tracker.model import STALE_AFTER, Claim, DaemonRecord, DeliveryState, MeterOrder
from tracker.store import PollOutcome, Store, open_store, upgrade
from tracker.store.db import SCHEMA_HEAD, _alembic_config, connect
from tracker.store.tables import watched_orders as watched

A = "prdo_aaaaaaaaaaaaaaaaaaaaaaaa"
B = "prdo_bbbbbbbbbbbbbbbbbbbbbbbb"


def revision_of(url: str) -> str | None:
    """The revision stamped in the database."""
    engine = engine_for(url)
    with engine.connect() as conn:
        revision = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    engine.dispose()
    return revision


class TestMigrations:
    """Alembic is the only way the schema is built, and it matches the table metadata."""

    def test_migrations_build_exactly_the_models(self, empty_database: str) -> None:
        """Migrating an empty database builds exactly the tables the metadata declares."""
        assert upgrade(empty_database) == [f"empty -> {SCHEMA_HEAD}"]
        assert_no_drift(empty_database)

    def test_schema_head_is_alembics_head(self) -> None:
        """SCHEMA_HEAD names the head revision of Alembic's scripts."""
        config = _alembic_config()
        assert ScriptDirectory.from_config(config).get_current_head() == SCHEMA_HEAD

    def test_upgrade_is_idempotent(self, empty_database: str) -> None:
        """A second upgrade of a migrated database does nothing."""
        upgrade(empty_database)
        assert upgrade(empty_database) == []

    def test_concurrent_starts_migrate_once(self, empty_database: str) -> None:
        """Four concurrent upgrades migrate the database once, without errors."""
        results: list[list[str]] = []
        errors: list[BaseException] = []
        start = threading.Barrier(4)

        def migrate() -> None:
            start.wait()
            try:
                results.append(upgrade(empty_database))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=migrate) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        assert sorted(results) == [[], [], [], [f"empty -> {SCHEMA_HEAD}"]]
        assert revision_of(empty_database) == SCHEMA_HEAD

    @pytest.mark.parametrize("database", ["sqlite"], indirect=True)
    def test_sqlite_runs_in_wal_mode(self, empty_database: str, tmp_path: Path) -> None:
        """A migrated SQLite database runs in WAL mode."""
        upgrade(empty_database)
        with sqlite3.connect(tmp_path / "empty.db") as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    def test_unreachable_database_names_host_and_port_only(self) -> None:
        """An unreachable database is one line naming host and port, never the password."""
        url = "postgresql://tracker:s3cret-pass@127.0.0.1:1/tracker"
        with pytest.raises(StoreError) as raised:
            upgrade(url)
        message = str(raised.value)
        assert message.startswith("database.url: cannot connect to 127.0.0.1:1/tracker: ")
        assert "s3cret-pass" not in message
        assert "\n" not in message


def _old_fingerprint(order: MeterOrder) -> str:
    """The fingerprint as revisions 0001 and 0002 stored it: 32 hex digits."""
    text = "\x1f".join(
        (
            order.subscription,
            order.customer,
            order.provider,
            order.status,
            order.created_at,
            order.updated_at,
        )
    )
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _fill_first_revisions(url: str) -> dict[str, MeterOrder]:
    """A database built by revision 0001 and filled as it wrote rows, then 0002's outbox row.

    Order A moved waiting -> ordered (one transition, dead-lettered to "ops"); B has one snapshot.
    """
    engine = engine_for(url)
    config = _alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
        tables = sa.MetaData()
        tables.reflect(conn)
        w, s, t = (tables.tables[n] for n in ("watched_orders", "snapshots", "transitions"))
        bodies = {
            "a1": json.dumps(order_body(A, "waiting"), indent=2),
            "a2": json.dumps(order_body(A, "ordered", updated_at="2026-11-02T09:00:00Z")),
            "b1": json.dumps(order_body(B, "checked", provider="newco")),
        }
        orders = {
            k: MeterOrder.from_json(v.encode(), expected_id=A if k[0] == "a" else B)
            for k, v in bodies.items()
        }
        for order_id, last in ((A, orders["a2"]), (B, orders["b1"])):
            conn.execute(
                w.insert().values(
                    order_id=order_id,
                    active=True,
                    source="cli",
                    added_at=T0,
                    status=last.status,
                    fingerprint=_old_fingerprint(last),
                    next_poll_at=T0 + timedelta(minutes=5),
                    last_polled_at=T0,
                    last_success_at=T0,
                    last_change_at=T0,
                    consecutive_failures=0,
                )
            )
        for number, order in enumerate(orders.values(), start=1):
            conn.execute(
                s.insert().values(
                    id=number,
                    order_id=order.id,
                    observed_at=T0 + timedelta(seconds=number),
                    status=order.status,
                    status_known=order.status_known,
                    provider=order.provider,
                    provider_known=order.provider_known,
                    upstream_updated_at=None,
                    fingerprint=_old_fingerprint(order),
                    raw=order.raw,
                )
            )
        conn.execute(
            t.insert().values(
                id=1,
                event_id="evt_1",
                order_id=A,
                from_status="waiting",
                to_status="ordered",
                kind="forward",
                skipped="",
                detected_at=T0 + timedelta(seconds=2),
                snapshot_id=2,
            )
        )
        command.upgrade(config, "0002")
        tables = sa.MetaData()
        tables.reflect(conn)
        conn.execute(
            tables.tables["deliveries"]
            .insert()
            .values(
                event_id="evt_1",
                sink="ops",
                state="dead",
                attempts=3,
                created_at=T0,
                next_attempt_at=T0,
                last_attempt_at=T0 + timedelta(seconds=3),
                last_status=500,
                last_error="HTTP 500: boom",
            )
        )
    engine.dispose()
    return orders


class TestUpgradeWithData:
    """Data written by the first revisions reaches head whole: nothing lost or changed."""

    async def test_upgrade_keeps_every_row_and_every_fingerprint(self, empty_database: str) -> None:
        """Rows of the first revisions reach head unchanged, fingerprints still matching."""
        url = empty_database
        orders = _fill_first_revisions(url)
        assert upgrade(url) == [f"0002 -> {SCHEMA_HEAD}"]
        assert_no_drift(url)
        store = Store(connect(url))
        try:
            history = await store.reports.history(A)
            assert history is not None
            assert [s.raw for s in history.snapshots] == [orders["a1"].raw, orders["a2"].raw]
            assert [s.status for s in history.snapshots] == ["waiting", "ordered"]
            assert [s.observed_at for s in history.snapshots] == [
                T0 + timedelta(seconds=1),
                T0 + timedelta(seconds=2),
            ]
            (move,) = history.transitions
            assert (move.from_status, move.to_status, move.snapshot_id) == ("waiting", "ordered", 2)
            assert move.detected_at == T0 + timedelta(seconds=2)
            (sent,) = history.deliveries["evt_1"]
            assert sent.state is DeliveryState.DEAD
            assert sent.last_attempt_at == T0 + timedelta(seconds=3)
            assert history.order.next_poll_at == T0 + timedelta(minutes=5)
            b = await store.reports.history(B)
            assert b is not None
            assert b.snapshots[0].provider == "newco"
            # Each order's stay began at its last transition, else at its first snapshot.
            async with store._engine.connect() as conn:
                stays = dict(
                    (
                        await conn.execute(sa.select(watched.c.order_id, watched.c.status_since))
                    ).all()
                )
            assert stays == {A: T0 + timedelta(seconds=2), B: b.snapshots[0].observed_at}
            # Each order's customer and subscription are its latest snapshot's (0006).
            for order in (orders["a2"], orders["b1"]):
                (found,) = await store.orders.page(q=order.customer, after=order.id[:-1], limit=1)
                assert (found.order_id, found.customer) == (order.id, order.customer)
                assert found.subscription == order.subscription
            # The next unchanged answer matches the converted fingerprint: no snapshot is stored.
            claims = {c.order_id: c for c in await store.polls.claim_all(lease_until=T0)}
            for order in (orders["a2"], orders["b1"]):
                claim = claims[order.id]
                assert decide(claim.status, claim.fingerprint, order) is UNCHANGED
        finally:
            await store.close()

    def test_upgrade_that_fails_half_way_changes_nothing(self, empty_database: str) -> None:
        """An upgrade failing on a row rolls back data and DDL to the old revision."""
        url = empty_database
        _fill_first_revisions(url)
        engine = engine_for(url)
        with engine.begin() as conn:  # a row 0003 cannot convert
            conn.execute(
                sa.text("UPDATE watched_orders SET fingerprint = 'not hex' WHERE order_id = :id"),
                {"id": B},
            )
        engine.dispose()
        with pytest.raises(StoreError, match="cannot migrate"):
            upgrade(url)
        assert revision_of(url) == "0002"
        # The column added before the failing row was met is gone again: DDL rolled back too.
        engine = engine_for(url)
        with engine.connect() as conn:
            columns = [c["name"] for c in inspect(conn).get_columns("watched_orders")]
        engine.dispose()
        assert "fingerprint" in columns
        assert "fingerprint_new" not in columns


def daemon(name: str, at: datetime) -> DaemonRecord:
    """A registry row for a daemon started at ``at``."""
    return DaemonRecord(
        id=f"dmn_{name}", host="host-a", pid=4242, version="0.1.0", started_at=at, heartbeat_at=at
    )


class TestDaemonRegistry:
    """SQLite takes one daemon, PostgreSQL several; silent ones are gone; beats keep them in."""

    async def test_join_beat_and_leave(self, database: str) -> None:
        """Daemons join and beat; stale ones are dropped; a forgotten one rejoins on its beat."""
        async with open_store(database) as store:
            first = await store.fleet.join(daemon("one", T0), stale_before=T0 - STALE_AFTER)
            assert first.joined
            assert first.others == ()
            later = T0 + timedelta(seconds=10)
            second = await store.fleet.join(daemon("two", later), stale_before=later - STALE_AFTER)
            assert [d.id for d in second.others] == ["dmn_one"]
            assert second.joined is store.fleet.shared
            assert store.fleet.shared is database.startswith("postgresql")
            # One's last beat is older than STALE_AFTER: a later start removes it as gone.
            much_later = T0 + STALE_AFTER + timedelta(seconds=11)
            assert (
                await store.fleet.heartbeat(daemon("two", later), now=much_later)
                is store.fleet.shared
            )
            third = await store.fleet.join(
                daemon("three", much_later), stale_before=much_later - STALE_AFTER
            )
            assert [d.id for d in third.others] == ["dmn_two"]
            live = await store.fleet.daemons(stale_before=much_later - STALE_AFTER)
            assert (
                [d.id for d in live] == ["dmn_two", "dmn_three"]
                if store.fleet.shared
                else ["dmn_two"]
            )
            # A daemon removed while it was silent registers again with its next beat.
            await store.fleet.forget(["dmn_two"])
            assert await store.fleet.heartbeat(daemon("two", later), now=much_later) is False
            assert "dmn_two" in [d.id for d in await store.fleet.daemons(stale_before=later)]

    async def test_a_gone_daemons_claims_are_released(self, database: str) -> None:
        """Forgetting a gone daemon releases its claims for a live daemon to take."""
        async with open_store(database) as gone, open_store(database) as live:
            await gone.fleet.join(daemon("gone", T0), stale_before=T0 - STALE_AFTER)
            gone.owner = "dmn_gone"  # its claims carry its daemon id, as a daemon's do
            await gone.orders.watch([A, B], source="cli", now=T0)
            await gone.polls.claim([A, B], lease_until=T0 + timedelta(hours=1))
            assert await live.polls.claim_due(now=T0, limit=10, lease_until=T0) == []
            taken = await live.fleet.forget(["dmn_gone"])
            assert (taken.orders, taken.deliveries) == (2, 0)
            assert await live.fleet.daemons() == []
            claimed = await live.polls.claim_due(
                now=T0, limit=10, lease_until=T0 + timedelta(hours=1)
            )
            assert sorted(c.order_id for c in claimed) == [A, B]

    async def test_a_starting_daemon_releases_the_claims_of_stale_ones(self, database: str) -> None:
        """A daemon starting after another went stale takes over its claims."""
        async with open_store(database) as gone, open_store(database) as starting:
            await gone.fleet.join(daemon("gone", T0), stale_before=T0 - STALE_AFTER)
            gone.owner = "dmn_gone"
            await gone.orders.watch([A], source="cli", now=T0)
            await gone.polls.claim([A], lease_until=T0 + timedelta(hours=1))
            later = T0 + STALE_AFTER + timedelta(seconds=1)
            joined = await starting.fleet.join(
                daemon("new", later), stale_before=later - STALE_AFTER
            )
            assert (joined.joined, joined.others) == (True, ())
            (claim,) = await starting.polls.claim_due(now=later, limit=10, lease_until=later)
            assert claim.order_id == A

    async def test_overview_counts_in_the_database(self, database: str) -> None:
        """The overview counts orders by status and state, with no deliveries or success yet."""
        async with open_store(database) as store:
            await store.orders.watch([A, B], source="cli", now=T0)
            await store.orders.unwatch([B], now=T0)
            overview = await store.reports.overview(stale_before=T0)
            assert set(overview.orders) == {(None, "active", 1), (None, "removed", 1)}
            assert overview.deliveries == ()
            assert overview.last_success_at is None


class TestClaimOwners:
    """A process that lost its claim (its lease ran out, another took it) changes nothing."""

    async def test_a_lost_claim_is_neither_renewed_released_nor_recorded(
        self, database: str
    ) -> None:
        """A claim lost to another process is neither renewed, released nor recorded."""
        async with open_store(database) as slow, open_store(database) as other:
            assert slow.owner != other.owner
            await slow.orders.watch([A], source="cli", now=T0)
            (lost,) = await slow.polls.claim([A], lease_until=T0 + timedelta(seconds=1))
            later = T0 + timedelta(seconds=2)  # the slow one's lease has run out
            (taken,) = await other.polls.claim_due(
                now=later, limit=10, lease_until=later + timedelta(minutes=2)
            )
            assert taken.order_id == A
            await slow.polls.extend_leases([A], lease_until=later + timedelta(hours=1))
            await slow.polls.release([A])
            assert (await slow.polls.claim_due(now=later, limit=10, lease_until=later)) == []
            unchanged = await slow.polls.record(
                [quiet(lost, at=later, next_poll=T0 + timedelta(days=9))]
            )
            assert unchanged == []
            order = await other.orders.get(A)
            assert order is not None
            assert order.last_polled_at is None  # the slow one's outcome did not land
            await other.polls.record([quiet(taken, at=later, next_poll=later + timedelta(hours=1))])
            order = await other.orders.get(A)
            assert order is not None
            assert (order.last_polled_at, order.next_poll_at) == (later, later + timedelta(hours=1))


def quiet(claim: Claim, *, at: datetime, next_poll: datetime) -> PollOutcome:
    """A successful poll that found the order unchanged."""
    body = json.dumps(order_body(claim.order_id)).encode()
    order = MeterOrder.from_json(body, expected_id=claim.order_id)
    return PollOutcome(
        claim=claim, polled_at=at, next_poll_at=next_poll, order=order, decision=UNCHANGED
    )


class TestGoneFromThisHost:
    """A registered daemon of this host is gone when its process is; another host's never is."""

    def test_by_host_and_pid(self) -> None:
        """A daemon of this host is gone when its pid has ended; one of another host never is."""
        here = socket.gethostname()
        me = replace(daemon("me", T0), host=here, pid=os.getpid())
        assert gone_from_this_host(me)  # our own pid: a restarted container, not a live other
        assert not gone_from_this_host(replace(me, pid=os.getppid()))
        assert not gone_from_this_host(replace(me, host=here + "-elsewhere", pid=os.getpid()))
        ended = subprocess.Popen(["true"])
        ended.wait()
        assert gone_from_this_host(replace(me, pid=ended.pid))


class TestLockOrder:
    """On PostgreSQL, writes of several claimed orders lock their rows in id order."""

    @pytest.mark.parametrize("write", ["extend_leases", "release"])
    async def test_rows_locked_in_id_order(self, postgres: Cluster, write: str) -> None:
        """Renewing or releasing claims waits for the first id's lock before taking a later
        id's, whatever the rows' places in the table: no deadlock with a recording."""
        url = postgres.clone()
        async with open_store(url) as store:
            await store.orders.watch([B], source="cli", now=T0)  # B's row first in the table
            await store.orders.watch([A], source="cli", now=T0)
            await store.polls.claim([A, B], lease_until=T0 + timedelta(hours=1))
            with psycopg.connect(url, autocommit=False) as holder:
                holder.execute("SELECT 1 FROM watched_orders WHERE order_id = %s FOR UPDATE", [A])
                if write == "extend_leases":
                    job = store.polls.extend_leases([B, A], lease_until=T0 + timedelta(hours=2))
                else:
                    job = store.polls.release([B, A])
                writing = asyncio.create_task(job)
                with psycopg.connect(url, autocommit=True) as watcher:
                    async with asyncio.timeout(60):  # only ends a hang
                        while not watcher.execute(_WAITING_FOR_A_LOCK).fetchone():
                            assert not writing.done()
                            await asyncio.sleep(0.01)
                    # Waiting for A, it has not locked B.
                    watcher.execute("BEGIN")
                    watcher.execute(
                        "SELECT 1 FROM watched_orders WHERE order_id = %s FOR UPDATE NOWAIT", [B]
                    )
                    watcher.execute("ROLLBACK")
                holder.rollback()
                await writing


#: A backend other than the asker waiting for a row lock.
_WAITING_FOR_A_LOCK = (
    "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
    " AND datname = current_database()"
)
