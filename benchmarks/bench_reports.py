"""The reports at 1,000,000 transitions: the query times and the page's and API's latency.

Fills a SQLite file (and, with ``--postgresql URL``, that database) with ``--transitions``
transitions (default 1,000,000) over ``--orders`` orders spread across two years, and their
stays, written in bulk the way ``Polls.record`` writes them one at a time. Then it times each
query of the page's default period (the last twelve weeks) and of the whole history, and
serves the app on a loopback port to time ``GET /reports`` and ``GET /api/v1/reports/durations``
(p50 and p99 of ``--requests`` each, and the CPU time each request costs this process: the
server, its SQLite thread and the client). Numbers, not assertions.

    .venv/bin/python benchmarks/bench_reports.py [--transitions N] [--postgresql URL]
    .venv/bin/python benchmarks/bench_reports.py --database URL [--fill] [--pages-only]

``--database URL`` measures a database filled before (by ``--fill`` on a first run), so that the
code before and after a change can be timed on the same data beside each other.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, insert

from tracker.config import Address, HttpUser
from tracker.insight import Period, durations, flow, lead_times, over_target, weekly
from tracker.store import Store, connect, upgrade
from tracker.store.db import _SYNC_DRIVERS, _with_driver
from tracker.store.packing import pack_body
from tracker.store.tables import MICROSECOND, snapshots, stays, transitions, watched_orders
from tracker.web import Metrics, build_app, listening

NOW = datetime(2026, 12, 1, tzinfo=UTC)
SPAN = timedelta(days=730)
PROVIDERS = ("energy-metering", "metrify", "inexogy")
PATH = [
    "waiting",
    "ordered",
    "checked",
    "installation_planning",
    "installation_scheduled",
    "installation_waiting",
    "installation_finished",
    "installed",
    "activated",
]
TOKEN = "bench-reports-token-0123456789"  # noqa: S105 - a loopback test user
TARGETS = {"ordered": timedelta(days=14), "installation_planning": timedelta(days=21)}
BATCH = 20_000


def journey(rng: random.Random) -> list[str]:
    """A plausible order's statuses: mostly the main path, some blocks, returns, cancels."""
    steps = ["waiting", "ordered"]
    for status in PATH[2:]:
        roll = rng.random()
        if roll < 0.08:
            steps += ["blocked", steps[-1]]
        elif roll < 0.11:
            steps.append("cancelled")
            return steps
        steps.append(status)
    return steps


def fill(url: str, total: int, orders: int) -> int:
    """Write about ``total`` transitions (and their stays) in bulk; returns how many."""
    upgrade(url)
    engine = create_engine(_with_driver(url, _SYNC_DRIVERS))
    rng = random.Random(22)
    written = 0
    per_order = max(2, total // orders + 1)
    with engine.begin() as conn:
        order_rows, snap_rows, move_rows, stay_rows = [], [], [], []
        n = 0
        while written < total:
            order_id = f"prdo_bench{n:019d}"
            provider = PROVIDERS[n % 3]
            statuses = journey(rng)[: per_order + 1]
            start = NOW - SPAN + timedelta(seconds=rng.uniform(0, SPAN.total_seconds() * 0.9))
            times = [start]
            for _ in statuses[1:]:
                times.append(times[-1] + timedelta(hours=rng.expovariate(1 / 150)))
            order_rows.append(
                {
                    "order_id": order_id,
                    "active": True,
                    "source": "manual",
                    "added_at": start,
                    "consecutive_failures": 0,
                    "status": statuses[-1],
                }
            )
            body = {"id": order_id, "status": statuses[0], "provider": provider}
            snap_rows.append(
                {
                    "id": n + 1,
                    "order_id": order_id,
                    "observed_at": start,
                    "body": pack_body(json.dumps(body)),
                }
            )
            for i, status in enumerate(statuses):
                started = times[i] if i else None
                ended = times[i + 1] if i + 1 < len(statuses) else None
                stay_rows.append(
                    {
                        "order_id": order_id,
                        "status": status,
                        "provider": provider,
                        "started_at": started,
                        "seen_at": times[i],
                        "ended_at": ended,
                        "micros": (ended - started) // MICROSECOND if started and ended else None,
                        "next_status": statuses[i + 1] if ended else None,
                    }
                )
                if i:
                    move_rows.append(
                        {
                            "event_id": f"evt_b{written:012d}",
                            "order_id": order_id,
                            "from_status": statuses[i - 1],
                            "to_status": status,
                            "kind": "advance",
                            "skipped": "",
                            "detected_at": times[i],
                            "snapshot_id": n + 1,
                        }
                    )
                    written += 1
            n += 1
            if len(move_rows) >= BATCH or written >= total:
                for table, rows in (
                    (watched_orders, order_rows),
                    (snapshots, snap_rows),
                    (transitions, move_rows),
                    (stays, stay_rows),
                ):
                    if rows:
                        conn.execute(insert(table), rows)
                order_rows, snap_rows, move_rows, stay_rows = [], [], [], []
    engine.dispose()
    return written


def quantiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds."""
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return cuts[49] * 1000, cuts[98] * 1000


def cpu_seconds() -> float:
    """CPU time this process has used (all its threads: the server, SQLite's, the client)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def time_queries(store: Store) -> dict[str, Any]:
    """The best of five of each report's query, over twelve weeks and over the two years."""
    result: dict[str, Any] = {}
    default = Period(since=NOW - timedelta(weeks=12), until=NOW)
    whole = Period(since=NOW - SPAN, until=NOW)
    for label, period in (("12 weeks", default), ("2 years", whole)):
        for name, call in (
            ("durations", lambda p: durations(store, p, by=False)),
            ("durations by provider", lambda p: durations(store, p, by=True)),
            ("lead time", lambda p: lead_times(store, p, by=False)),
            ("flow", lambda p: flow(store, p, by=False)),
            ("weekly", lambda p: weekly(store, p)),
            ("over target", lambda p: over_target(store, p, TARGETS)),
        ):
            times = []
            for _ in range(5):
                began = time.perf_counter()
                await call(period)
                times.append(time.perf_counter() - began)
            result[f"query {name} ({label}) ms"] = round(min(times) * 1000, 1)
    return result


async def measure(url: str, requests: int, *, queries: bool = True) -> dict[str, Any]:
    """Time each query (unless not ``queries``), then the page and the API over a real
    loopback server: wall p50 and p99, and the median CPU time per request."""
    store = Store(connect(url))
    result: dict[str, Any] = {}
    try:
        if queries:
            result.update(await time_queries(store))
        users = [HttpUser.model_validate({"name": "bench", "token": TOKEN, "role": "read"})]
        app = build_app(store=store, metrics=Metrics(), users=users, targets=lambda: TARGETS)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        until = NOW.date().isoformat()
        async with (
            listening(app, Address("127.0.0.1", 0)) as base,
            httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as client,
        ):
            for label, path in (
                ("page /reports (12 weeks)", f"/reports?until={until}"),
                ("API durations (12 weeks)", f"/api/v1/reports/durations?until={until}"),
                (
                    "API durations by provider",
                    f"/api/v1/reports/durations?until={until}&by=provider",
                ),
                ("page /reports (2 years)", f"/reports?since=2024-12-01&until={until}"),
            ):
                count = max(2, requests // 10) if "2 years" in label else requests
                await client.get(path)  # the first request warms the caches
                samples, cpu = [], []
                for _ in range(count):
                    began, used = time.perf_counter(), cpu_seconds()
                    answer = await client.get(path)
                    samples.append(time.perf_counter() - began)
                    cpu.append(cpu_seconds() - used)
                    assert answer.status_code == 200, answer.text[:200]  # noqa: S101
                p50, p99 = quantiles(samples)
                result[f"{label} p50 ms"] = round(p50, 1)
                result[f"{label} p99 ms"] = round(p99, 1)
                result[f"{label} CPU median ms"] = round(statistics.median(cpu) * 1000, 1)
                result[f"{label} requests"] = count
    finally:
        await store.close()
    return result


def main() -> None:
    """Fill, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transitions", type=int, default=1_000_000)
    parser.add_argument("--orders", type=int, default=125_000)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--postgresql", metavar="URL", help="also an empty PostgreSQL database")
    parser.add_argument(
        "--database", metavar="URL", help="measure this database only (filled before, or --fill)"
    )
    parser.add_argument("--fill", action="store_true", help="fill --database first")
    parser.add_argument("--pages-only", action="store_true", help="skip the queries' timings")
    args = parser.parse_args()
    if args.database:
        if args.fill:
            print(f"{fill(args.database, args.transitions, args.orders):,} transitions written")
        print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
        found = asyncio.run(measure(args.database, args.requests, queries=not args.pages_only))
        for key, value in found.items():
            print(f"  {key}: {value}")
        print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
        return
    with tempfile.TemporaryDirectory() as folder:
        urls = [f"sqlite:///{Path(folder) / 'bench.db'}"]
        if args.postgresql:
            urls.append(args.postgresql)
        for url in urls:
            backend = url.split(":", 1)[0]
            began = time.perf_counter()
            written = fill(url, args.transitions, args.orders)
            print(
                f"{backend}: {written:,} transitions written in {time.perf_counter() - began:.0f} s"
            )
            for key, value in asyncio.run(measure(url, args.requests)).items():
                print(f"  {key}: {value}")


if __name__ == "__main__":
    main()
