"""Sweep and pacing benchmark: what list sweeps save, and how evenly requests leave.

Everything runs as a user would: ``tracker run`` as a child process with a TOML configuration
and a SQLite file, against the simulated upstream in its own process
(``python -m tracker.demo.simulator --steady --orders N --unwatched M --request-log FILE``),
which writes down every request it receives. Three parts (``--part``, default all):

1. ``passes``: requests per full pass, ``sweep = "auto"`` against ``"ids"``, for 10,000 watched
   orders in an organisation of 12,000 and of 200,000. Pass 1 starts with nothing known (the
   orders were just watched); pass 2 makes every order due again once pass 1 is done. A pass
   ends when every watched order was refreshed after it began.
2. ``large``: 100,000 watched orders (organisation 110,000) at a 15-minute interval with an
   8 req/s budget. After the first pass, for one interval and its jitter: whether every order
   was refreshed within its interval, the share of the budget used, the daemon's peak RSS and
   its CPU per refreshed order.
3. ``pacing``: polls by id at a 20 req/s budget, 300 orders due every 20 s for 60 s: the most
   requests that started in any 100 ms window (and any second), and how late polls started
   against their due time (``tracker_poll_lateness_seconds``).

Run it from the repository with its virtualenv::

    .venv/bin/python benchmarks/bench_sweep.py [--part passes|large|pacing] [--large-minutes M]
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a file (``make bench``), not with ``-m``
    sys.path.insert(0, str(ROOT))

from benchmarks.common import (  # noqa: E402 - needs the root on the path
    SteadySimulator,
    tracker_executable,
)

TOKEN = "nom_bench_token"  # noqa: S105 - the simulator's throwaway token
API_VERSION = "2026-01-29.edison"
WATCHED = 10_000
TICKS = os.sysconf("SC_CLK_TCK")


@contextmanager
def upstream(orders: int, unwatched: int, folder: Path) -> Iterator[SteadySimulator]:
    """The steady simulator with ``orders`` watched and ``unwatched`` more in the organisation."""
    simulator = SteadySimulator.start(
        orders, TOKEN, folder / "requests.log", "--unwatched", str(unwatched)
    )
    try:
        yield simulator
    finally:
        simulator.stop()


def write_config(
    folder: Path,
    url: str,
    *,
    sweep: str,
    rate: float,
    interval: str,
    ids: list[str],
    listen: str | None = None,
) -> Path:
    """A ``tracker.toml`` watching ``ids`` from ``[watch]``, on a SQLite file in ``folder``."""
    config = folder / "tracker.toml"
    http = f'\n[http]\nlisten = "{listen}"\n' if listen else ""
    config.write_text(
        f"""[upstream]
base_url = "{url}"
api_version = "{API_VERSION}"
token = "{TOKEN}"
requests_per_second = {rate}
max_concurrency = 8
timeout = 10

[database]
url = "sqlite:///{folder / "tracker.db"}"

[polling]
interval = "{interval}"
sweep = "{sweep}"

[watch]
orders = {json.dumps(ids)}

[log]
format = "json"
level = "warning"
{http}""",
        encoding="utf-8",
    )
    return config


@contextmanager
def daemon(config: Path, folder: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``tracker run`` until the block ends (SIGTERM, then wait)."""
    with (folder / "daemon.log").open("ab") as out:
        process = subprocess.Popen(
            [tracker_executable(), "--config", str(config), "run"], stdout=out, stderr=out
        )
        try:
            yield process
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)


def refreshed_since(database: Path, moment: float) -> int:
    """Watched orders polled (or swept) at or after ``moment`` (Unix seconds)."""
    if not database.exists():
        return 0
    with sqlite3.connect(database, timeout=30) as conn:
        try:
            rows = conn.execute("SELECT last_polled_at FROM watched_orders").fetchall()
        except sqlite3.OperationalError:  # not migrated yet
            return 0
    return sum(1 for (at,) in rows if at is not None and _unix(at) >= moment)


def _unix(stored: int) -> float:
    """A stored moment (SQLite: integer microseconds since the epoch) as Unix seconds."""
    return stored / 1e6


def wait_until_refreshed(database: Path, moment: float, count: int, limit: float) -> float:
    """Seconds until ``count`` orders were refreshed after ``moment`` (or ``limit`` passed)."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if refreshed_since(database, moment) >= count:
            return time.monotonic() - start
        time.sleep(0.5)
    raise SystemExit(f"only {refreshed_since(database, moment)} of {count} orders refreshed")


def make_all_due(database: Path) -> None:
    """Every watched order due now (the daemon is stopped)."""
    with sqlite3.connect(database, timeout=30) as conn:
        conn.execute("UPDATE watched_orders SET next_poll_at = 0")


def spread_due(database: Path, *, start: float, over: float) -> None:
    """Make the watched orders due one after another, evenly over ``over`` seconds from
    ``start`` (Unix seconds), as a long-running daemon's jittered schedule has them."""
    with sqlite3.connect(database, timeout=30) as conn:
        ids = [row[0] for row in conn.execute("SELECT order_id FROM watched_orders")]
        step = over / len(ids)
        conn.executemany(
            "UPDATE watched_orders SET next_poll_at = ? WHERE order_id = ?",
            [(round((start + i * step) * 1e6), order_id) for i, order_id in enumerate(ids)],
        )


# -- part 1: requests per pass -----------------------------------------------------------------


def passes(organisations: list[int]) -> None:
    """Requests per full pass for each organisation size and mode."""
    print("\n1. Requests per full pass, 10,000 watched orders (budget 250 req/s)")
    print(
        f"{'organisation':>12} {'sweep':>5} {'pass':>4} {'pages':>6} {'by id':>6} {'total':>6}"
        f" {'seconds':>8}"
    )
    for organisation in organisations:
        for mode in ("auto", "ids"):
            with tempfile.TemporaryDirectory(prefix="bench-sweep-") as name:
                folder = Path(name)
                with upstream(WATCHED, organisation - WATCHED, folder) as up:
                    config = write_config(
                        folder, up.url, sweep=mode, rate=250, interval="1h", ids=up.ids
                    )
                    for number in (1, 2):
                        before = up.stats()
                        started = time.time()
                        if number == 2:
                            make_all_due(folder / "tracker.db")
                        with daemon(config, folder):
                            took = wait_until_refreshed(
                                folder / "tracker.db", started, WATCHED, limit=600
                            )
                        after = up.stats()
                        pages = after["list_requests"] - before["list_requests"]
                        by_id = after["id_requests"] - before["id_requests"]
                        print(
                            f"{organisation:>12,} {mode:>5} {number:>4} {pages:>6} {by_id:>6} "
                            f"{pages + by_id:>6} {took:>8.1f}"
                        )


# -- part 2: a hundred thousand orders on 8 req/s ------------------------------------------------


def large(minutes: float) -> None:
    """100,000 orders at a 15-minute interval on an 8 req/s budget."""
    watched, organisation, budget = 100_000, 110_000, 8
    interval = minutes * 60
    jitter = interval / 10
    print(
        f"\n2. {watched:,} watched orders (organisation {organisation:,}), interval "
        f"{minutes:g} min, budget {budget} req/s"
    )
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as name:
        folder = Path(name)
        database = folder / "tracker.db"
        with upstream(watched, organisation - watched, folder) as up:
            port = _free_port()
            config = write_config(
                folder,
                up.url,
                sweep="auto",
                rate=budget,
                interval=f"{minutes:g}m",
                ids=up.ids,
                listen=f"127.0.0.1:{port}",
            )
            started = time.time()
            with daemon(config, folder) as process:
                first = wait_until_refreshed(database, started, watched, limit=3600)
                print(f"   first pass (nothing known yet): {first:.0f} s")
                window_start = time.time()
                stats_before, cpu_before = up.stats(), _cpu(process.pid)
                polls_before = _polls(port)
                time.sleep(interval + jitter)
                stats_after, cpu_after = up.stats(), _cpu(process.pid)
                polls_after = _polls(port)
                window = time.time() - window_start
                stale = watched - refreshed_since(database, time.time() - interval - jitter)
                peak = _peak_rss(process.pid)
        requests = stats_after["requests"] - stats_before["requests"]
        refreshed = polls_after - polls_before
        print(f"   window {window:.0f} s (one interval and its jitter)")
        print(f"   orders not refreshed within interval + jitter: {stale}")
        print(
            f"   requests: {requests} ({requests / window:.2f}/s, "
            f"{requests / window / budget:.1%} of the budget)"
        )
        print(f"   orders refreshed: {refreshed:,.0f} ({refreshed / window:.1f}/s)")
        per_order = (cpu_after - cpu_before) / max(refreshed, 1)
        print(f"   CPU per refreshed order: {per_order * 1e3:.3f} ms")
        print(f"   peak RSS of tracker run: {peak / 1024:.1f} MiB")


def _free_port() -> int:
    import socket  # noqa: PLC0415 - only here

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _cpu(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def _peak_rss(pid: int) -> int:
    """Peak resident set of ``pid`` in KiB (``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _metric(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def _polls(port: int) -> float:
    return sum(v for k, v in _metric(port).items() if k.startswith("tracker_polls_total"))


# -- part 3: pacing --------------------------------------------------------------------------


def pacing() -> None:
    """Bursts and lateness of polls by id at 20 req/s."""
    orders, interval, budget, warm_up, seconds = 240, 20, 20, 30, 60
    print(
        f"\n3. Pacing: {orders} orders every {interval} s by id ({orders / interval:g}/s), "
        f"budget {budget} req/s; after the first pass their due times are spread over the "
        f"interval; {warm_up} s warm-up, then {seconds} s measured"
    )
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as name:
        folder = Path(name)
        with upstream(orders, 0, folder) as up:
            port = _free_port()
            config = write_config(
                folder,
                up.url,
                sweep="ids",
                rate=budget,
                interval=f"{interval}s",
                ids=up.ids,
                listen=f"127.0.0.1:{port}",
            )
            database = folder / "tracker.db"
            started = time.time()
            with daemon(config, folder):  # the first pass: every order answered once
                wait_until_refreshed(database, started, orders, limit=120)
            spread_due(database, start=time.time() + 2, over=interval)
            with daemon(config, folder):
                time.sleep(warm_up)
                before = _metric(port)
                time.sleep(seconds)
                after = _metric(port)
            up.log.refresh()
    arrivals = sorted(r.at for r in up.log.requests if r.order_id is not None)
    measured = [t for t in arrivals if t >= arrivals[-1] - seconds]
    print(f"   requests: {len(arrivals)} in all, {len(measured)} in the measured part")
    print(
        f"   most in any 100 ms window: {_busiest(arrivals, 0.1)} (whole run, the first pass "
        f"included), {_busiest(measured, 0.1)} (measured part)"
    )
    print(f"   most in any 1 s window: {_busiest(arrivals, 1.0)}")
    lateness = "tracker_poll_lateness_seconds"
    total = after[f"{lateness}_count"] - before[f"{lateness}_count"]
    shares = []
    for key, count in sorted(after.items()):
        if key.startswith(f"{lateness}_bucket") and "+Inf" not in key:
            bound = float(key.split('le="')[1].split('"')[0])
            if bound <= 1.0:
                shares.append((bound, (count - before.get(key, 0.0)) / max(total, 1)))
    print(
        "   polls (measured part) started at most this late: "
        + ", ".join(f"{bound:g} s: {share:.1%}" for bound, share in sorted(shares))
        + f" (of {total:.0f})"
    )


def _busiest(times: list[float], width: float) -> int:
    """The most of ``times`` (sorted) within any window of ``width`` seconds."""
    return max((bisect.bisect_left(times, t + width) - i for i, t in enumerate(times)), default=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--part", choices=("passes", "large", "pacing"), action="append")
    parser.add_argument("--large-minutes", type=float, default=15.0)
    parser.add_argument(
        "--organisation", type=int, action="append", help="organisation sizes for --part passes"
    )
    args = parser.parse_args()
    parts = args.part or ["passes", "pacing", "large"]
    if "passes" in parts:
        passes(args.organisation or [12_000, 200_000])
    if "pacing" in parts:
        pacing()
    if "large" in parts:
        large(args.large_minutes)


if __name__ == "__main__":
    main()
