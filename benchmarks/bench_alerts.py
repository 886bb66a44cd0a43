"""Stuck-order benchmark: the daemon's stuck check, first and steady, on SQLite and PostgreSQL.

Each backend gets a migrated database (``tracker.store.upgrade``) loaded with ``--orders``
watched orders (default 100,000): valid ids, active, every one of the 14 statuses alike, the
start of each stay (``status_since``) spread evenly over the last 60 days, nothing reported
stuck yet. PostgreSQL is the tests' throwaway cluster (``tests.postgres``: Debian's server run
through ``runuser``); its table is VACUUM ANALYZEd after loading, with autovacuum off for it so
that no vacuum starts under the run. The thresholds are those of
``THRESHOLDS``; one sink hears every stuck alert, so each report writes its outbox row as a
configured daemon's does. The check is the store's own (``Store.stuck``, then
``Store.report_stuck`` with the events of ``tracker.alerts.stuck``), called as
``Daemon._check_stuck`` calls it. It prints:

1. the first check, when every stay past its threshold crosses at once (a daemon's first start
   over an existing database): each round of the daemon's loop (``stuck()`` with its limit of
   ``STUCK_BATCH`` stays per status, the events built, ``report_stuck()`` in one transaction)
   with its time, then the total; the stays reported are checked against the loaded data;
2. the steady check afterwards: ``STEADY_CALLS`` calls of ``stuck()``, the clock moved on by the
   daemon's ``STUCK_CHECK`` seconds before each (the few stays that cross meanwhile are
   reported, outside the timing): median and p99 against the goal of ``GOAL_MS``;
3. the plan of the ``stuck()`` query for one status, before the first check and in the steady
   state: the statement and parameters the store sends are captured as it runs and explained
   again as they are (SQLite ``EXPLAIN QUERY PLAN``, PostgreSQL ``EXPLAIN (ANALYZE, BUFFERS)``),
   and whether the partial index ``ix_watched_orders_status_status_since`` serves it.

On PostgreSQL the steady check runs twice: right after the first check, when the reported stays'
old row versions still have entries in the partial index, and after a VACUUM removed them.

Run it from the repository root with the project's virtualenv::

    .venv/bin/python benchmarks/bench_alerts.py [--orders N] [--backend sqlite|postgresql|both]

Both backends at 100,000 orders take one and a half to three minutes on two CPUs (as busy as the
machine is), nearly all of it the first check's reports (about 23,000 stays each). If it is
killed midway, stop the leftover server with ``runuser -u postgres --
/usr/lib/postgresql/15/bin/pg_ctl -D /tmp/tracker-pg-XXXX/data -m immediate stop`` (the folder
the run printed). It is not part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shlex
import sqlite3
import statistics
import string
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from tracker import alerts
from tracker.alerts import STUCK_BATCH, STUCK_CHECK
from tracker.clock import utc_now
from tracker.lifecycle import Status
from tracker.model import Event
from tracker.store import Stay, Store, connect, upgrade
from tracker.store.tables import deliveries, events, watched_orders

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file, not with ``-m``
    sys.path.insert(0, str(ROOT))

from benchmarks.common import sync_engine  # noqa: E402 - needs the root on the path
from tests.postgres import running_cluster  # noqa: E402 - needs the root on the path

#: The daemon's ``alerts.stuck`` of a typical configuration: the statuses where an order waits
#: on someone else, each with how long is too long.
THRESHOLDS: dict[str, timedelta] = {
    Status.WAITING.value: timedelta(days=14),
    Status.BLOCKED_WIM.value: timedelta(days=7),
    Status.BLOCKED.value: timedelta(days=7),
    Status.INSTALLATION_PLANNING.value: timedelta(days=21),
}
#: One sink that hears every stuck alert, so that a report writes its outbox row too.
ROUTES: dict[str, list[str]] = {"ops": ["stuck:*"]}
#: The stays begin evenly over this long before the load: past every threshold for most.
SPREAD = timedelta(days=60)
#: The status whose query is explained.
EXPLAINED = Status.WAITING.value
INDEX = "ix_watched_orders_status_status_since"
STEADY_CALLS = 50
GOAL_MS = 200.0
#: Rows per INSERT executemany while loading.
LOAD_CHUNK = 10_000
SEED = 20261130
ID_ALPHABET = string.ascii_lowercase + string.digits


@dataclass(frozen=True, slots=True)
class Round:
    """One round of the daemon's stuck loop: the stays found, and what each step took (s)."""

    stays: int
    raised: int
    query: float
    build: float
    report: float

    @property
    def total(self) -> float:
        """The whole round."""
        return self.query + self.build + self.report


@dataclass(frozen=True, slots=True)
class Steady:
    """A series of steady checks: milliseconds per ``stuck()``, the stays that crossed
    meanwhile, and the plan of the query at its start."""

    label: str
    ms: list[float]
    crossed: int
    plan: list[str]


@dataclass(slots=True)
class Run:
    """One backend's numbers."""

    backend: str
    orders: int
    load_seconds: float = 0.0
    rounds: list[Round] = field(default_factory=list)
    #: Stays past their threshold in the loaded data at the first check's last ``now``.
    expected: int = 0
    #: Events and outbox rows of kind ``stuck`` in the database after the first check.
    events: int = 0
    deliveries: int = 0
    plan_first: list[str] = field(default_factory=list)
    #: Right after the first check; on PostgreSQL also after a VACUUM.
    steady: list[Steady] = field(default_factory=list)

    @property
    def reported(self) -> int:
        """Stays the first check reported."""
        return sum(r.raised for r in self.rounds)


# -- the data --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Loaded:
    """What was loaded, as far as the stuck check cares: each order's status and stay start."""

    stays: list[tuple[str, datetime]]

    def past_threshold(self, now: datetime) -> int:
        """How many stays are longer than their status's threshold at ``now``."""
        return sum(
            1
            for status, since in self.stays
            if status in THRESHOLDS and since <= now - THRESHOLDS[status]
        )


def watched_rows(orders: int, now: datetime) -> list[dict[str, Any]]:
    """``orders`` active watched orders; the same ones for a given count on every run."""
    chance = random.Random(SEED)
    statuses = list(Status)
    made = []
    for number in range(orders):
        # The number keeps ids unique; the random rest gives them the documented length.
        tail = "".join(chance.choices(ID_ALPHABET, k=16))
        since = now - SPREAD * chance.random()
        made.append(
            {
                "order_id": f"prdo_{number:08d}{tail}",
                "active": True,
                "source": "cli",
                "added_at": since - timedelta(days=chance.uniform(0, 30)),
                "status": chance.choice(statuses).value,
                "status_since": since,
                "next_poll_at": now + timedelta(hours=chance.random()),
                "consecutive_failures": 0,
            }
        )
    return made


def load(database_url: str, orders: int) -> tuple[Loaded, float]:
    """Migrate, insert the orders (the table's own types convert the times), ANALYZE on
    PostgreSQL; returns what was loaded and the seconds the inserts took."""
    upgrade(database_url)
    made = watched_rows(orders, utc_now())
    with sync_engine(database_url) as engine:
        started = time.perf_counter()
        with engine.begin() as conn:
            for start in range(0, len(made), LOAD_CHUNK):
                conn.execute(insert(watched_orders), made[start : start + LOAD_CHUNK])
        seconds = time.perf_counter() - started
        if engine.dialect.name == "postgresql":
            # Autovacuum would start at a moment of its own choosing (the load alone is enough
            # to trigger it) and change the numbers under the run: it is off for this table,
            # and the VACUUM ANALYZE it would have made after the load is made here.
            with engine.connect() as conn:
                conn.execute(text("ALTER TABLE watched_orders SET (autovacuum_enabled = false)"))
                conn.commit()
            vacuum(engine)
    return Loaded([(row["status"], row["status_since"]) for row in made]), seconds


def vacuum(engine: Engine) -> None:
    """``VACUUM ANALYZE watched_orders`` (outside a transaction, as VACUUM must be)."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE watched_orders"))


# -- the check, as the daemon makes it -------------------------------------------------------


def reports(stays: Sequence[Stay], now: datetime) -> list[tuple[Stay, Event]]:
    """Each stay with its event, as ``Daemon._check_stuck`` builds them."""
    return [
        (
            stay,
            alerts.stuck(
                order_id=stay.order_id,
                status=stay.status,
                since=stay.since,
                threshold=THRESHOLDS[stay.status],
                now=now,
                routes=ROUTES,
            ),
        )
        for stay in stays
    ]


async def first_check(store: Store) -> tuple[list[Round], datetime]:
    """The daemon's loop at its first start: rounds until one raises nothing; returns them
    and the last round's ``now``."""
    done: list[Round] = []
    while True:
        now = utc_now()
        started = time.perf_counter()
        stays = await store.events.stuck(THRESHOLDS, now=now, limit=STUCK_BATCH)
        queried = time.perf_counter()
        built = reports(stays, now)
        reporting = time.perf_counter()
        raised = await store.events.report_stuck(built)
        ended = time.perf_counter()
        done.append(
            Round(
                stays=len(stays),
                raised=len(raised),
                query=queried - started,
                build=reporting - queried,
                report=ended - reporting,
            )
        )
        if not raised:
            return done, now


async def steady_check(
    label: str, store: Store, engine: AsyncEngine, after: datetime
) -> tuple[Steady, datetime]:
    """The plan at ``after``, then ``STEADY_CALLS`` ticks after it, the stays that cross
    reported outside the timing; returns the series and the last tick's ``now``."""
    plan = await query_plan(store, engine, after)
    timings, crossed, now = [], 0, after
    for _ in range(STEADY_CALLS):
        now += timedelta(seconds=STUCK_CHECK)
        started = time.perf_counter()
        stays = await store.events.stuck(THRESHOLDS, now=now, limit=STUCK_BATCH)
        timings.append(1000 * (time.perf_counter() - started))
        if stays:
            crossed += len(await store.events.report_stuck(reports(stays, now)))
    return Steady(label, timings, crossed, plan), now


async def query_plan(store: Store, engine: AsyncEngine, now: datetime) -> list[str]:
    """The plan of ``stuck()``'s query for ``EXPLAINED``: the statement and parameters the
    store sends, captured as it runs, explained again as they are."""
    sent: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", capture)
    try:
        await store.events.stuck({EXPLAINED: THRESHOLDS[EXPLAINED]}, now=now, limit=STUCK_BATCH)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", capture)
    [(statement, parameters)] = sent
    sqlite = engine.dialect.name == "sqlite"
    explain = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN (ANALYZE, BUFFERS) "
    async with engine.connect() as conn:
        result = await conn.exec_driver_sql(explain + statement, parameters)
        # SQLite: (id, parent, notused, detail); PostgreSQL: one line of text per row.
        plan = [str(row[-1]) for row in result]
    return [" ".join(statement.split()), f"parameters: {parameters}", *plan]


async def counted(engine: AsyncEngine) -> tuple[int, int]:
    """Stuck events and their outbox rows in the database."""
    async with engine.connect() as conn:
        stuck = events.c.kind == "stuck"
        raised = await conn.scalar(select(func.count()).select_from(events).where(stuck))
        outbox = await conn.scalar(
            select(func.count())
            .select_from(deliveries)
            .where(deliveries.c.event_id.in_(select(events.c.event_id).where(stuck)))
        )
    return int(raised or 0), int(outbox or 0)


async def measure(backend: str, database_url: str, orders: int) -> Run:
    """Load, explain, check once, explain again, check steadily."""
    run = Run(backend, orders)
    print(f"\n== {backend}: loading {orders} orders", flush=True)
    loaded, run.load_seconds = load(database_url, orders)
    print(f"   inserted in {run.load_seconds:.1f} s", flush=True)
    engine = connect(database_url)
    store = Store(engine)
    try:
        run.plan_first = await query_plan(store, engine, utc_now())
        run.rounds, last = await first_check(store)
        run.expected = loaded.past_threshold(last)
        run.events, run.deliveries = await counted(engine)
        steady, last = await steady_check("right after the first check", store, engine, last)
        run.steady.append(steady)
        if engine.dialect.name == "postgresql":
            # The reported stays' old row versions keep their index entries until a vacuum
            # removes them (a scan that meets one marks it dead for the scans after it): the
            # first steady series may read past them, this one cannot.
            with sync_engine(database_url) as sync:
                vacuum(sync)
            steady, last = await steady_check("after VACUUM", store, engine, last)
            run.steady.append(steady)
    finally:
        await store.close()
    print_run(run)
    return run


# -- the report ------------------------------------------------------------------------------


def p99(values: Sequence[float]) -> float:
    """The 99th percentile (of 50 calls: between the slowest and the next)."""
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def index_used(plan: Sequence[str]) -> bool:
    """Whether the plan reads the partial index."""
    return any(INDEX in line for line in plan[2:])


def print_plan(title: str, plan: Sequence[str]) -> None:
    """A captured plan: the statement, its parameters, then the plan's lines."""
    print(f"   {title} (index used: {'yes' if index_used(plan) else 'NO'}):")
    for line in plan:
        print(f"     {line}")


def print_run(run: Run) -> None:
    """One backend's details."""
    print(
        f"   1. first check: rounds of stuck(limit={STUCK_BATCH} per status) + events "
        "+ report_stuck()"
    )
    print(
        f"     {'round':>5} {'stays':>6} {'raised':>6} {'stuck() ms':>11} {'build ms':>9} "
        f"{'report ms':>10} {'total ms':>9} {'ms/stay':>8}"
    )
    for number, done in enumerate(run.rounds, 1):
        per_stay = f"{1000 * done.total / done.stays:8.3f}" if done.stays else f"{'-':>8}"
        print(
            f"     {number:>5} {done.stays:>6} {done.raised:>6} {1000 * done.query:11.1f} "
            f"{1000 * done.build:9.1f} {1000 * done.report:10.1f} {1000 * done.total:9.1f} "
            f"{per_stay}"
        )
    total = sum(r.total for r in run.rounds)
    print(
        f"     total {total:.2f} s for {run.reported} stays "
        f"({1000 * total / max(run.reported, 1):.3f} ms per stay); past their threshold in the "
        f"data: {run.expected}; stuck events stored: {run.events}, their outbox rows: "
        f"{run.deliveries}"
    )
    print(
        f"   2. steady check: {STEADY_CALLS} calls of stuck(), {STUCK_CHECK:g} s apart on the clock"
    )
    for steady in run.steady:
        ms = steady.ms
        print(
            f"     {steady.label}: median {statistics.median(ms):.2f} ms, p99 {p99(ms):.2f} ms, "
            f"max {max(ms):.2f} ms; {steady.crossed} stays crossed meanwhile"
        )
    print(f"   3. plan of stuck()'s query for status {EXPLAINED}")
    print_plan("before the first check", run.plan_first)
    for steady in run.steady:
        print_plan(f"steady, {steady.label}", steady.plan)


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the summary table: a value per backend, and the goal if there is one."""

    measure: str
    values: tuple[str, ...]
    goal: str = ""
    met: bool | None = None


def summary(runs: Sequence[Run]) -> list[Row]:
    """The table's rows."""

    def each(pick: Callable[[Run], str]) -> tuple[str, ...]:
        return tuple(pick(run) for run in runs)

    def series(run: Run, index: int) -> Steady | None:
        return run.steady[index] if index < len(run.steady) else None

    def timing(index: int, pick: Callable[[Sequence[float]], float]) -> tuple[str, ...]:
        found = (series(run, index) for run in runs)
        return tuple("-" if s is None else f"{pick(s.ms):.2f}" for s in found)

    exact = all(run.reported == run.expected == run.events == run.deliveries for run in runs)
    fast = all(p99(s.ms) <= GOAL_MS for run in runs for s in run.steady)
    indexed = all(index_used(plan) for run in runs for plan in plans(run))
    rows = [
        Row("watched orders", each(lambda r: f"{r.orders}")),
        Row("load (INSERT executemany), s", each(lambda r: f"{r.load_seconds:.1f}")),
        Row(
            "first check: stays reported / expected",
            each(lambda r: f"{r.reported}/{r.expected}"),
            "all, once",
            met=exact,
        ),
        Row("first check: rounds", each(lambda r: f"{len(r.rounds)}")),
        Row("first check: total, s", each(lambda r: f"{sum(x.total for x in r.rounds):.2f}")),
        Row(
            "first check: per stay, ms",
            each(lambda r: f"{1000 * sum(x.total for x in r.rounds) / max(r.reported, 1):.3f}"),
        ),
        Row(
            "first check: longest report_stuck(), s",
            each(lambda r: f"{max(x.report for x in r.rounds):.2f}"),
        ),
        Row("steady stuck(): median, ms", timing(0, statistics.median)),
        Row("steady stuck(): p99, ms", timing(0, p99), f"<= {GOAL_MS:.0f}", met=fast),
    ]
    if any(len(run.steady) > 1 for run in runs):
        rows += [
            Row("  after VACUUM: median, ms", timing(1, statistics.median)),
            Row("  after VACUUM: p99, ms", timing(1, p99), f"<= {GOAL_MS:.0f}", met=fast),
        ]
    rows.append(
        Row(
            f"plans use {INDEX.removeprefix('ix_watched_orders_')}",
            each(lambda r: "/".join("yes" if index_used(p) else "no" for p in plans(r))),
            "every plan",
            met=indexed,
        )
    )
    return rows


def plans(run: Run) -> list[list[str]]:
    """The run's plans in order: before the first check, then each steady series'."""
    return [run.plan_first, *(steady.plan for steady in run.steady)]


def print_table(runs: Sequence[Run], rows: Sequence[Row]) -> None:
    """The summary: one column per backend."""
    names = "".join(f"{run.backend:>12}" for run in runs)
    print(f"\n{'measure':<40}{names}  {'goal':<18} met")
    for row in rows:
        values = "".join(f"{value:>12}" for value in row.values)
        met = "" if row.met is None else ("yes" if row.met else "NO")
        print(f"{row.measure:<40}{values}  {row.goal:<18} {met}")


# -- main ------------------------------------------------------------------------------------


def sqlite_run(orders: int) -> Run:
    """The SQLite file in a temporary folder."""
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'alerts.db'}"
        return asyncio.run(measure("sqlite", url, orders))


def postgresql_run(orders: int) -> Run:
    """A database cloned from the throwaway cluster's migrated template."""
    with running_cluster() as cluster:
        print(f"\n(PostgreSQL cluster in {cluster.folder}, port {cluster.port})", flush=True)
        return asyncio.run(measure("postgresql", cluster.clone(), orders))


def main() -> None:
    """Run the chosen backends, print the details and one table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--orders", type=int, default=100_000, help="watched orders")
    parser.add_argument(
        "--backend",
        choices=("sqlite", "postgresql", "both"),
        default="both",
        help="the databases to run on",
    )
    args = parser.parse_args()
    began = time.monotonic()
    # Run with -m, argv[0] is the file's path: say how it was started.
    how = ["-m", __spec__.name] if __spec__ is not None else sys.argv[:1]
    print(f"command: {shlex.join([sys.executable, *how, *sys.argv[1:]])}")
    thresholds = ", ".join(f"{s} {t.days} d" for s, t in THRESHOLDS.items())
    print(
        f"{os.cpu_count()} CPUs; SQLite {sqlite3.sqlite_version}; {args.orders} orders, 14 "
        f"statuses alike, stays begun over the last {SPREAD.days} days; thresholds: {thresholds}"
    )
    runs = []
    if args.backend in {"sqlite", "both"}:
        runs.append(sqlite_run(args.orders))
    if args.backend in {"postgresql", "both"}:
        runs.append(postgresql_run(args.orders))
    print_table(runs, summary(runs))
    print(f"\nwhole benchmark: {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
