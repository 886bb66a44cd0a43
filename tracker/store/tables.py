"""SQLAlchemy table metadata; Alembic migrations import only this module."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.types import LargeBinary, TypeEngine

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend.

    PostgreSQL keeps them as ``timestamptz``. SQLite has no date type, so they are stored as
    integer microseconds since the epoch: 8 bytes instead of 26 characters of text, compared and
    ordered as numbers.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        """Integers on SQLite, ``timestamptz`` elsewhere."""
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | int | None:
        """Refuse naive datetimes and store UTC."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use aware UTC")
        if dialect.name == "sqlite":
            return (value - EPOCH) // MICROSECOND
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        """Aware UTC datetimes, whatever the backend returned."""
        if value is None:
            return None
        if isinstance(value, int):
            return EPOCH + value * MICROSECOND
        assert isinstance(value, datetime)  # noqa: S101 - the impl type guarantees it
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


#: Row ids: BIGINT on PostgreSQL, INTEGER on SQLite (where only INTEGER is the rowid alias).
RowId = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)

#: Triggers on it keep ``order_counts`` (migration ``0012``; a migration that copies the table on
#: SQLite, ``batch_alter_table``, must create them again).
watched_orders = Table(
    "watched_orders",
    metadata,
    Column("order_id", String(80), primary_key=True),
    Column("active", Boolean, nullable=False),
    Column("source", String(16), nullable=False),
    Column("added_at", UTCDateTime, nullable=False),
    Column("removed_at", UTCDateTime),
    Column("retired_at", UTCDateTime),
    Column("status", String(64)),
    #: The last snapshot's fingerprint (see ``MeterOrder.fingerprint``): a poll compares with it.
    Column("fingerprint", BigInteger),
    Column("final_since", UTCDateTime),
    Column("next_poll_at", UTCDateTime),
    Column("leased_until", UTCDateTime),
    #: The store (process) whose claim the lease is: ``Store.owner``.
    Column("leased_by", String(40)),
    Column("last_polled_at", UTCDateTime),
    #: The last poll by the schedule (by id, a sweep of due orders, the organisation's read),
    #: not by a change sweep: a full pass ends when every active order has one since it began.
    Column("passed_at", UTCDateTime),
    Column("last_success_at", UTCDateTime),
    Column("last_change_at", UTCDateTime),
    Column("consecutive_failures", Integer, nullable=False, default=0),
    Column("last_error_kind", String(32)),
    Column("last_error", Text),
    #: When the current status began (the poll that first saw it): the start of its stay.
    Column("status_since", UTCDateTime),
    #: When this stay was reported stuck; cleared when the status changes.
    Column("stuck_at", UTCDateTime),
    #: The latest snapshot's customer and subscription, written with its status, so that
    #: ``q`` finds an order by them without unpacking bodies; null before the first snapshot,
    #: or when the value is longer than the column (see ``Store.record``).
    Column("customer", String(80)),
    Column("subscription", String(80)),
    #: Serves ``claim_due``: the active orders due first.
    Index(None, "active", "next_poll_at"),
    #: Serve the board (``Reports.board``): the active orders per status, the failing ones
    #: longest streak first, the stuck ones longest stay first, the last successful poll,
    #: each from its index.
    Index(None, "active", "status"),
    Index(None, "active", "consecutive_failures", "order_id"),
    Index(None, "active", "stuck_at", "status_since", "order_id"),
    Index(None, "last_success_at"),
    #: Serves the trust check (``Sweeps.pass_done``): an active order not passed since a time.
    Index(None, "active", "passed_at"),
    #: Serves the stuck check: one status's stays not reported yet, oldest first.
    Index(
        None,
        "status",
        "status_since",
        sqlite_where=text("stuck_at IS NULL"),  # and on PostgreSQL: see POSTGRESQL_ONLY
    ),
    #: Serve ``q`` (``watched_page``): one customer's (subscription's) orders in id order, so
    #: that a page reads only its own rows.
    Index(None, "customer", "order_id"),
    Index(None, "subscription", "order_id"),
    #: Serves ``q`` as an order id prefix on PostgreSQL: ``LIKE 'prdo_ab%'`` can use a b-tree
    #: of the database's collation only when that is ``C``, but this one under any collation.
    #: On SQLite it repeats the primary key's index (the prefix is a range over that one).
    Index("ix_watched_orders_order_id_pattern", "order_id"),  # options: POSTGRESQL_ONLY
)

snapshots = Table(
    "snapshots",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("order_id", String(80), ForeignKey("watched_orders.order_id"), nullable=False),
    Column("observed_at", UTCDateTime, nullable=False),
    #: The upstream's body exactly as received, packed (``tracker.store.packing``); status,
    #: provider and fingerprint are read from it rather than stored beside it.
    Column("body", LargeBinary, nullable=False),
    #: Serves ``history``: one order's snapshots in order.
    Index(None, "order_id", "id"),
)

transitions = Table(
    "transitions",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("event_id", String(40), nullable=False, unique=True),
    Column("order_id", String(80), ForeignKey("watched_orders.order_id"), nullable=False),
    Column("from_status", String(64), nullable=False),
    Column("to_status", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("skipped", String(400), nullable=False, default=""),
    Column("detected_at", UTCDateTime, nullable=False),
    Column("snapshot_id", RowId, ForeignKey("snapshots.id"), nullable=False),
    #: The webhook body, rendered once so that every attempt sends the same bytes.
    Column("payload", Text),
    #: Serves ``history``: one order's transitions in order (and their deliveries' join).
    Index(None, "order_id", "id"),
    #: Serves ``export`` and digests: the transitions of a period.
    Index(None, "detected_at"),
)

#: Each order's stays, one per status it was seen in, in order: the history's durations
#: (``tracker.store.stays``), kept as transitions are recorded (``Polls.record``) so that a
#: report reads finished stays and their lengths instead of pairing transitions up.
stays = Table(
    "stays",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("order_id", String(80), ForeignKey("watched_orders.order_id"), nullable=False),
    Column("status", String(64), nullable=False),
    #: The provider of the snapshot that began the stay (null if longer than the column).
    Column("provider", String(64)),
    #: When the transition into the status was detected; null for the first status seen,
    #: whose stay began before watching did (unknown, not zero).
    Column("started_at", UTCDateTime),
    #: When the tracker first saw the order in this status (``started_at`` when known).
    Column("seen_at", UTCDateTime, nullable=False),
    #: When the transition out of it was detected; null while it lasts.
    Column("ended_at", UTCDateTime),
    #: ``ended_at - started_at`` in microseconds, when both are known.
    Column("micros", BigInteger),
    #: The status the order moved to when the stay ended (the flow between statuses).
    Column("next_status", String(64)),
    #: Serves the durations and the flow of a period: finished stays by end, what the
    #: reports read of them in the index itself.
    Index(None, "ended_at", "status", "provider", "micros", "next_status"),
    #: Serves SQLite's grouping of the finished stays (``tracker.store.stays.Stays.finished``):
    #: each (status, next status, provider)'s stays by end, found by seeks, not a sort.
    Index(None, "status", "next_status", "provider", "ended_at", "micros"),
    #: Serves the weekly trend (entries into a status in a period) and lead times, whose
    #: order and provider it holds so that they are read from the index alone.
    Index(None, "status", "started_at", "order_id", "provider"),
    #: Serves closing an order's current stay, and lead times' first entries per order.
    Index(None, "order_id", "status", "started_at"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    #: A transition's or an event's (``events``) id.
    Column("event_id", String(40), nullable=False),
    Column("sink", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("leased_until", UTCDateTime),
    Column("leased_by", String(40)),
    Column("last_attempt_at", UTCDateTime),
    Column("last_status", Integer),
    Column("last_error", Text),
    Column("delivered_at", UTCDateTime),
    #: One delivery per event and sink; also serves the join from an event to its deliveries.
    UniqueConstraint("event_id", "sink"),
    #: Serves ``claim_deliveries``: one sink's pending deliveries due first.
    Index(None, "state", "sink", "next_attempt_at"),
)

#: Events other than transitions: alerts (an order stuck in its status, failing to poll,
#: recovered) and digests, each raised once, whichever daemon raises it.
events = Table(
    "events",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("event_id", String(40), nullable=False, unique=True),
    #: What makes it once: ``stuck:ORDER:STAY-START``, ``digest:SINK:DUE``; a second daemon's
    #: (or a restarted one's) insert of the same key is ignored.
    Column("key", String(200), nullable=False, unique=True),
    Column("kind", String(32), nullable=False),
    Column("order_id", String(80), ForeignKey("watched_orders.order_id")),
    Column("status", String(64)),
    Column("raised_at", UTCDateTime, nullable=False),
    #: The webhook (or digest) body, rendered once.
    Column("payload", Text, nullable=False),
    #: Serves ``history``: one order's events in order.
    Index(None, "order_id", "id"),
)

#: What all daemons share beyond the schedule: one row, the pause every request keeps.
fleet = Table(
    "fleet",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("paused_until", UTCDateTime),
)

#: What the organisation's sweeps keep between runs (``tracker.trust.SweepState``), as JSON, one
#: row per name: cursors, and whether change sweeps are trusted and why.
sweep_state = Table(
    "sweep_state",
    metadata,
    Column("name", String(40), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

#: The active orders per status, kept by triggers on ``watched_orders`` (migration ``0012``):
#: a status's count is the sum of its rows' ``n``, +1 for each order entering it, -1 for each
#: leaving it; ``tracker.store.tally.Tally.fold`` folds them into one row per status.
order_counts = Table(
    "order_counts",
    metadata,
    Column("status", String(64)),
    Column("n", Integer, nullable=False),
)

#: The running daemons: each registers on start, beats every few seconds and leaves on stop.
daemons = Table(
    "daemons",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("version", String(32), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("heartbeat_at", UTCDateTime, nullable=False),
)

#: The provider's webhooks (``POST /hooks/nomos``) seen in the last day: one row per event id,
#: so that a replay (at-least-once delivery, several ``tracker serve`` behind one address) is
#: recognised by every process. Rows older than ``HINT_RETENTION`` are pruned as hints arrive.
hints = Table(
    "hints",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False, unique=True),
    Column("order_id", String(80), nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    #: Arrived while a poll of its order was in flight: that poll's answer may predate the
    #: change, so recording it makes the order due again (``Store.record``) and clears this.
    Column("pending", Boolean, nullable=False, default=False),
    #: Serves the pruning: the oldest rows first.
    Index(None, "received_at"),
    #: Serves ``Store.record``'s look for pending hints: holds only those, so it stays tiny.
    Index(
        "ix_hints_order_id_pending",
        "order_id",
        sqlite_where=text("pending"),  # and on PostgreSQL: see POSTGRESQL_ONLY
    ),
)

#: The support pages' logins: one row per session ``/login`` issued. A session cookie is
#: honoured only while its row exists, so a logout ends every copy of the cookie at once, on
#: every process serving the pages. Rows past their expiry are pruned at each login.
sessions = Table(
    "sessions",
    metadata,
    #: SHA-256 (hex) of the random id the cookie carries: the table alone opens no session.
    Column("id", String(64), primary_key=True),
    Column("user_name", String(64), nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    #: Serves the pruning of expired rows and the ending of one user's sessions.
    Index(None, "expires_at"),
    Index(None, "user_name"),
)


#: Index options only PostgreSQL reads, by table and indexed columns. Named in the ``Index``
#: calls above, they would make SQLAlchemy load its PostgreSQL dialect (some 25 ms and 2 MiB)
#: in every command, on SQLite too. Only DDL reads them, and the schema is built by the
#: migrations, which spell them out: :func:`for_postgresql` adds them for Alembic's comparisons.
POSTGRESQL_ONLY: dict[tuple[str, tuple[str, ...]], dict[str, Any]] = {
    ("watched_orders", ("status", "status_since")): {"postgresql_where": text("stuck_at IS NULL")},
    ("watched_orders", ("order_id",)): {"postgresql_ops": {"order_id": "varchar_pattern_ops"}},
    ("hints", ("order_id",)): {"postgresql_where": text("pending")},
}


def for_postgresql() -> MetaData:
    """The metadata, its indexes given their PostgreSQL-only options (idempotent)."""
    for (table, columns), options in POSTGRESQL_ONLY.items():
        [index] = [
            index
            for index in metadata.tables[table].indexes
            if tuple(column.name for column in index.columns) == columns
        ]
        for key, value in options.items():
            index.dialect_kwargs[key] = value
    return metadata
