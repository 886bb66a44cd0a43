"""Polling benchmark: polls/s, CPU per poll against a bare httpx client, peak memory, DB size.

Run with ``make bench`` (or ``python benchmarks/bench_poll.py [--sizes 500 5000]``). Each size
runs in its own process so that its peak RSS is its own; the simulator runs in another process
so that its CPU is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import update

from tracker.app import open_polling
from tracker.clock import utc_now
from tracker.config import LogSettings, Settings
from tracker.logs import configure as configure_logs
from tracker.service import open_service
from tracker.store.tables import watched_orders

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a file (``make bench``), not with ``-m``
    sys.path.insert(0, str(ROOT))

from benchmarks.common import steady_simulator  # noqa: E402 - needs the root on the path

TOKEN = "nom_bench_token"  # noqa: S105 - the simulator's throwaway token
CONCURRENCY = 8
ROUNDS = 3


def start_simulator(orders: int) -> tuple[subprocess.Popen[str], str, list[str]]:
    """The simulated upstream in its own process, with ``orders`` orders that never change."""
    return steady_simulator(orders, TOKEN)


def settings(url: str, database: Path, rate: float) -> Settings:
    """A daemon configuration against the simulator."""
    return Settings.model_validate(
        {
            "upstream": {
                "base_url": url,
                "token": TOKEN,
                "requests_per_second": rate,
                "max_concurrency": CONCURRENCY,
                "timeout": 10,
            },
            "database": {"url": f"sqlite:///{database}"},
            "polling": {"interval": "1h"},
            "log": {"level": "warning"},
        }
    )


async def bare_httpx(url: str, ids: list[str]) -> float:
    """CPU seconds a bare httpx client spends to GET and parse every order once."""
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    headers = {"X-API-Version": "2026-01-29.edison", "Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits) as client:
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(order_id: str) -> None:
            async with gate:
                response = await client.get(f"/meter-orders/{order_id}")
                response.raise_for_status()
                response.json()

        await asyncio.gather(*(one(i) for i in ids[:50]))  # warm the connections
        started = time.process_time()
        await asyncio.gather(*(one(i) for i in ids))
        return time.process_time() - started


async def daemon_pass(config: Settings, expected: int) -> tuple[float, float]:
    """Make every order due, run the daemon until it polled each once: (CPU s, wall s)."""
    async with open_service(config) as polling:
        engine = polling.store._engine
        async with engine.begin() as conn:
            await conn.execute(update(watched_orders).values(next_poll_at=utc_now()))
        daemon = polling.daemon()
        stop = asyncio.Event()
        cpu, wall = time.process_time(), time.monotonic()
        running = asyncio.create_task(daemon.run(stop))
        while daemon.polls < expected:  # noqa: ASYNC110 - samples the daemon's own counter
            await asyncio.sleep(0.02)
        stop.set()
        await running
        return time.process_time() - cpu, time.monotonic() - wall


async def measure(size: int) -> dict[str, Any]:
    """One size: warm pass, steady pass, bare client, sizes."""
    simulator, url, ids = start_simulator(size)
    try:
        with tempfile.TemporaryDirectory() as folder:
            database = Path(folder) / "bench.db"
            config = settings(url, database, rate=1_000_000)
            async with open_polling(config) as polling:
                await polling.store.orders.watch(ids, source="cli", now=utc_now())
            await daemon_pass(config, size)  # first snapshots
            size_after_first = _db_bytes(database)
            async with open_polling(config) as polling:
                counts_first = await polling.store.reports.counts()
            # Interleaved rounds, medians kept: this machine is noisy.
            cpus, walls, bares, sizes = [], [], [], []
            for _ in range(ROUNDS):
                cpu, wall = await daemon_pass(config, size)
                cpus.append(cpu)
                walls.append(wall)
                sizes.append(_db_bytes(database))
                bares.append(await bare_httpx(url, ids))
            cpu, wall, bare = (statistics.median(x) for x in (cpus, walls, bares))
            async with open_polling(config) as polling:
                counts_steady = await polling.store.reports.counts()
            return {
                "orders": size,
                "polls_per_second": size / wall,
                "cpu_ms_per_poll": 1000 * cpu / size,
                "bare_cpu_ms_per_get": 1000 * bare / size,
                "cpu_ratio": cpu / bare,
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "db_bytes_after_first_pass": size_after_first,
                "db_bytes_after_steady_pass": sizes[0],
                "db_bytes_after_second_steady_pass": sizes[-1],
                "snapshots_added_by_steady_pass": counts_steady["snapshots"]
                - counts_first["snapshots"],
            }
    finally:
        simulator.terminate()
        simulator.wait()


async def budget(rate: float, orders: int, seconds: float) -> dict[str, Any]:
    """With more due than the budget allows, how fast does the upstream see requests?"""
    simulator, url, ids = start_simulator(orders)
    try:
        with tempfile.TemporaryDirectory() as folder:
            config = settings(url, Path(folder) / "budget.db", rate=rate)
            async with open_service(config) as polling:
                await polling.store.orders.watch(ids, source="cli", now=utc_now())
                stop = asyncio.Event()
                asyncio.get_running_loop().call_later(seconds, stop.set)
                await polling.daemon().run(stop)
        async with httpx.AsyncClient(base_url=url) as client:
            stats = (await client.get("/_stats")).json()
        return {"budget": rate, **stats}
    finally:
        simulator.terminate()
        simulator.wait()


def _db_bytes(database: Path) -> int:
    """The database file itself; the WAL is checkpointed into it when the store closes."""
    return database.stat().st_size


def main() -> None:
    """Run every size in a child process and print one table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="*", default=[500, 5000])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--budget-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    configure_logs(LogSettings(level="warning"))
    if args.one:
        print(json.dumps(asyncio.run(measure(args.one))))
        return
    if args.budget_only:
        print(json.dumps(asyncio.run(budget(rate=20, orders=400, seconds=10))))
        return
    rows = []
    for size in args.sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(size)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ},
        ).stdout
        rows.append(json.loads(out.splitlines()[-1]))
    for row in rows:
        print(
            f"{row['orders']:>6} orders: {row['polls_per_second']:7.0f} polls/s, "
            f"{row['cpu_ms_per_poll']:.3f} ms CPU/poll vs bare httpx "  # medians of ROUNDS
            f"{row['bare_cpu_ms_per_get']:.3f} ms (ratio {row['cpu_ratio']:.2f}), "
            f"peak RSS {row['peak_rss_mib']:.0f} MiB, "
            f"DB {row['db_bytes_after_first_pass'] / 1024:.0f} KiB after first pass -> "
            f"{row['db_bytes_after_steady_pass'] / 1024:.0f} KiB after an unchanged pass -> "
            f"{row['db_bytes_after_second_steady_pass'] / 1024:.0f} KiB after {ROUNDS - 1} more "
            f"(+{row['snapshots_added_by_steady_pass']} snapshots)"
        )
    if len(rows) >= 2:
        print(
            f"peak RSS ratio {rows[-1]['orders'] // rows[0]['orders']}x orders: "
            f"{rows[-1]['peak_rss_mib'] / rows[0]['peak_rss_mib']:.2f}x"
        )
    out = subprocess.run(
        [sys.executable, __file__, "--budget-only"], capture_output=True, text=True, check=True
    ).stdout
    b = json.loads(out.splitlines()[-1])
    print(
        f"budget {b['budget']} req/s with 400 orders due: {b['rate_over_whole_seconds']:.2f} req/s "
        f"over whole seconds ({100 * b['rate_over_whole_seconds'] / b['budget']:.1f}% of budget), "
        f"busiest one-second window {b['busiest_second']}, 429s {b['rate_limited']}"
    )


if __name__ == "__main__":
    main()
