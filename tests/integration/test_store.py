"""The database: migrations build what the models declare; SQLite runs in WAL mode."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect

from tests.support import order_body
from tracker.diff import UNCHANGED, decide
from tracker.errors import StoreError
from tracker.model import DeliveryState, MeterOrder
from tracker.store import upgrade
from tracker.store.db import SCHEMA_HEAD, _alembic_config, connect
from tracker.store.repo import Store
from tracker.store.tables import metadata

A = "prdo_aaaaaaaaaaaaaaaaaaaaaaaa"
B = "prdo_bbbbbbbbbbbbbbbbbbbbbbbb"
T0 = datetime(2026, 11, 2, 9, 30, 15, 123456, tzinfo=UTC)


class TestMigrations:
    """Alembic is the only way the schema is built, and it matches the table metadata."""

    def test_migrations_build_exactly_the_models(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path / 'm.db'}"
        assert upgrade(url) == [f"empty -> {SCHEMA_HEAD}"]
        engine = create_engine(url)
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, metadata) == []
            assert set(inspect(conn).get_table_names()) >= set(metadata.tables)
        engine.dispose()

    def test_schema_head_is_alembics_head(self) -> None:
        config = _alembic_config()
        assert ScriptDirectory.from_config(config).get_current_head() == SCHEMA_HEAD

    def test_upgrade_is_idempotent(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path / 'm.db'}"
        upgrade(url)
        assert upgrade(url) == []

    def test_sqlite_runs_in_wal_mode(self, tmp_path: Path) -> None:
        path = tmp_path / "m.db"
        upgrade(f"sqlite:///{path}")
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _old_fingerprint(order: MeterOrder) -> str:
    """The fingerprint as revision 0002 stored it: 32 hex digits."""
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


def _fill_revision_0002(url: str) -> dict[str, MeterOrder]:
    """A database built and filled as revision 0002 wrote it: A moved waiting -> ordered."""
    engine = create_engine(url)
    config = _alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0002")
        tables = sa.MetaData()
        tables.reflect(conn)
        w, s, t, d = (
            tables.tables[n] for n in ("watched_orders", "snapshots", "transitions", "deliveries")
        )
        naive = T0.replace(tzinfo=None)  # 0002 stored UTC as text without a zone
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
                    added_at=naive,
                    status=last.status,
                    fingerprint=_old_fingerprint(last),
                    next_poll_at=naive + timedelta(minutes=5),
                    last_polled_at=naive,
                    last_success_at=naive,
                    last_change_at=naive,
                    consecutive_failures=0,
                )
            )
        for number, order in enumerate(orders.values(), start=1):
            conn.execute(
                s.insert().values(
                    id=number,
                    order_id=order.id,
                    observed_at=naive + timedelta(seconds=number),
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
                event_id="evt_1",
                order_id=A,
                from_status="waiting",
                to_status="ordered",
                kind="forward",
                skipped="",
                detected_at=naive + timedelta(seconds=2),
                snapshot_id=2,
                payload='{"type": "meter_order.transition"}',
            )
        )
        conn.execute(
            d.insert().values(
                event_id="evt_1",
                sink="ops",
                state="dead",
                attempts=3,
                created_at=naive,
                next_attempt_at=naive,
                last_attempt_at=naive + timedelta(seconds=3),
                last_status=500,
                last_error="HTTP 500: boom",
            )
        )
    engine.dispose()
    return orders


class TestCompactStorage:
    """Revision 0003 rewrites a database filled by 0002 without losing or changing anything."""

    async def test_upgrade_keeps_every_row_and_every_fingerprint(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path / 'old.db'}"
        orders = _fill_revision_0002(url)
        assert upgrade(url) == ["0002 -> 0003"]
        engine = create_engine(url)
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, metadata) == []
            assert conn.exec_driver_sql("PRAGMA foreign_key_check").all() == []
        engine.dispose()
        store = Store(connect(url))
        try:
            history = await store.history(A)
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
            b = await store.history(B)
            assert b is not None
            assert b.snapshots[0].provider == "newco"
            # The next unchanged answer matches the converted fingerprint: no snapshot is stored.
            claims = {c.order_id: c for c in await store.claim_all(lease_until=T0)}
            for order in (orders["a2"], orders["b1"]):
                claim = claims[order.id]
                assert decide(claim.status, claim.fingerprint, order) is UNCHANGED
        finally:
            await store.close()

    def test_upgrade_that_fails_half_way_changes_nothing(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path / 'old.db'}"
        _fill_revision_0002(url)
        with sqlite3.connect(tmp_path / "old.db") as conn:  # a row 0003 cannot convert
            conn.execute(
                "UPDATE watched_orders SET fingerprint = 'not hex' WHERE order_id = ?", (B,)
            )
        with pytest.raises(StoreError, match="cannot migrate"):
            upgrade(url)
        with sqlite3.connect(tmp_path / "old.db") as conn:
            assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == ("0002",)
            # The column added before the failing row was met is gone again: DDL rolled back too.
            columns = [row[1] for row in conn.execute("PRAGMA table_info(watched_orders)")]
            assert "fingerprint_new" not in columns
