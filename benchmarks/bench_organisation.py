"""Organisation benchmark: one ``tracker run`` watching a whole organisation on PostgreSQL.

Everything runs as a user would: a throwaway PostgreSQL cluster (as the tests start one,
``tests/postgres.py``), the simulated upstream in its own process serving an organisation
(``python -m tracker.demo.simulator --organisation N --change-share 0.001 --request-log F``),
``tracker db upgrade``, then ``tracker run`` as a child process with ``[watch] all = true``,
``[polling] changes_every = "1m"``, ``reconcile = "24h"``, ``interval = "1h"`` (``--reconcile``,
``--interval``) and ``trust_after = 0``: change sweeps are trusted from the start, so this run
measures the trusted steady state, not how trust is earned. The budget is ``[upstream]
requests_per_second = 8`` (the tracker's default share of the upstream's 10 req/s).

- Phase A, the first read: a full pass over the list (wall time and pages, from the daemon's
  ``organisation_read_started``/``_ended`` log lines), the daemon's peak RSS and CPU, then
  whether every order is watched with one snapshot and when the orders are due next.
- Phase B, ``--minutes`` of steady state: for each change the simulator made in it (worked out
  from the simulator's options and its start, as the simulator does), how long until the
  tracker stored that transition (``transitions.detected_at``): median, p90, p99, max, and the
  changes never stored or stored twice. Requests per minute (the request log), extrapolated to
  a day with one full pass a day (phase A's pages), as a share of a 10 req/s budget; peak RSS
  and average CPU of the daemon over B.
- Phase C (``--api-requests 0`` skips it): p50/p99 of the board, an order page,
  ``GET /api/v1/orders?status=ordered`` and the search page (by status, by a customer, by an
  order id's prefix, long or one character after ``prdo_``) served by ``tracker serve`` over
  that database.

Run it from the repository with its virtualenv (the children import ``tracker`` from this
tree)::

    .venv/bin/python benchmarks/bench_organisation.py [--orders 1000000] [--minutes 20]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a file (``make bench``), not with ``-m``
    sys.path.insert(0, str(ROOT))

from benchmarks.common import RequestLog, new_lines  # noqa: E402 - needs the root on the path
from tests.postgres import running_cluster  # noqa: E402
from tracker.demo.organisation import Change, Organisation  # noqa: E402

TOKEN = "nom_bench_token"  # noqa: S105 - the simulator's throwaway token
API_TOKEN = "bench-org-read-token-7c1e"  # noqa: S105 - this run's throwaway API token
API_VERSION = "2026-01-29.edison"
TICKS = os.sysconf("SC_CLK_TCK")
#: The upstream's whole budget the issue measures against: 10 req/s for a day.
DAY_BUDGET = 10 * 86_400
#: Children import ``tracker`` from this tree, whatever the virtualenv's install points at.
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def say(text: str) -> None:
    """Print a line at once (the output is followed live in a log file)."""
    print(text, flush=True)


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def percentile(values: Sequence[float], share: float) -> float:
    """The nearest-rank ``share`` percentile of ``values`` (not empty)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


# -- the processes ------------------------------------------------------------------------------


@dataclass
class Upstream:
    """The simulator serving the organisation, in its own process, with its request log."""

    process: subprocess.Popen[str]
    url: str
    wall_started: float
    log: RequestLog

    @classmethod
    def start(
        cls, orders: int, change_share: float, new_per_hour: float, folder: Path, *, stale: bool
    ) -> Upstream:
        """Start it and read its announcement (its URL and when its clock started); with
        ``stale``, a status change does not move ``updated_at``."""
        request_log = folder / "requests.log"
        request_log.touch()
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "tracker.demo.simulator", "--port", "0"),
                *("--organisation", str(orders), "--change-share", str(change_share)),
                *("--new-per-hour", str(new_per_hour), "--token", TOKEN),
                *("--request-log", str(request_log)),
                *(("--stale-updated-at",) if stale else ()),
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        if process.stdout is None:
            raise RuntimeError("the simulator has no stdout")
        announced = json.loads(process.stdout.readline())
        return cls(process, announced["url"], announced["wall_started"], RequestLog(request_log))

    def stop(self) -> None:
        """Terminate it and read the rest of its request log."""
        self.process.terminate()
        self.process.wait()
        self.log.refresh()


@dataclass
class Watched:
    """A child process whose CPU and resident memory are followed while it runs."""

    process: subprocess.Popen[bytes]
    peak_sampled: int = 0
    _sampler: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def cpu(self) -> float:
        """User + system CPU seconds so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def memory(self, key: str) -> int:
        """``VmRSS`` or ``VmHWM`` (peak) in KiB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
        return 0

    def sample(self) -> None:
        """Sample ``VmRSS`` every second in a thread, from now on (``peak_sampled``)."""
        self.peak_sampled = 0

        def run() -> None:
            while not self._stop.wait(1.0) and self.process.poll() is None:
                self.peak_sampled = max(self.peak_sampled, self.memory("VmRSS"))

        self._sampler = threading.Thread(target=run, daemon=True)
        self._sampler.start()

    def stop(self) -> None:
        """SIGTERM, as an operator stops it, then wait."""
        self._stop.set()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def tracker(config: Path, *command: str, log: Path) -> subprocess.Popen[bytes]:
    """``python -m tracker --config CONFIG COMMAND…`` with its output appended to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tracker", "--config", str(config), *command],
            stdout=out,
            stderr=out,
            env=ENV,
        )


def write_config(
    folder: Path,
    database: str,
    upstream: str,
    rate: float,
    *,
    reconcile: str = "24h",
    interval: str = "1h",
) -> Path:
    """The daemon's configuration: every order of the organisation, trusted change sweeps."""
    config = folder / "tracker.toml"
    config.write_text(
        f"""[upstream]
base_url = "{upstream}"
api_version = "{API_VERSION}"
token = "{TOKEN}"
requests_per_second = {rate}

[database]
url = "{database}"

[watch]
all = true

[polling]
interval = "{interval}"
changes_every = "1m"
reconcile = "{reconcile}"
trust_after = 0

[log]
format = "json"
level = "info"
""",
        encoding="utf-8",
    )
    return config


def write_serve_config(folder: Path, database: str, port: int) -> Path:
    """``tracker serve``'s configuration over the same database, with one read token."""
    config = folder / "serve.toml"
    config.write_text(
        f"""[database]
url = "{database}"

[log]
format = "json"
level = "warning"

[http]
listen = "127.0.0.1:{port}"

[[http.users]]
name = "bench"
token = "{API_TOKEN}"
role = "read"
""",
        encoding="utf-8",
    )
    return config


# -- the daemon's log ---------------------------------------------------------------------------


@dataclass
class DaemonLog:
    """The daemon's JSON log lines, read as the file grows."""

    path: Path
    events: list[dict[str, Any]] = field(default_factory=list)
    _offset: int = 0

    def refresh(self) -> None:
        """Read the complete lines written since the last refresh."""
        lines, self._offset = new_lines(self.path, self._offset)
        for line in lines:
            if line.startswith("{"):
                self.events.append(json.loads(line))

    def first(self, name: str) -> dict[str, Any] | None:
        """The first line of event ``name``, if any."""
        return next((e for e in self.events if e.get("event") == name), None)

    def counts(self) -> Counter[str]:
        """Lines per event at warning level or above."""
        return Counter(
            str(e.get("event")) for e in self.events if e.get("level") in {"warning", "error"}
        )


def _moment(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()


# -- the database -------------------------------------------------------------------------------


def query(database: str, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """Rows of one query on the tracker's database."""
    with psycopg.connect(database) as conn:
        return list(conn.execute(sql, params).fetchall())


def recorded(database: str, orders: int, limit: float) -> float:
    """Seconds until ``orders`` orders have a snapshot (the daemon records a read's items
    after the read asked for them), ``limit`` at most."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        (count,), *_ = query(database, "SELECT count(DISTINCT order_id) FROM snapshots")
        if count >= orders:
            break
        time.sleep(2)
    return time.monotonic() - started


def after_read(database: str) -> None:
    """What the first read left: orders watched, their snapshots, when they are due next."""
    (active, rule), *_ = query(
        database,
        "SELECT count(*) FILTER (WHERE active), count(*) FILTER (WHERE source = 'rule') "
        "FROM watched_orders",
    )
    shots = dict(
        query(
            database,
            "SELECT n, count(*) FROM (SELECT w.order_id, count(s.id) AS n FROM watched_orders w "
            "LEFT JOIN snapshots s ON s.order_id = w.order_id GROUP BY w.order_id) c GROUP BY n",
        )
    )
    say(f"   watched: {active:,} active, {rule:,} by rule")
    say(
        f"   snapshots per order: one {shots.get(1, 0):,}, none {shots.get(0, 0):,}, "
        f"more {sum(v for k, v in shots.items() if k > 1):,}"
    )
    (soon, first, median), *_ = query(
        database,
        "SELECT count(*) FILTER (WHERE next_poll_at < now() + interval '2 hours'), "
        "extract(epoch FROM min(next_poll_at) - now()) / 3600, "
        "extract(epoch FROM percentile_cont(0.5) WITHIN GROUP (ORDER BY next_poll_at - now())) "
        "/ 3600 FROM watched_orders WHERE active",
    )
    say(
        f"   next polls: {soon:,} due within 2 h; the first in {first or 0:.1f} h, "
        f"the median in {median or 0:.1f} h"
    )


def stored(database: str, order_ids: Sequence[str]) -> dict[tuple[str, str], list[float]]:
    """When each (order, status) transition of ``order_ids`` was stored (Unix seconds)."""
    found: dict[tuple[str, str], list[float]] = {}
    rows = query(
        database,
        "SELECT order_id, to_status, detected_at FROM transitions WHERE order_id = ANY(%s)",
        list(order_ids),
    )
    for order_id, status, detected in rows:
        found.setdefault((order_id, status), []).append(detected.timestamp())
    return found


# -- phases -------------------------------------------------------------------------------------


def phase_a(daemon: Watched, log: DaemonLog, up: Upstream, orders: int, rate: float) -> int:
    """Wait for the first read to end; print it; return its pages."""
    expected = orders / 100 / rate
    say(
        f"\nA. First read of {orders:,} orders at {rate:g} req/s "
        f"(expected ~{expected / 60:.0f} min)"
    )
    deadline = time.monotonic() + 3 * expected + 900
    last_report = time.monotonic()
    while (ended := log.first("organisation_read_ended")) is None:
        if daemon.process.poll() is not None:
            raise SystemExit(f"tracker run ended: {log.path.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise SystemExit("the first read did not end in three times its expected time")
        time.sleep(2)
        log.refresh()
        if time.monotonic() - last_report > 60:
            last_report = time.monotonic()
            up.log.refresh()
            pages = sum(1 for r in up.log.requests if r.path == "/meter-orders")
            rss = daemon.memory("VmRSS") / 1024
            say(f"   … {pages:,} list pages so far, RSS {rss:.0f} MiB, load {load_average()}")
    started = log.first("organisation_read_started")
    took = _moment(ended) - _moment(started) if started else float("nan")
    pages = int(ended.get("pages", 0))
    cpu = daemon.cpu()
    say(f"   wall time {took:.0f} s ({took / 60:.1f} min), {pages:,} pages ({pages / took:.2f}/s)")
    say(
        f"   daemon: peak RSS {daemon.memory('VmHWM') / 1024:.0f} MiB, CPU {cpu:.0f} s since it "
        f"started ({cpu / took:.0%} of one core over the read); load {load_average()}"
    )
    return pages


@dataclass(frozen=True, slots=True)
class Window:
    """Phase B's span on the wall clock and the monotonic one (the request log's)."""

    wall: tuple[float, float]
    mono: tuple[float, float]
    cpu: float
    peak_rss: int

    @property
    def seconds(self) -> float:
        """Its length."""
        return self.wall[1] - self.wall[0]


def phase_b(daemon: Watched, minutes: float) -> Window:
    """The steady state for ``minutes``: its span, the daemon's CPU and peak RSS in it."""
    say(f"\nB. Steady state for {minutes:g} min (change sweeps trusted from the start)")
    daemon.sample()
    wall0, mono0, cpu0 = time.time(), time.monotonic(), daemon.cpu()
    end = mono0 + minutes * 60
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(left, 60))
        say(f"   … {(time.monotonic() - mono0) / 60:.0f} min, load {load_average()}")
    window = Window(
        (wall0, time.time()), (mono0, time.monotonic()), daemon.cpu() - cpu0, daemon.peak_sampled
    )
    say(
        f"   daemon: peak RSS in B {window.peak_rss / 1024:.0f} MiB (whole run "
        f"{daemon.memory('VmHWM') / 1024:.0f} MiB), CPU {window.cpu:.1f} s = "
        f"{window.cpu / window.seconds:.1%} of one core; load {load_average()}"
    )
    return window


def changes_in(replica: Organisation, window: Window) -> list[Change]:
    """The organisation's changes made during ``window`` (as the simulator made them)."""
    return [c for c in replica.changes if window.wall[0] <= c.wall < window.wall[1]]


def latencies(database: str, made: Sequence[Change], *, grace: float) -> None:
    """Wait up to ``grace`` seconds for every change to be stored, then print the latencies."""
    deadline = time.monotonic() + grace
    while True:
        found = stored(database, sorted({c.order_id for c in made}))
        missing = [c for c in made if not _stored_after(found, c)]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(5)
    delays = [min(_stored_after(found, c)) - c.wall for c in made if _stored_after(found, c)]
    twice = sum(1 for c in made if len(_stored_after(found, c)) > 1)
    superseded = sum(
        1
        for c in missing
        if any(o.order_id == c.order_id and o.wall > c.wall for o in made)  # moved on again
    )
    say(f"   changes made in B: {len(made)}; stored: {len(delays)}")
    if delays:
        say(
            f"   change → stored transition: median {statistics.median(delays):.1f} s, "
            f"p90 {percentile(delays, 0.9):.1f} s, p99 {percentile(delays, 0.99):.1f} s, "
            f"max {max(delays):.1f} s"
        )
    say(
        f"   never stored (after {grace:.0f} s of grace): {len(missing)} "
        f"({superseded} of them moved on again before being seen); stored twice: {twice}"
    )


def _stored_after(found: dict[tuple[str, str], list[float]], change: Change) -> list[float]:
    """The stored transitions that can be this change (not before it, a second of rounding)."""
    return [t for t in found.get((change.order_id, change.status), []) if t >= change.wall - 1]


def trust_lost(log: DaemonLog, window: Window) -> None:
    """When change sweeps were found unreliable (``--stale-updated-at``), and by what."""
    log.refresh()
    lost = [e for e in log.events if e.get("event") == "updated_at_unreliable"]
    if not lost:
        say("   change sweeps stayed trusted (no updated_at_unreliable)")
        return
    first = lost[0]
    resumed = log.first("full_passes_resumed")
    into = _moment(first) - window.wall[0]
    say(
        f"   updated_at_unreliable: {len(lost)} time(s), the first {into:.0f} s "
        f"into B, about {first.get('order_id')} (updated_at {first.get('updated_at')}, covered "
        f"{first.get('covered')}); then {resumed.get('orders_due_now') if resumed else '?'} orders "
        "made due at once"
    )


def requests(up: Upstream, window: Window, pass_pages: int) -> None:
    """Requests during B per minute, and a day's worth with one full pass a day."""
    up.log.refresh()
    during = up.log.between(*window.mono)
    kinds = Counter(
        "list"
        if r.path == "/meter-orders"
        else "by id"
        if r.order_id is not None
        else f"{r.method} {r.path}"
        for r in during
    )
    per_minute = len(during) / (window.seconds / 60)
    day = per_minute * 1440 + pass_pages
    say(
        f"   requests in B: {len(during)} ({per_minute:.2f}/min; "
        + ", ".join(f"{kind} {count}" for kind, count in kinds.most_common())
        + f"; answers {dict(Counter(r.status for r in during))})"
    )
    say(
        f"   a day: {per_minute * 1440:,.0f} (B's rate) + {pass_pages:,} (one full pass, "
        f"reconcile 24h) = {day:,.0f} = {day / DAY_BUDGET:.2%} of 10 req/s"
    )


def phase_c(folder: Path, database: str, count: int) -> None:
    """p50/p99 of the board, an order page, the API's status filter and the search page from
    ``tracker serve``."""
    say(f"\nC. tracker serve over that database, {count} requests each (after 5 warm-up ones)")
    port = _free_port()
    config = write_serve_config(folder, database, port)
    server = Watched(tracker(config, "serve", log=folder / "serve.log"))
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(server, base)
        sample = query(database, _SAMPLE, count)
        ids = [row[0] for row in sample]
        series = {
            "GET / (the board)": ["/"] * count,
            "GET /orders/{id}": [f"/orders/{order_id}" for order_id in ids],
            "GET /api/v1/orders?status=ordered": ["/api/v1/orders?status=ordered"] * count,
            "search GET /orders?status=ordered": ["/orders?status=ordered"] * count,
            "search GET /orders?q={customer}": [f"/orders?q={row[1]}" for row in sample],
            "search GET /orders?q={id prefix}": [f"/orders?q={i[:12]}" for i in ids],
            "search GET /orders?q={short prefix}": [f"/orders?q={i[:6]}" for i in ids],
        }
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=120
        ) as client:
            for name, paths in series.items():
                timings, failures = _timed(client, paths)
                say(
                    f"   {name}: p50 {statistics.median(timings) * 1e3:.1f} ms, "
                    f"p99 {percentile(timings, 0.99) * 1e3:.1f} ms, non-200 {failures}"
                )
        say(f"   load {load_average()}")
    finally:
        server.stop()


_SAMPLE = "SELECT order_id, customer FROM watched_orders TABLESAMPLE SYSTEM (1) LIMIT %s"


def _timed(client: httpx.Client, paths: Sequence[str]) -> tuple[list[float], int]:
    for path in paths[:5]:
        client.get(path)
    timings, failures = [], 0
    for path in paths:
        began = time.perf_counter()
        answer = client.get(path)
        timings.append(time.perf_counter() - began)
        failures += answer.status_code != 200
    return timings, failures


def _wait_ready(server: Watched, base: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise SystemExit("tracker serve ended; see serve.log")
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit("tracker serve did not answer in 120 s")


def _free_port() -> int:
    import socket  # noqa: PLC0415 - only here

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- the run ------------------------------------------------------------------------------------


@contextmanager
def running(args: argparse.Namespace, folder: Path) -> Iterator[tuple[str, Upstream]]:
    """The cluster (a fresh database) and the simulator, stopped afterwards."""
    with running_cluster() as cluster:
        database = cluster.empty()
        up = Upstream.start(
            args.orders, args.change_share, args.new_per_hour, folder, stale=args.stale_updated_at
        )
        try:
            yield database, up
        finally:
            up.stop()


def run(args: argparse.Namespace, folder: Path) -> None:
    """Every phase, in order."""
    say(
        f"Organisation benchmark: {args.orders:,} orders, {args.change_share:g} of them changing "
        f"per hour, {args.rate:g} req/s, PostgreSQL; load {load_average()} on {os.cpu_count()} "
        f"CPUs; files in {folder}"
    )
    with running(args, folder) as (database, up):
        config = write_config(
            folder, database, up.url, args.rate, reconcile=args.reconcile, interval=args.interval
        )
        upgrade = tracker(config, "db", "upgrade", log=folder / "upgrade.log")
        if upgrade.wait() != 0:
            raise SystemExit((folder / "upgrade.log").read_text())
        log = DaemonLog(folder / "daemon.log")
        log.path.touch()
        daemon = Watched(tracker(config, "run", log=log.path))
        try:
            pass_pages = phase_a(daemon, log, up, args.orders, args.rate)
            lag = recorded(database, args.orders, limit=1800)
            say(f"   every order had its snapshot {lag:.0f} s after the read ended")
            after_read(database)
            replica = Organisation(
                args.orders,
                change_share_per_hour=args.change_share,
                new_per_hour=args.new_per_hour,
            )
            replica.attach(time.time, up.wall_started, up.wall_started)
            window = phase_b(daemon, args.minutes)
            requests(up, window, pass_pages)
            latencies(database, changes_in(replica, window), grace=args.grace)
            trust_lost(log, window)
        finally:
            daemon.stop()
            log.refresh()
            say(f"   warnings and errors in the daemon's log: {dict(log.counts()) or 'none'}")
        if args.api_requests:
            phase_c(folder, database, args.api_requests)
        if args.hold:  # measure more over the database by hand; SIGTERM ends it all
            say(f"\nholding {database} (and the cluster) until stopped")
            signal.pause()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=1_000_000, help="organisation size")
    parser.add_argument("--minutes", type=float, default=20.0, help="phase B's length")
    parser.add_argument("--change-share", type=float, default=0.001, help="changing per hour")
    parser.add_argument("--new-per-hour", type=float, default=0.0, help="new orders per hour")
    parser.add_argument("--rate", type=float, default=8.0, help="requests_per_second")
    parser.add_argument(
        "--grace", type=float, default=240.0, help="seconds after B for its last changes"
    )
    parser.add_argument("--api-requests", type=int, default=50, help="phase C; 0 skips it")
    parser.add_argument(
        "--stale-updated-at",
        action="store_true",
        help="the simulator keeps updated_at on status changes: full passes must find them",
    )
    parser.add_argument("--reconcile", default="24h", help="[polling] reconcile (e.g. 10m)")
    parser.add_argument(
        "--interval", default="1h", help="[polling] interval: full passes while untrusted"
    )
    parser.add_argument("--keep", action="store_true", help="keep the folder of logs")
    parser.add_argument(
        "--hold", action="store_true", help="at the end, keep the database up until stopped"
    )
    args = parser.parse_args()
    # SIGTERM (a background run stopped) ends it as Ctrl-C would: the daemon, the simulator and
    # the cluster are stopped by the blocks that started them.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.keep:
        run(args, Path(tempfile.mkdtemp(prefix="bench-org-")))
        return
    with tempfile.TemporaryDirectory(prefix="bench-org-") as name:
        run(args, Path(name))


if __name__ == "__main__":
    main()
