"""HTTP benchmark: ``/metrics`` over 100,000 watched orders on SQLite, and the polling rate of a
daemon that serves it, with and without a scraper.

Run with ``make bench`` (or ``python benchmarks/bench_http.py [--orders N] [--polls N]``). The
scraper is another process (urllib, as the Dockerfile's health check), so that its CPU is not
the daemon's; the simulator too. Every scrape here reads the database (no cache), the worst case.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import update

from tracker.clock import utc_now
from tracker.config import Address, LogSettings, Settings
from tracker.logs import configure as configure_logs
from tracker.service import Service, open_service
from tracker.store.tables import watched_orders
from tracker.web import Metrics, build_app, listening

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a file (``make bench``), not with ``-m``
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_alerts import load  # noqa: E402 - needs the root on the path
from benchmarks.common import steady_simulator, sync_engine  # noqa: E402

TOKEN = "nom_bench_token"  # noqa: S105 - the simulator's throwaway token
ROUNDS = 3
#: Scrapes ``URL`` COUNT times (0: until killed), one every EVERY seconds; prints the latencies.
SCRAPER = """
import itertools, json, sys, time, urllib.request as u
url, count, every = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
opener = u.build_opener(u.ProxyHandler({}))
times = []
for _ in range(count) if count else itertools.count():
    started = time.perf_counter()
    opener.open(url, timeout=30).read()
    times.append(time.perf_counter() - started)
    time.sleep(max(every - times[-1], 0))
print(json.dumps(times))
"""


async def scraper(url: str, count: int, every: float) -> asyncio.subprocess.Process:
    """The scraper in its own process."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", SCRAPER, url, str(count), str(every), stdout=asyncio.subprocess.PIPE
    )


async def latencies(url: str, count: int) -> list[float]:
    """``count`` scrapes back to back; their latencies in seconds."""
    process = await scraper(url, count, 0.0)
    out, _ = await process.communicate()
    found: list[float] = json.loads(out)
    return found


async def polling_rate(service: Service, ids: list[str]) -> float:
    """Make ``ids`` due and run a daemon until it polled each once: polls per second."""
    async with service.store._engine.begin() as conn:
        await conn.execute(
            update(watched_orders)
            .where(watched_orders.c.order_id.in_(ids))
            .values(next_poll_at=utc_now())
        )
    daemon = service.daemon()
    stop = asyncio.Event()
    started = time.monotonic()
    running = asyncio.create_task(daemon.run(stop))
    while daemon.polls < len(ids):  # noqa: ASYNC110 - samples the daemon's own counter
        await asyncio.sleep(0.01)
    wall = time.monotonic() - started
    stop.set()
    await running
    return len(ids) / wall


async def measure(orders: int, scrapes: int, polls: int) -> dict[str, Any]:
    """Load the orders, scrape, then poll alone and under scrapers in alternation."""
    simulator, upstream, ids = steady_simulator(polls, TOKEN)
    try:
        with tempfile.TemporaryDirectory() as folder:
            url = f"sqlite:///{Path(folder) / 'bench.db'}"
            load(url, orders)
            with sync_engine(url) as engine, engine.begin() as conn:  # only ours come due
                conn.execute(update(watched_orders).values(next_poll_at=None, active=True))
            settings = Settings.model_validate(
                {
                    "upstream": {
                        "base_url": upstream,
                        "token": TOKEN,
                        "requests_per_second": 1_000_000,
                        "max_concurrency": 8,
                    },
                    "database": {"url": url},
                    "polling": {"interval": "1h"},
                    "log": {"level": "warning"},
                }
            )
            metrics = Metrics(cache=0)
            async with open_service(settings, telemetry=metrics) as service:
                await service.store.orders.watch(ids, source="cli", now=utc_now())
                app = build_app(store=service.store, metrics=metrics)
                async with listening(app, Address("127.0.0.1", 0)) as base:
                    scraped = await latencies(f"{base}/metrics", scrapes)
                    rates: dict[str, list[float]] = {"alone": [], "1/s": [], "back to back": []}
                    await polling_rate(service, ids)  # warm
                    for _ in range(ROUNDS):
                        for mode, every in (("alone", None), ("1/s", 1.0), ("back to back", 0.0)):
                            process = None
                            if every is not None:
                                process = await scraper(f"{base}/metrics", 0, every)
                                await asyncio.sleep(0.5)  # its interpreter's start is not ours
                            rates[mode].append(await polling_rate(service, ids))
                            if process is not None:
                                process.kill()
                                await process.wait()
        ordered = sorted(scraped)
        return {
            "orders": orders,
            "scrapes": len(scraped),
            "median_ms": 1000 * statistics.median(scraped),
            "p99_ms": 1000 * ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))],
            "polls": polls,
            "rates": {mode: statistics.median(values) for mode, values in rates.items()},
        }
    finally:
        simulator.terminate()
        simulator.wait()


def main() -> None:
    """Measure once and print the numbers."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=100_000, help="watched orders")
    parser.add_argument("--scrapes", type=int, default=200, help="scrapes timed")
    parser.add_argument("--polls", type=int, default=2000, help="orders polled per pass")
    args = parser.parse_args()
    configure_logs(LogSettings(level="warning"))
    row = asyncio.run(measure(args.orders, args.scrapes, args.polls))
    print(
        f"/metrics over {row['orders']:,} watched orders (SQLite, every scrape reads the "
        f"database): median {row['median_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms "
        f"({row['scrapes']} scrapes; goal <= 100 ms)"
    )
    alone = row["rates"]["alone"]
    print(
        f"polling {row['polls']:,} orders (medians of {ROUNDS}): alone {alone:.0f} polls/s; "
        + "; ".join(
            f"scraped {mode} {rate:.0f} polls/s ({100 * (rate / alone - 1):+.1f}%)"
            for mode, rate in row["rates"].items()
            if mode != "alone"
        )
    )


if __name__ == "__main__":
    main()
