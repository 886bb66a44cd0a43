"""Push-hint benchmark: how soon a change is stored when the provider hints at it.

``tracker run`` (its own process, SQLite, ``[http] listen`` and ``webhook_secret``) watches
orders it polls once an hour. The simulated upstream (in this process) changes each order once,
the changes spread over a minute, and POSTs a signed webhook to ``/hooks/nomos`` at each change.
The latency of one change is its stored transition's ``detected_at`` minus the moment the
simulator changed the order; without hints it would be up to the polling interval (an hour).

Run with ``make bench`` (or ``python benchmarks/bench_hints.py [--orders 40 --spread 60]``).
Goal: median <= 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from tracker.config import LogSettings
from tracker.demo.hints import HintTarget
from tracker.demo.serving import serve
from tracker.demo.simulator import Script, Simulator, order_id
from tracker.logs import configure as configure_logs
from tracker.store.tables import transitions, watched_orders

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a file (``make bench``), not with ``-m``
    sys.path.insert(0, str(ROOT))

from benchmarks.common import sync_engine, tracker_executable  # noqa: E402 - needs the root

TOKEN = "nom_bench_hints_token"  # noqa: S105 - the simulator's throwaway token
SECRET = "bench-hint-secret-3c9e"  # noqa: S105 - signs the simulator's hints, nothing else
#: Seconds the tracker has to start and poll every order once before the first change.
WARMUP = 20.0
#: Seconds after the last change that a late detection is still waited for.
GRACE = 15.0
#: The goal: half the changes stored within this many seconds of happening.
GOAL_MEDIAN = 2.0


def free_port() -> int:
    """A loopback port nothing listens on right now (the tracker binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def scripts(orders: int, spread: float) -> list[Script]:
    """``orders`` orders ``ordered`` until their change to ``checked``, evenly over ``spread``."""
    return [
        Script(
            order_id=order_id(f"bench-hint-{i}"),
            provider="metrify",
            steps=(("ordered", WARMUP + spread * i / orders), ("checked", 0.0)),
        )
        for i in range(orders)
    ]


def write_config(path: Path, *, upstream: str, port: int, database: Path, ids: list[str]) -> None:
    """The daemon's configuration: hourly polls, a listener, the hint secret."""
    quoted = ", ".join(f'"{i}"' for i in ids)
    path.write_text(
        f"""
[upstream]
base_url = "{upstream}"
token = "{TOKEN}"
webhook_secret = "{SECRET}"

[database]
url = "sqlite:///{database}"

[polling]
interval = "1h"

[watch]
orders = [{quoted}]

[http]
listen = "127.0.0.1:{port}"

[log]
format = "json"
level = "info"
""".lstrip()
    )


def stored(database: Path) -> tuple[int, dict[str, datetime]]:
    """How many orders have been polled, and each stored transition's ``detected_at``."""
    with sync_engine(f"sqlite:///{database}") as engine, engine.connect() as conn:
        polled = conn.execute(
            select(func.count()).where(watched_orders.c.status.is_not(None))
        ).scalar_one()
        rows = conn.execute(
            select(transitions.c.order_id, transitions.c.detected_at).where(
                transitions.c.to_status == "checked"
            )
        ).all()
    return polled, {row.order_id: row.detected_at for row in rows}


async def until(check: Any, seconds: float, what: str) -> None:
    """Wait until ``check()`` (run in a thread) is true, or fail naming ``what``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await asyncio.to_thread(check):
            return
        await asyncio.sleep(0.2)
    raise SystemExit(f"bench_hints: {what} not within {seconds:.0f} s")


async def measure(orders: int, spread: float) -> dict[str, Any]:
    """Run the daemon beside the hinting simulator; latencies in seconds, by order."""
    port = free_port()
    target = HintTarget(url=f"http://127.0.0.1:{port}/hooks/nomos", secret=SECRET)
    simulator = Simulator(scripts(orders, spread), static_token=TOKEN, hints=target)
    with tempfile.TemporaryDirectory() as folder:
        database = Path(folder) / "bench.db"
        config = Path(folder) / "tracker.toml"
        log = Path(folder) / "tracker.log"
        async with serve(simulator.app) as upstream:
            write_config(
                config, upstream=upstream.url, port=port, database=database, ids=simulator.order_ids
            )
            with log.open("w") as out:
                daemon = subprocess.Popen(  # noqa: ASYNC220 - started once, waited for below
                    [tracker_executable(), "run", "--config", str(config)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env={**os.environ},
                )
            try:
                await _run(simulator, database, port, orders, spread)
            except BaseException:
                sys.stderr.write(log.read_text()[-4000:])
                raise
            finally:
                daemon.send_signal(signal.SIGTERM)
                await asyncio.to_thread(daemon.wait, 30)
            _polled, detected = stored(database)
        changes = {change.order_id: change.wall for change in simulator.changes}
        latencies = {
            order: detected[order].timestamp() - moment
            for order, moment in changes.items()
            if order in detected
        }
        return {
            "orders": orders,
            "changes": len(changes),
            "latencies": latencies,
            "hints_sent": simulator.stats.hints_sent,
            "hints_failed": simulator.stats.hints_failed,
            "order_requests": simulator.stats.id_requests,
        }


async def _run(simulator: Simulator, database: Path, port: int, orders: int, spread: float) -> None:
    """Wait for the daemon to serve and to poll every order once, then let the changes come."""
    started = time.monotonic()

    def ready() -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
        return False

    await until(ready, WARMUP, "the daemon ready")
    await until(lambda: stored(database)[0] == orders, WARMUP, "every order polled once")
    if time.monotonic() - started >= WARMUP:
        raise SystemExit("bench_hints: the daemon took longer to start than the warm-up")
    async with simulator.hints_running():
        await until(
            lambda: len(stored(database)[1]) == orders,
            WARMUP + spread + GRACE - (time.monotonic() - started),
            "every change stored",
        )


def main() -> None:
    """Measure once and print the numbers."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=40, help="orders, each changing once")
    parser.add_argument("--spread", type=float, default=60.0, help="seconds the changes span")
    args = parser.parse_args()
    configure_logs(LogSettings(level="warning"), stream=sys.stderr)
    row = asyncio.run(measure(args.orders, args.spread))
    values = sorted(row["latencies"].values())
    p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
    median = statistics.median(values)
    print(
        f"push hints, polling every hour: {len(values)} of {row['changes']} changes stored; "
        f"change -> stored transition median {median:.2f} s, p95 {p95:.2f} s, "
        f"max {values[-1]:.2f} s (goal: median <= {GOAL_MEDIAN:g} s: "
        f"{'met' if median <= GOAL_MEDIAN else 'NOT met'})"
    )
    print(
        f"hints sent {row['hints_sent']}, failed {row['hints_failed']}; "
        f"order requests {row['order_requests']} for {row['orders']} orders "
        "(one first poll each, one per hint)"
    )


if __name__ == "__main__":
    main()
