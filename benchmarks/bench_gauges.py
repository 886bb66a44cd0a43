"""Gauges benchmark: what a ``/metrics`` scrape (and the board) reads of a large database.

A throwaway PostgreSQL cluster (as the tests start one, ``tests/postgres.py``) is filled with
``--orders`` watched orders (a tenth of them removed, one in a thousand stuck) and
``--deliveries`` deliveries (one in 5,000 pending, one in 7,919 dead), written by SQL, the
triggers keeping ``order_counts`` as they would for the daemon. Then:

- one fold of the counts' rows (``Tally.fold``: after such a bulk write, one row per order);
- ``Reports.board`` (the board's counts and ``/metrics``'s gauges), median and max of 20 reads;
- ``Reports.overview`` (``tracker status``, and what ``/metrics`` read before), of 5 reads.

Run it from the repository with its virtualenv::

    .venv/bin/python benchmarks/bench_gauges.py [--orders 1000000] [--deliveries 3000000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a file, not with ``-m``
    sys.path.insert(0, str(ROOT))

from tests.postgres import running_cluster  # noqa: E402 - needs the root on the path
from tracker.clock import utc_now  # noqa: E402
from tracker.model import STALE_AFTER  # noqa: E402
from tracker.store import Store, connect  # noqa: E402

FILL_ORDERS = """
INSERT INTO watched_orders (order_id, active, source, added_at, status, consecutive_failures,
  next_poll_at, last_success_at, stuck_at)
SELECT 'prdo_' || lpad(i::text, 24, '0'), i %% 10 <> 0, 'rule', now(),
  (ARRAY['waiting', 'ordered', 'checked', 'installation_planning', 'installed', 'activated'])
    [1 + i %% 6],
  0, now() + interval '1 day', now(), CASE WHEN i %% 1000 = 0 THEN now() END
FROM generate_series(1, %(orders)s) AS i
"""
FILL_DELIVERIES = """
INSERT INTO deliveries (event_id, sink, state, attempts, created_at, next_attempt_at)
SELECT 'evt_' || i, (ARRAY['hooks', 'mail'])[1 + i %% 2],
  CASE WHEN i %% 5000 = 0 THEN 'pending' WHEN i %% 7919 = 0 THEN 'dead' ELSE 'delivered' END,
  1, now() - make_interval(secs => i), now()
FROM generate_series(1, %(deliveries)s) AS i
"""


async def timed(read: Callable[[], Awaitable[object]], times: int) -> tuple[float, float]:
    """Median and max milliseconds of ``times`` reads, after three warm-up ones."""
    for _ in range(3):
        await read()
    spent = []
    for _ in range(times):
        began = time.perf_counter()
        await read()
        spent.append((time.perf_counter() - began) * 1e3)
    return statistics.median(spent), max(spent)


async def measure(url: str) -> None:
    """Fold once, then time the board's read and the overview."""
    store = Store(connect(url))
    try:
        began = time.perf_counter()
        folded = await store.tally.fold()
        print(f"one fold of {folded:,} rows of order_counts: {time.perf_counter() - began:.2f} s")
        stale = utc_now() - STALE_AFTER
        median, most = await timed(lambda: store.reports.board(stale_before=stale), 20)
        print(f"Reports.board (board, /metrics): median {median:.1f} ms, max {most:.1f} ms (20)")
        median, most = await timed(lambda: store.reports.overview(stale_before=stale), 5)
        print(f"Reports.overview (tracker status): median {median:.1f} ms, max {most:.1f} ms (5)")
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--deliveries", type=int, default=3_000_000)
    args = parser.parse_args()
    with running_cluster() as cluster:
        url = cluster.clone()
        began = time.perf_counter()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(FILL_ORDERS, {"orders": args.orders})
            conn.execute(FILL_DELIVERIES, {"deliveries": args.deliveries})
            conn.execute("VACUUM ANALYZE")
        print(
            f"PostgreSQL: {args.orders:,} orders and {args.deliveries:,} deliveries written in "
            f"{time.perf_counter() - began:.0f} s"
        )
        asyncio.run(measure(url))


if __name__ == "__main__":
    main()
