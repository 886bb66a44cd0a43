"""API benchmark: ``GET /api/v1/orders/{id}``, the order page, ``?q=<customer>``, the board,
the stuck page and ``/changes`` over 100,000 watched orders and 1,000,000 snapshots on SQLite,
served by ``tracker serve``; then the polling rate of ``tracker run`` alone and while a client
reads its API as fast as it can (``--pages-only`` skips that part).

Run with ``make bench`` (or ``python benchmarks/bench_api.py [--orders N] [--requests N]``).
The server, the simulated upstream and this client are separate processes, so the CPU seconds
printed are the server's own. ``--plans postgresql`` (or ``sqlite``) prints instead the query
plans of the search ``q`` over the same orders (on a throwaway PostgreSQL cluster for the
former, as the tests start one).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import event, insert, text

from tracker.config import PollingSettings
from tracker.sinks.render import event_body
from tracker.store import Store, upgrade
from tracker.store.db import connect
from tracker.store.packing import pack_body
from tracker.store.tables import deliveries, snapshots, transitions, watched_orders

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a file (``make bench``), not with ``-m``
    sys.path.insert(0, str(ROOT))

from benchmarks.common import steady_simulator, sync_engine, tracker_executable  # noqa: E402

TOKEN = "nom_bench_token"  # noqa: S105 - the simulator's throwaway token
API_TOKEN = "bench-read-token-4d2c9a7e"  # noqa: S105 - this run's throwaway API token
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
#: Each order's snapshots; the status moves on at these (0-based) ones: three transitions.
SNAPSHOTS = 10
MOVES = {3: 1, 6: 2, 9: 3}
STATUSES = ("waiting", "ordered", "checked", "installation_planning")
#: Each transition is delivered to both.
SINKS = ("ops", "audit")
#: Orders per customer: a search by customer finds this many.
PER_CUSTOMER = 2
#: Orders per transaction while loading.
LOAD_CHUNK = 10_000
#: The daemon's request budget, and the simulator's limit (429 above it: should never happen).
BUDGET = 20
RATE_LIMIT = 2 * BUDGET
#: Orders the simulator serves: more than the budget polls in the whole run, so it is the limit.
POLL_ORDERS = 3000
#: Concurrent API readers while the daemon polls.
READERS = 2
GOAL_P99_MS = 50.0


def ident(prefix: str, seed: int) -> str:
    """A stable id like the provider's: ``prefix`` and 24 lower-case letters and digits."""
    digest = hashlib.blake2b(f"{prefix}{seed}".encode(), digest_size=24).digest()
    return prefix + "".join(ALPHABET[b % len(ALPHABET)] for b in digest)


def customer_of(index: int) -> str:
    """The customer of the ``index``-th loaded order."""
    return ident("cus_", index // PER_CUSTOMER)


# -- loading ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Rows:
    """The rows of one chunk of orders, table by table."""

    orders: list[dict[str, Any]] = field(default_factory=list)
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    transitions: list[dict[str, Any]] = field(default_factory=list)
    deliveries: list[dict[str, Any]] = field(default_factory=list)


def order_rows(index: int, now: datetime, rows: Rows, *, history: bool = True) -> None:
    """One order's rows: its snapshots (bodies packed as the store packs them), transitions
    and deliveries (unless not ``history``), and its watched row as the last poll left it
    (active, due in a month)."""
    order_id = ident("prdo_", index)
    customer, subscription = customer_of(index), ident("sub_", index)
    created = now - timedelta(days=180) + timedelta(seconds=index)
    body = {
        "object": "meter_order",
        "id": order_id,
        "subscription": subscription,
        "customer": customer,
        "provider": "energy-metering",
        "status": STATUSES[0],
        "created_at": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "updated_at": "",
    }
    status, since = STATUSES[0], created
    for k in range(SNAPSHOTS if history else 0):
        at = created + timedelta(hours=6 * k)
        snapshot_id = index * SNAPSHOTS + k + 1
        previous, status = status, STATUSES[MOVES.get(k, STATUSES.index(status))]
        raw = json.dumps(body | {"status": status, "updated_at": at.strftime("%Y-%m-%dT%H:%M:%SZ")})
        rows.snapshots.append(
            {"id": snapshot_id, "order_id": order_id, "observed_at": at, "body": pack_body(raw)}
        )
        if k not in MOVES:
            continue
        since = at
        event_id = ident("evt_", snapshot_id)
        rows.transitions.append(
            {
                "event_id": event_id,
                "order_id": order_id,
                "from_status": previous,
                "to_status": status,
                "kind": "forward",
                "skipped": "",
                "detected_at": at,
                "snapshot_id": snapshot_id,
                "payload": event_body(
                    event_id=event_id,
                    order_id=order_id,
                    from_status=previous,
                    to_status=status,
                    detected_at=at,
                    order_raw=raw,
                ),
            }
        )
        rows.deliveries += [
            {
                "event_id": event_id,
                "sink": sink,
                "state": "delivered",
                "attempts": 1,
                "created_at": at,
                "next_attempt_at": at,
                "last_attempt_at": at,
                "last_status": 200,
                "delivered_at": at,
            }
            for sink in SINKS
        ]
    last = created + timedelta(hours=6 * (SNAPSHOTS - 1))
    rows.orders.append(
        {
            "order_id": order_id,
            "active": True,
            "source": "cli",
            "added_at": created,
            "status": status,
            "next_poll_at": now + timedelta(days=30),
            "last_polled_at": now,
            "last_success_at": now,
            "last_change_at": last,
            "consecutive_failures": 0,
            "status_since": since,
            "customer": customer,
            "subscription": subscription,
        }
    )


def load(url: str, orders: int, *, history: bool = True) -> float:
    """Migrate and insert ``orders`` orders (with their histories unless not ``history``) in
    big transactions, through the store's tables; returns the seconds it took."""
    upgrade(url)
    now = datetime.now(UTC)
    started = time.perf_counter()
    with sync_engine(url) as engine:
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _fast_sqlite)
        for start in range(0, orders, LOAD_CHUNK):
            rows = Rows()
            for index in range(start, min(start + LOAD_CHUNK, orders)):
                order_rows(index, now, rows, history=history)
            with engine.begin() as conn:
                conn.execute(insert(watched_orders), rows.orders)
                if history:
                    conn.execute(insert(snapshots), rows.snapshots)
                    conn.execute(insert(transitions), rows.transitions)
                    conn.execute(insert(deliveries), rows.deliveries)
        if engine.dialect.name == "postgresql":  # as autovacuum would soon; SQLite: never
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("VACUUM ANALYZE"))
    return time.perf_counter() - started


def _fast_sqlite(dbapi_connection: Any, _record: Any) -> None:
    """Loading only: what a crash could lose here is thrown away anyway."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=OFF")
    cursor.close()


# -- plans -----------------------------------------------------------------------------------


async def plans(url: str, orders: int) -> list[tuple[str, list[str]]]:
    """The plan of each kind of search ``watched_page`` makes, as the store sends it."""
    engine = connect(url)
    store = Store(engine)
    sent: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, parameters))

    last = ident("prdo_", orders - 1)
    searches: list[tuple[str, dict[str, Any]]] = [
        ("q = a customer", {"q": customer_of(orders // 2)}),
        ("q = a subscription", {"q": ident("sub_", 7)}),
        ("q = a long order id prefix", {"q": last[:9]}),
        ("q = 'prdo_' (every order)", {"q": "prdo_"}),
        (
            "q = a customer, status and a cursor",
            {"q": customer_of(8), "status": "waiting", "after": "prdo_"},
        ),
        ("no q (for comparison)", {}),
    ]
    explained: list[tuple[str, list[str]]] = []
    statements: list[str] = []
    sqlite = engine.dialect.name == "sqlite"
    explain = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) "
    try:
        for title, params in searches:
            sent.clear()
            event.listen(engine.sync_engine, "before_cursor_execute", capture)
            try:
                found = await store.orders.page(limit=51, **params)
            finally:
                event.remove(engine.sync_engine, "before_cursor_execute", capture)
            [(statement, parameters)] = sent
            statements.append(" ".join(statement.split()))
            async with engine.connect() as conn:
                result = await conn.exec_driver_sql(explain + statement, parameters)
                plan = [str(row[-1]) for row in result]
            explained.append((f"{title}: {len(found)} found", plan))
        explained.insert(0, ("statement (q = a customer)", statements[:1]))
    finally:
        await store.close()
    return explained


def print_plans(backend: str, orders: int) -> None:
    """Load ``orders`` watched orders (no histories) on ``backend`` and print the plans."""

    def show(url: str) -> None:
        print(f"loaded {orders:,} watched orders in {load(url, orders, history=False):.1f} s")
        for title, plan in asyncio.run(plans(url, orders)):
            print(f"\n{title}")
            for line in plan:
                print(f"    {line}")

    if backend == "postgresql":
        from tests.postgres import running_cluster  # noqa: PLC0415 - only for this mode

        with running_cluster() as cluster:
            show(cluster.clone())
    else:
        with tempfile.TemporaryDirectory() as folder:
            show(f"sqlite:///{Path(folder) / 'plans.db'}")


# -- serving and measuring -------------------------------------------------------------------


def free_port() -> int:
    """A loopback port free right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def write_config(path: Path, url: str, port: int, upstream: str | None = None) -> Path:
    """A configuration for ``tracker serve`` (or ``run``, with ``upstream``)."""
    lines = [
        "[database]",
        f'url = "{url}"',
        "[log]",
        'format = "json"',
        'level = "warning"',
        "[http]",
        f'listen = "127.0.0.1:{port}"',
        "[[http.users]]",
        'name = "bench"',
        f'token = "{API_TOKEN}"',
        'role = "read"',
        # Stuck targets for the stuck page and the board's panel (the loaded orders sit in
        # their last status for days: many of them are stuck).
        "[alerts.stuck]",
        'ordered = "2d"',
        'checked = "2d"',
        'installation_planning = "3d"',
    ]
    if upstream is not None:
        lines += [
            "[upstream]",
            f'base_url = "{upstream}"',
            f'token = "{TOKEN}"',
            f"requests_per_second = {BUDGET}",
            "max_concurrency = 8",
            "[polling]",
            'interval = "1h"',
        ]
        if "sweep" in PollingSettings.model_fields:
            # One request per order, so that the budget is the limit: list pages would poll
            # the simulator's few customers' orders in a handful of requests.
            lines.append('sweep = "ids"')
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Server:
    """A ``tracker`` process serving HTTP on ``base``."""

    process: subprocess.Popen[bytes]
    base: str

    def cpu(self) -> float:
        """CPU seconds (user + system) the process has used so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """SIGTERM, as an operator stops it."""
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start(command: str, config: Path, port: int, ready: str, log: Path) -> Server:
    """``tracker COMMAND --config CONFIG``, once ``ready`` answers 200."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [tracker_executable(), command, "--config", str(config)], stdout=out, stderr=out
        )
    server = Server(process, f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"tracker {command} ended: {log.read_text()[-2000:]}")
        try:
            if httpx.get(server.base + ready, timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.stop()
    raise SystemExit(f"tracker {command} did not get ready: {log.read_text()[-2000:]}")


@dataclass(frozen=True, slots=True)
class Timed:
    """Latencies of one series of requests, in seconds, and what it cost the server."""

    latencies: list[float]
    cpu: float = 0.0
    failures: int = 0

    @property
    def median_ms(self) -> float:
        """The median latency in ms."""
        return 1000 * statistics.median(self.latencies)

    @property
    def p99_ms(self) -> float:
        """The 99th percentile latency in ms."""
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]

    @property
    def cpu_per_1000(self) -> float:
        """Server CPU seconds per 1,000 requests."""
        return 1000 * self.cpu / len(self.latencies)


def timed(server: Server, paths: Sequence[str]) -> Timed:
    """GET each path once, one after the other, on one keep-alive connection."""
    latencies: list[float] = []
    failures = 0
    with httpx.Client(base_url=server.base, headers=AUTH, timeout=30) as client:
        for path in paths[:20]:  # warm: connection, caches, the server's first imports
            client.get(path)
        before = server.cpu()
        for path in paths:
            began = time.perf_counter()
            answer = client.get(path)
            latencies.append(time.perf_counter() - began)
            failures += answer.status_code != 200
        cpu = server.cpu() - before
    return Timed(latencies, cpu, failures)


def page_served(server: Server, ids: Sequence[str]) -> bool:
    """Whether ``GET /orders/{id}`` answers for watched orders (404 for all: not built yet)."""
    with httpx.Client(base_url=server.base, headers=AUTH, timeout=30) as client:
        return any(client.get(f"/orders/{order_id}").status_code != 404 for order_id in ids[:3])


def readers(server: Server, ids: Sequence[str], seconds: float) -> Timed:
    """:data:`READERS` clients reading random orders back to back for ``seconds``."""
    latencies: list[float] = []
    failures: list[int] = []
    deadline = time.monotonic() + seconds

    def read(seed: int) -> None:
        pick = random.Random(seed).choice
        mine, failed = [], 0
        with httpx.Client(base_url=server.base, headers=AUTH, timeout=30) as client:
            while time.monotonic() < deadline:
                began = time.perf_counter()
                answer = client.get(f"/api/v1/orders/{pick(ids)}")
                mine.append(time.perf_counter() - began)
                failed += answer.status_code != 200
        latencies.extend(mine)
        failures.append(failed)

    before = server.cpu()
    threads = [threading.Thread(target=read, args=(n,)) for n in range(READERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Timed(latencies, server.cpu() - before, sum(failures))


def stats(upstream: str) -> dict[str, Any]:
    """The simulator's ``/_stats``."""
    with urllib.request.urlopen(f"{upstream}/_stats", timeout=10) as answer:  # noqa: S310
        found: dict[str, Any] = json.load(answer)
        return found


@dataclass(frozen=True, slots=True)
class Rate:
    """Orders the simulator answered per second over a window, and its 429s."""

    per_second: float
    requests_per_second: float
    rate_limited: int
    daemon_cpu: float


def polled(upstream: str, server: Server, during: Callable[[], Any]) -> tuple[Rate, Any]:
    """The polling rate while ``during`` runs (it returns when the window is over)."""

    def answered(seen: dict[str, Any]) -> int:
        return int(seen["id_requests"]) + int(seen["items_served"])

    first, cpu, began = stats(upstream), server.cpu(), time.monotonic()
    result = during()
    last, wall = stats(upstream), time.monotonic() - began
    rate = Rate(
        per_second=(answered(last) - answered(first)) / wall,
        requests_per_second=(last["requests"] - first["requests"]) / wall,
        rate_limited=last["rate_limited"] - first["rate_limited"],
        daemon_cpu=server.cpu() - cpu,
    )
    return rate, result


def due_now(url: str, ids: Sequence[str]) -> None:
    """Watch the simulator's orders, due now."""
    now = datetime.now(UTC)
    with sync_engine(url) as engine, engine.begin() as conn:
        conn.execute(
            insert(watched_orders),
            [
                {
                    "order_id": order_id,
                    "active": True,
                    "source": "cli",
                    "added_at": now,
                    "next_poll_at": now,
                    "consecutive_failures": 0,
                }
                for order_id in ids
            ],
        )


@dataclass
class Results:
    """What was measured, for the table."""

    rows: list[tuple[str, str, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, what: str, series: Timed, goal: str = "") -> None:
        """A row of latencies."""
        failed = f", {series.failures} not 200" if series.failures else ""
        self.rows.append(
            (
                what,
                f"{series.median_ms:.1f}",
                f"{series.p99_ms:.1f}",
                f"{len(series.latencies)}{failed}; {series.cpu_per_1000:.2f} CPU s/1000 {goal}",
            )
        )


def measure(
    folder: Path, orders: int, requests: int, window: float, *, pages_only: bool = False
) -> Results:
    """Load, serve and read; then poll alone and under readers."""
    url = f"sqlite:///{folder / 'bench.db'}"
    results = Results()
    print(f"loading {orders:,} orders, {orders * SNAPSHOTS:,} snapshots ...", flush=True)
    seconds = load(url, orders)
    results.notes.append(
        f"loaded {orders:,} orders, {orders * SNAPSHOTS:,} snapshots, "
        f"{orders * len(MOVES):,} transitions, {orders * len(MOVES) * len(SINKS):,} deliveries "
        f"in {seconds:.0f} s ({(folder / 'bench.db').stat().st_size / 2**20:.0f} MiB)"
    )
    pick = random.Random(7)
    ids = [ident("prdo_", pick.randrange(orders)) for _ in range(requests)]
    customers = [customer_of(pick.randrange(orders)) for _ in range(requests // 2)]

    port = free_port()
    config = write_config(folder / "serve.toml", url, port)
    server = start("serve", config, port, "/healthz", folder / "serve.log")
    try:
        print("tracker serve: reading ...", flush=True)
        by_id = timed(server, [f"/api/v1/orders/{i}" for i in ids])
        results.add("GET /api/v1/orders/{id}", by_id, f"(goal p99 <= {GOAL_P99_MS:.0f} ms)")
        if page_served(server, ids):
            pages = timed(server, [f"/orders/{i}" for i in ids[: requests // 2]])
            results.add("GET /orders/{id} (page)", pages)
        else:
            results.notes.append("order page: not yet served (GET /orders/{id} answers 404)")
        searched = timed(server, [f"/api/v1/orders?q={c}" for c in customers])
        results.add("GET /api/v1/orders?q=<customer>", searched)
        for name, path in (("board", "/"), ("stuck page", "/stuck"), ("changes", "/changes")):
            page = timed(server, [path] * (requests // 4))
            results.add(f"GET {path} ({name})", page, f"(goal p99 <= {GOAL_P99_MS:.0f} ms)")
    finally:
        server.stop()
    if pages_only:
        return results

    print(f"tracker run: polling {window:.0f} s alone, {window:.0f} s under readers ...")
    simulator, upstream, sim_ids = steady_simulator(
        POLL_ORDERS, TOKEN, "--rate-limit", str(RATE_LIMIT)
    )
    try:
        due_now(url, sim_ids)
        port = free_port()
        config = write_config(folder / "run.toml", url, port, upstream)
        daemon = start("run", config, port, "/readyz", folder / "run.log")
        try:
            time.sleep(3)  # past the first ticks: the budget's steady pace
            alone, _ = polled(upstream, daemon, lambda: time.sleep(window))
            loaded, read = polled(upstream, daemon, lambda: readers(daemon, ids, window))
        finally:
            daemon.stop()
    finally:
        simulator.terminate()
        simulator.wait()
    results.add(f"GET /api/v1/orders/{{id}} under tracker run ({READERS} readers)", read)
    drop = 100 * (loaded.per_second / alone.per_second - 1)
    results.notes += [
        f"polling (budget {BUDGET} req/s, {POLL_ORDERS:,} due orders): alone "
        f"{alone.per_second:.2f} polls/s ({alone.requests_per_second:.2f} req/s, "
        f"{alone.rate_limited} answered 429, daemon {alone.daemon_cpu / window:.2f} CPU s/s)",
        f"polling under {READERS} readers: {loaded.per_second:.2f} polls/s "
        f"({loaded.requests_per_second:.2f} req/s, {loaded.rate_limited} answered 429, daemon "
        f"{loaded.daemon_cpu / window:.2f} CPU s/s): {drop:+.1f}% against alone",
        f"readers meanwhile: {len(read.latencies) / window:.0f} req/s; the daemon's CPU beyond "
        f"polling: {1000 * (loaded.daemon_cpu - alone.daemon_cpu) / len(read.latencies):.2f} "
        "s per 1000 API requests",
    ]
    return results


def print_table(results: Results) -> None:
    """The results as a small table, then the notes."""
    head = ("request", "median ms", "p99 ms", "requests; server CPU")
    width = [max(len(row[i]) for row in [head, *results.rows]) for i in range(4)]
    print()
    for row in [head, tuple("-" * w for w in width), *results.rows]:
        print("  ".join(cell.ljust(width[i]) for i, cell in enumerate(row)).rstrip())
    print()
    for note in results.notes:
        print(note)


def main() -> None:
    """Measure once and print the numbers (or the plans)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--orders", type=int, default=100_000, help="watched orders")
    parser.add_argument("--requests", type=int, default=2000, help="timed requests per route")
    parser.add_argument("--window", type=float, default=20.0, help="seconds per polling window")
    parser.add_argument(
        "--plans", choices=("sqlite", "postgresql"), help="print the search's query plans only"
    )
    parser.add_argument(
        "--pages-only", action="store_true", help="time the reads only, not the polling rate"
    )
    args = parser.parse_args()
    how = ["-m", __spec__.name] if __spec__ is not None else sys.argv[:1]
    print(f"command: {shlex.join([sys.executable, *how, *sys.argv[1:]])}", flush=True)
    began = time.monotonic()
    if args.plans is not None:
        print_plans(args.plans, args.orders)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-api-") as folder:
            print_table(
                measure(
                    Path(folder),
                    args.orders,
                    args.requests,
                    args.window,
                    pages_only=args.pages_only,
                )
            )
    print(f"(took {time.monotonic() - began:.0f} s)")


if __name__ == "__main__":
    main()
