"""Delivery benchmark: deliveries/s to a local receiver, CPU per webhook against a bare POST.

Run with ``make bench`` (or ``python benchmarks/bench_deliver.py [--events N]``). The receiver
runs in its own process so that its CPU is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from sqlalchemy import insert
from starlette.requests import Request
from starlette.responses import Response

from tracker.clock import utc_now
from tracker.config import LogSettings, Settings
from tracker.demo.serving import catch_all
from tracker.demo.serving import serve as serve_locally
from tracker.logs import configure as configure_logs
from tracker.model import DeliveryState
from tracker.service import open_outbox
from tracker.sinks.render import event_body
from tracker.store import open_store
from tracker.store.tables import deliveries, snapshots, transitions, watched_orders

SECRET = "whsec_" + "YmVuY2htYXJrLXNpZ25pbmcta2V5LTMyLWJ5dGVzISE="
CONCURRENCY = 8
ORDER = {
    "object": "meter_order",
    "id": "prdo_bench",
    "subscription": "sub_x",
    "customer": "cus_x",
    "provider": "metrify",
    "status": "checked",
    "created_at": "2026-01-01T00:00:00Z",
    "updated_at": "2026-01-02T00:00:00Z",
}


async def serve() -> None:
    """The receiver: 204 to every request."""

    async def accept(_request: Request) -> Response:
        return Response(status_code=204)

    async with serve_locally(catch_all(accept)) as server:
        print(server.url, flush=True)
        await asyncio.Event().wait()


def settings(url: str, database: Path) -> Settings:
    """One webhook sink at the receiver."""
    return Settings.model_validate(
        {
            "database": {"url": f"sqlite:///{database}"},
            "delivery": {"max_concurrency": CONCURRENCY},
            "log": {"level": "warning"},
            "sinks": [{"name": "bench", "type": "webhook", "url": url, "secret": SECRET}],
        }
    )


async def seed(config: Settings, events: int) -> str:
    """Store ``events`` transitions, each with a pending delivery; returns one body."""
    now = utc_now()
    raw = json.dumps(ORDER)
    async with open_store(config.database.url) as store:
        engine = store._engine
        async with engine.begin() as conn:
            await conn.execute(
                insert(watched_orders).values(
                    order_id="prdo_bench",
                    active=True,
                    source="cli",
                    added_at=now,
                    consecutive_failures=0,
                )
            )
            await conn.execute(
                insert(snapshots).values(
                    id=1,
                    order_id="prdo_bench",
                    observed_at=now,
                    status="checked",
                    status_known=True,
                    provider="metrify",
                    provider_known=True,
                    fingerprint=0,
                    raw=raw,
                )
            )
            bodies = [
                event_body(
                    event_id=f"evt_bench{i:08d}",
                    order_id="prdo_bench",
                    from_status="ordered",
                    to_status="checked",
                    detected_at=now,
                    order_raw=raw,
                )
                for i in range(events)
            ]
            await conn.execute(
                insert(transitions),
                [
                    {
                        "event_id": f"evt_bench{i:08d}",
                        "order_id": "prdo_bench",
                        "from_status": "ordered",
                        "to_status": "checked",
                        "kind": "advance",
                        "skipped": "",
                        "detected_at": now,
                        "snapshot_id": 1,
                        "payload": body,
                    }
                    for i, body in enumerate(bodies)
                ],
            )
            await conn.execute(
                insert(deliveries),
                [
                    {
                        "event_id": f"evt_bench{i:08d}",
                        "sink": "bench",
                        "state": DeliveryState.PENDING,
                        "attempts": 0,
                        "created_at": now,
                        "next_attempt_at": now,
                    }
                    for i in range(events)
                ],
            )
    return bodies[0]


async def dispatch(config: Settings, events: int) -> tuple[float, float]:
    """Deliver everything pending: (CPU s, wall s)."""
    async with open_store(config.database.url) as store, open_outbox(config, store) as dispatcher:
        dispatcher.start()
        cpu, wall = time.process_time(), time.monotonic()
        await dispatcher.tick()
        while dispatcher.attempted < events:  # noqa: ASYNC110 - samples the dispatcher's counter
            await asyncio.sleep(0.01)
        await dispatcher.stop(5)
        result = time.process_time() - cpu, time.monotonic() - wall
        delivered = [d async for d in store.outbox.deliveries(state=DeliveryState.DELIVERED)]
        assert len(delivered) == events, len(delivered)  # noqa: S101 - the run must be real
        return result


async def bare(url: str, body: str, events: int) -> float:
    """CPU seconds for plain httpx POSTs of the same body, same concurrency."""
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(limits=limits) as client:
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one() -> None:
            async with gate:
                response = await client.post(
                    url, content=body.encode(), headers={"content-type": "application/json"}
                )
                response.raise_for_status()

        await asyncio.gather(*(one() for _ in range(50)))
        started = time.process_time()
        await asyncio.gather(*(one() for _ in range(events)))
        return time.process_time() - started


async def measure(url: str, events: int, rounds: int) -> None:
    """Seed, deliver through the outbox, POST bare; interleaved rounds, medians printed."""
    ours: list[tuple[float, float]] = []
    plain: list[float] = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as folder:
            config = settings(url, Path(folder) / "bench.db")
            body = await seed(config, events)
            ours.append(await dispatch(config, events))
            plain.append(await bare(url, body, events))
    cpu = statistics.median(c for c, _ in ours)
    wall = statistics.median(w for _, w in ours)
    bare_cpu = statistics.median(plain)
    print(
        f"{events} webhook deliveries (median of {rounds}): {events / wall:.0f} deliveries/s, "
        f"{1000 * cpu / events:.3f} ms CPU/delivery vs bare httpx POST "
        f"{1000 * bare_cpu / events:.3f} ms (ratio {cpu / bare_cpu:.2f})"
    )


def main() -> None:
    """Start the receiver process and measure."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        # stdout's first line is the receiver's URL: log lines go to stderr.
        configure_logs(LogSettings(level="warning"), stream=sys.stderr)
        asyncio.run(serve())
        return
    configure_logs(LogSettings(level="warning"))
    receiver = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert receiver.stdout is not None  # noqa: S101
        url = receiver.stdout.readline().strip()
        asyncio.run(measure(url, args.events, args.rounds))
    finally:
        receiver.terminate()
        receiver.wait()


if __name__ == "__main__":
    main()
