"""Simulator benchmark: an organisation of a million orders, its memory and its list pages.

Builds ``Organisation(1_000_000)`` in this process and serves it on a local port (real HTTP,
as the tracker asks it), on a clock the benchmark holds. Prints the build time, the process's
RSS, the time per unfiltered page of 100 (a whole-list read, first and last pages apart, to
show a page costs the same anywhere) and per ``filter[updated_at][gte]`` page after an hour of
changes at 0.1 % an hour.

Run it from the repository with its virtualenv::

    .venv/bin/python benchmarks/bench_simulator.py [--orders 1000000] [--pages 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a file (``make bench``), not with ``-m``
    sys.path.insert(0, str(ROOT))

from tracker.demo.organisation import Organisation, timestamp  # noqa: E402 - needs the root
from tracker.demo.serving import serve  # noqa: E402
from tracker.demo.simulator import API_VERSION, Simulator  # noqa: E402

TOKEN = "nom_bench_simulator_token"  # noqa: S105 - the simulator's throwaway token


def rss_mib() -> float:
    """This process's resident set size now, in MiB (from /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def timed_pages(
    client: httpx.AsyncClient, pages: int, params: dict[str, str]
) -> tuple[list[float], int]:
    """Read up to ``pages`` pages of a list; the seconds each took, and the items read."""
    took: list[float] = []
    items = 0
    cursor: str | None = None
    for _ in range(pages):
        began = time.perf_counter()
        paging = {"cursor": cursor} if cursor else {}
        answer = await client.get("/meter-orders", params={**params, **paging})
        took.append(time.perf_counter() - began)
        body = answer.json()
        items += len(body["items"])
        cursor = body["next_page"]
        if cursor is None:
            break
    return took, items


def ms(seconds: list[float]) -> str:
    """The mean of ``seconds`` in milliseconds."""
    return f"{1000 * sum(seconds) / max(len(seconds), 1):.2f} ms"


async def run(orders: int, pages: int) -> None:
    """Build, measure, serve, page."""
    before = rss_mib()
    began = time.perf_counter()
    organisation = Organisation(orders, change_share_per_hour=0.001)
    now, wall = [1000.0], time.time()  # clocks the benchmark holds: it moves them an hour
    simulator = Simulator(
        [],
        organisation=organisation,
        static_token=TOKEN,
        clock=lambda: now[0],
        wall_clock=lambda: wall + now[0] - 1000.0,
    )
    built = time.perf_counter() - began
    print(f"organisation of {orders:,} orders built in {built:.2f} s")
    print(f"RSS: {rss_mib():.0f} MiB (before building: {before:.0f} MiB)")
    async with (
        serve(simulator.app) as server,
        httpx.AsyncClient(
            base_url=server.url,
            headers={"Authorization": f"Bearer {TOKEN}", "X-API-Version": API_VERSION},
            trust_env=False,
        ) as client,
    ):
        took, items = await timed_pages(client, pages, {"limit": "100"})
        print(
            f"unfiltered: {len(took):,} pages ({items:,} items), {ms(took)} a page; "
            f"first 100 pages {ms(took[:100])}, last 100 {ms(took[-100:])}"
        )
        since = timestamp(wall + 1800)  # half an hour after the start
        now[0] += 3600  # an hour of changes at 0.1 %: about 1,000
        changed: list[float] = []
        found = 0
        for _ in range(20):
            took, items = await timed_pages(
                client, pages, {"limit": "100", "filter[updated_at][gte]": since}
            )
            changed += took
            found = items
        print(
            f"updated_at gte (last half hour): {found} items in {len(took)} pages, "
            f"{ms(changed)} a page (20 sweeps); {len(simulator.changes)} changes in the hour"
        )
    print(f"RSS after: {rss_mib():.0f} MiB")


def main() -> None:
    """Parse the arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--pages", type=int, default=10_000, help="pages of the whole-list read")
    args = parser.parse_args()
    asyncio.run(run(args.orders, args.pages))


if __name__ == "__main__":
    main()
