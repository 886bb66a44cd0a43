"""Footprint benchmark: startup time, bytes on disk, peak memory and CPU, measured as a user would.

Everything runs through the ``tracker`` command line in child processes, against the steady
simulator (``python -m tracker.demo.simulator --steady``), with a TOML configuration and a SQLite
file in a temporary folder. Each child is reaped with ``os.wait4``, which gives its own CPU time
(user + system) and peak RSS. It prints:

1. wall time of ``tracker --help``, ``tracker --version`` and ``tracker history ID`` (a database
   with one order polled once): median of 7 runs, after one warm-up run each;
2. bytes on disk per watched order after two ``tracker poll --all`` passes over 400 and 2,000
   unchanged orders, bytes per stored snapshot, and the bytes per order of each table and index
   (SQLite's ``dbstat`` table);
3. peak RSS of the first and the second ``tracker poll --all`` pass;
4. CPU per unchanged poll: the second pass at 400 and 2,000 orders gives a slope (CPU per
   order) and an intercept (CPU per invocation); 3 interleaved rounds, medians kept;
5. peak RSS of the daemon ``tracker run`` watching 100,000 orders until each was polled once
   (or until ``--daemon-seconds`` have passed; the output says which), stopped with SIGTERM;
6. with ``--urlwatch PATH``, the same numbers for urlwatch 2.x (installed in its own
   virtualenv, never in this project's) over the same orders, and the tracker/urlwatch ratios.

Run it from the repository with its virtualenv::

    .venv/bin/python benchmarks/bench_footprint.py [--urlwatch PATH] [--orders-daemon N]

For the comparison, install urlwatch outside the project, e.g.
``python3 -m venv /tmp/urlwatch-venv && /tmp/urlwatch-venv/bin/pip install urlwatch==2.29``, then
pass ``--urlwatch /tmp/urlwatch-venv/bin/urlwatch``. urlwatch gets its own ``--urls``,
``--config``, ``--hooks`` and ``--cache`` files and a temporary ``HOME``, so nothing touches
the real home folder; its stdout reporter is disabled. It is not part of the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a file (``make bench``), not with ``-m``
    sys.path.insert(0, str(ROOT))

from benchmarks.common import steady_simulator, tracker_executable  # noqa: E402 - needs the root on the path

TOKEN = "nom_bench_token"  # noqa: S105 - the simulator's throwaway token
API_VERSION = "2026-01-29.edison"
CONCURRENCY = 8
RUNS = 7
ROUNDS = 3
SIZES = (400, 2000)
MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Usage:
    """What one child process cost: wall seconds, CPU seconds (user + sys), peak RSS in bytes."""

    wall: float
    cpu: float
    peak_rss: int


@dataclass(frozen=True, slots=True)
class Footprint:
    """One tool's two passes over one number of orders, and what was left on disk."""

    orders: int
    first: Usage
    second: Usage
    disk_bytes: int
    wal_bytes: int
    rows: int
    tables: dict[str, tuple[int, int]]  # name -> (bytes in pages, bytes of payload)
    page_size: int


# -- processes -------------------------------------------------------------------------------


def reap(process: subprocess.Popen[bytes]) -> tuple[int, float, int]:
    """Wait for ``process`` with ``os.wait4``: (exit code, CPU seconds, peak RSS bytes)."""
    _pid, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    # ru_maxrss is in KiB on Linux.
    return process.returncode, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024


def bytecode_kept() -> dict[str, str]:
    """This environment, with Python allowed to keep the bytecode it compiles.

    An installed tracker comes with its bytecode (pip compiles it); from an editable checkout,
    under ``PYTHONDONTWRITEBYTECODE``, every run would compile the tracker's modules anew (some
    30 ms of ``history``), which no user pays. The warm-up runs write it.
    """
    return {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}


def measured(argv: Sequence[str], *, env: dict[str, str] | None = None) -> Usage:
    """Run ``argv`` to the end with its output captured; fail loudly if it fails."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(argv, stdout=out, stderr=err, env=env or bytecode_kept())
        code, cpu, rss = reap(process)
        wall = time.perf_counter() - started
        if code != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {code}:\n{_tail(out)}{_tail(err)}")
    return Usage(wall=wall, cpu=cpu, peak_rss=rss)


def _tail(stream: IO[bytes], limit: int = 2000) -> str:
    stream.seek(0)
    return stream.read()[-limit:].decode(errors="replace")


@dataclass(slots=True)
class Simulator:
    """The steady simulator in its own process, so that its CPU is never counted."""

    process: subprocess.Popen[str]
    url: str
    ids: list[str]

    @classmethod
    def start(cls, orders: int) -> Simulator:
        """Start it with ``orders`` orders that never change and read its announcement."""
        process, url, ids = steady_simulator(orders, TOKEN)
        return cls(process=process, url=url, ids=ids)

    def requests(self) -> int:
        """How many API requests the simulator has answered so far (its ``/_stats``)."""
        with urllib.request.urlopen(f"{self.url}/_stats", timeout=10) as answer:  # noqa: S310
            return int(json.load(answer)["requests"])

    def stop(self) -> None:
        """Terminate it and wait."""
        self.process.terminate()
        self.process.wait()


# -- the tracker -----------------------------------------------------------------------------


def write_config(folder: Path, url: str, rate: float) -> Path:
    """A ``tracker.toml`` against the simulator with a SQLite file in ``folder``."""
    config = folder / "tracker.toml"
    config.write_text(
        f"""[upstream]
base_url = "{url}"
api_version = "{API_VERSION}"
token = "{TOKEN}"
requests_per_second = {rate}
max_concurrency = {CONCURRENCY}
timeout = 10

[database]
url = "sqlite:///{folder / "tracker.db"}"

[polling]
interval = "1h"

[log]
format = "json"
level = "warning"
""",
        encoding="utf-8",
    )
    return config


def watch_from_file(tracker: str, config: Path, ids: Sequence[str]) -> Usage:
    """``tracker watch add --file``: every id in one command."""
    id_file = config.parent / "ids.txt"
    id_file.write_text("\n".join(ids) + "\n", encoding="utf-8")
    return measured([tracker, "--config", str(config), "watch", "add", "--file", str(id_file)])


def startup(tracker: str, url: str, order_id: str) -> dict[str, list[Usage]]:
    """``--help``, ``--version``, ``history ID`` and a bare interpreter: RUNS runs each."""
    with tempfile.TemporaryDirectory() as folder:
        config = write_config(Path(folder), url, rate=1000)
        measured([tracker, "--config", str(config), "watch", "add", order_id])
        measured([tracker, "--config", str(config), "poll", order_id])
        commands = {
            "python -c pass (interpreter alone)": [sys.executable, "-c", "pass"],
            "tracker --help": [tracker, "--help"],
            "tracker --version": [tracker, "--version"],
            "tracker history ID": [tracker, "--config", str(config), "history", order_id],
        }
        runs: dict[str, list[Usage]] = {name: [] for name in commands}
        for argv in commands.values():
            measured(argv)  # warm-up: page cache and bytecode
        for _ in range(RUNS):  # interleaved, so that a noisy moment hits every command
            for name, argv in commands.items():
                runs[name].append(measured(argv))
        return runs


def disk_usage(database: Path) -> tuple[int, int]:
    """(bytes of the database file plus its WAL, bytes of the WAL alone) as left on disk."""
    wal = database.with_name(database.name + "-wal")
    wal_bytes = wal.stat().st_size if wal.exists() else 0
    return database.stat().st_size + wal_bytes, wal_bytes


def table_bytes(database: Path, rows_of: str) -> tuple[int, dict[str, tuple[int, int]], int]:
    """Rows of ``rows_of``, per table and index (bytes in pages, bytes of payload), page size.

    Called after the sizes were read: opening the file may create a WAL again.
    """
    connection = sqlite3.connect(database)
    try:
        try:
            rows = int(connection.execute(f"SELECT count(*) FROM {rows_of}").fetchone()[0])  # noqa: S608
        except sqlite3.OperationalError:
            rows = -1  # the table is not there (a schema change under way)
        try:
            found = connection.execute(
                "SELECT name, sum(pgsize), sum(payload) FROM dbstat GROUP BY name"
            ).fetchall()
        except sqlite3.OperationalError:
            found = []  # SQLite built without dbstat
        tables = {str(name): (int(pages), int(payload)) for name, pages, payload in found}
        page_size = int(connection.execute("PRAGMA page_size").fetchone()[0])
        free = int(connection.execute("PRAGMA freelist_count").fetchone()[0])
        if found:
            tables["(free pages)"] = (free * page_size, 0)
        return rows, tables, page_size
    finally:
        connection.close()


def tracker_footprint(tracker: str, url: str, ids: Sequence[str]) -> Footprint:
    """Watch ``ids``, poll them all twice, and measure both passes and the file left."""
    with tempfile.TemporaryDirectory() as folder:
        config = write_config(Path(folder), url, rate=1_000_000)
        watch_from_file(tracker, config, ids)
        poll = [tracker, "--config", str(config), "poll", "--all"]
        first = measured(poll)
        second = measured(poll)
        database = Path(folder) / "tracker.db"
        disk, wal = disk_usage(database)
        rows, tables, page_size = table_bytes(database, "snapshots")
        return Footprint(len(ids), first, second, disk, wal, rows, tables, page_size)


# -- the daemon ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DaemonRun:
    """The daemon over many orders: how many were polled, how long it took, what it cost."""

    orders: int
    watch: Usage
    polled: int
    recorded: int
    seconds_to_poll: float
    capped: bool
    rss_when_done: int
    stop_seconds: float
    exit_code: int
    run: Usage


def current_rss(pid: int) -> int:
    """Resident bytes of a running process now (Linux ``/proc``), 0 where unavailable."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def polled_in_database(database: Path) -> int:
    """Watched orders with a recorded poll (-1 if the schema has no such column)."""
    connection = sqlite3.connect(database, timeout=30)
    try:
        query = "SELECT count(*) FROM watched_orders WHERE last_polled_at IS NOT NULL"
        return int(connection.execute(query).fetchone()[0])
    except sqlite3.OperationalError:
        return -1
    finally:
        connection.close()


def wait_until(done: Callable[[], bool], deadline: float, step: float = 0.5) -> bool:
    """Check ``done`` every ``step`` seconds until it holds or ``deadline`` (monotonic) passes."""
    while time.monotonic() < deadline:
        if done():
            return True
        time.sleep(step)
    return done()


def stop_and_reap(process: subprocess.Popen[bytes], grace: float) -> tuple[int, float, int, float]:
    """SIGTERM, then reap: (exit code, CPU s, peak RSS bytes, seconds to stop); SIGKILL late."""
    asked = time.monotonic()
    process.send_signal(signal.SIGTERM)
    deadline = asked + grace
    while time.monotonic() < deadline:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid != 0:
            process.returncode = os.waitstatus_to_exitcode(status)
            cpu = usage.ru_utime + usage.ru_stime
            return process.returncode, cpu, usage.ru_maxrss * 1024, time.monotonic() - asked
        time.sleep(0.05)
    process.kill()
    code, cpu, rss = reap(process)
    return code, cpu, rss, time.monotonic() - asked


def daemon_footprint(tracker: str, orders: int, rate: float, cap_seconds: float) -> DaemonRun:
    """``tracker run`` over ``orders`` orders until each was polled once (or the cap)."""
    simulator = Simulator.start(orders)
    try:
        with tempfile.TemporaryDirectory() as folder:
            config = write_config(Path(folder), simulator.url, rate=rate)
            database = Path(folder) / "tracker.db"
            watch = watch_from_file(tracker, config, simulator.ids)
            before = simulator.requests()
            with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
                started = time.monotonic()
                process = subprocess.Popen(
                    [tracker, "--config", str(config), "run"],
                    stdout=out,
                    stderr=err,
                    env=bytecode_kept(),
                )
                answered = wait_until(
                    lambda: simulator.requests() - before >= orders or process.poll() is not None,
                    deadline=started + cap_seconds,
                )
                answered = answered and process.returncode is None
                # The last answers are written a moment after the simulator sent them.
                recorded_all = answered and wait_until(
                    lambda: polled_in_database(database) in {orders, -1},
                    deadline=time.monotonic() + 30,
                    step=0.2,
                )
                seconds = time.monotonic() - started
                rss_now = current_rss(process.pid)
                polled = simulator.requests() - before
                recorded = polled_in_database(database)
                if process.returncode is not None:
                    raise RuntimeError(f"tracker run exited early:\n{_tail(out)}{_tail(err)}")
                code, cpu, rss, stop = stop_and_reap(process, grace=60)
                wall = time.monotonic() - started
        return DaemonRun(
            orders=orders,
            watch=watch,
            polled=polled,
            recorded=recorded,
            seconds_to_poll=seconds,
            capped=not recorded_all,
            rss_when_done=rss_now,
            stop_seconds=stop,
            exit_code=code,
            run=Usage(wall=wall, cpu=cpu, peak_rss=rss),
        )
    finally:
        simulator.stop()


# -- urlwatch --------------------------------------------------------------------------------


def urlwatch_files(folder: Path, url: str, ids: Sequence[str]) -> list[str]:
    """urls.yaml (one job per order, JSON documents are YAML), config, hooks: its arguments."""
    jobs = [
        json.dumps(
            {
                "name": order_id,
                "url": f"{url}/meter-orders/{order_id}",
                "headers": {"Authorization": f"Bearer {TOKEN}", "X-API-Version": API_VERSION},
            }
        )
        for order_id in ids
    ]
    urls = folder / "urls.yaml"
    urls.write_text("\n---\n".join(jobs) + "\n", encoding="utf-8")
    config = folder / "urlwatch.yaml"
    # Every reporter but stdout is off by default; stdout too, so that a pass prints nothing.
    config.write_text(json.dumps({"report": {"stdout": {"enabled": False}}}), encoding="utf-8")
    hooks = folder / "hooks.py"
    hooks.write_text("", encoding="utf-8")
    cache = folder / "cache.db"
    return [
        "--urls",
        str(urls),
        "--config",
        str(config),
        "--hooks",
        str(hooks),
        "--cache",
        str(cache),
    ]


def urlwatch_footprint(urlwatch: str, url: str, ids: Sequence[str]) -> Footprint:
    """Two urlwatch passes over ``ids`` with a private HOME; cache.db measured afterwards."""
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        arguments = urlwatch_files(home, url, ids)
        env = {
            **os.environ,
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / "config"),
            "XDG_CACHE_HOME": str(home / "cache"),
        }
        first = measured([urlwatch, *arguments], env=env)
        second = measured([urlwatch, *arguments], env=env)
        cache = home / "cache.db"
        disk, wal = disk_usage(cache)
        rows, tables, page_size = table_bytes(cache, "CacheEntry")
        fetched = _urlwatch_answers(cache)
        if fetched != len(ids):
            raise RuntimeError(f"urlwatch stored {fetched} answers for {len(ids)} jobs")
        return Footprint(len(ids), first, second, disk, wal, rows, tables, page_size)


def _urlwatch_answers(cache: Path) -> int:
    """Cache entries holding an order, not an error: proof that every job fetched."""
    connection = sqlite3.connect(cache)
    try:
        query = "SELECT count(*) FROM CacheEntry WHERE tries = 0 AND data LIKE '%meter_order%'"
        return int(connection.execute(query).fetchone()[0])
    finally:
        connection.close()


# -- the table -------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    """The median, as a float."""
    return float(statistics.median(values))


def by_size(rounds: Sequence[Footprint], size: int) -> list[Footprint]:
    """The rounds' footprints at ``size`` orders."""
    return [f for f in rounds if f.orders == size]


def line_fit(rounds: Sequence[Footprint]) -> tuple[float, float]:
    """CPU of the second pass: (seconds per order, seconds per invocation) through the medians."""
    small, large = SIZES
    cpu_small = median([f.second.cpu for f in by_size(rounds, small)])
    cpu_large = median([f.second.cpu for f in by_size(rounds, large)])
    slope = (cpu_large - cpu_small) / (large - small)
    return slope, cpu_small - slope * small


def print_header(tracker: str, urlwatch: Path | None) -> None:
    """What is measured, on what."""
    print(f"tracker: {tracker}; {os.cpu_count()} CPUs; SQLite {sqlite3.sqlite_version}")
    if "PYTHONDONTWRITEBYTECODE" in os.environ:
        print("PYTHONDONTWRITEBYTECODE is set here; the measured commands keep their bytecode")
    if urlwatch:
        print(f"urlwatch: {urlwatch}")


def print_startup(runs: dict[str, list[Usage]]) -> None:
    """Section 1."""
    print(f"\n1. Start-up, median of {RUNS} runs (after one warm-up run each)")
    print(f"   {'command':<36} {'wall ms':>8} {'CPU ms':>8} {'peak RSS MiB':>13}")
    for name, usages in runs.items():
        wall = 1000 * median([u.wall for u in usages])
        cpu = 1000 * median([u.cpu for u in usages])
        rss = median([u.peak_rss for u in usages]) / MIB
        print(f"   {name:<36} {wall:8.0f} {cpu:8.0f} {rss:13.1f}")


def print_disk(tool: str, row: str, rounds: Sequence[Footprint]) -> None:
    """Section 2 for one tool: bytes per order and per stored ``row``, then per table and index."""
    print(f"\n2. {tool}: bytes on disk after two passes over unchanged orders")
    totals = []
    for size in SIZES:
        chosen = by_size(rounds, size)
        disk = median([f.disk_bytes for f in chosen])
        totals.append(disk)
        rows = chosen[0].rows
        wal = max(f.wal_bytes for f in chosen)
        per_row = f"{disk / rows:5.0f} B per {row} ({rows} stored)" if rows > 0 else "none stored"
        print(
            f"   {size:>6} orders: {disk / 1024:6.0f} KiB, {disk / size:5.0f} B per order, "
            f"{per_row}; WAL after exit {wal} B"
        )
    (small, large), (disk_small, disk_large) = SIZES, totals
    print(f"   each order beyond {small}: {(disk_large - disk_small) / (large - small):.0f} B")
    print_tables(by_size(rounds, large)[0])


def print_tables(footprint: Footprint) -> None:
    """Bytes per order of each table and index (dbstat); one-page ones are summed up."""
    if not footprint.tables:
        print("   (this SQLite has no dbstat table: no breakdown)")
        return
    orders = footprint.orders
    print(f"   per table and index at {orders} orders (dbstat; fill = payload / page bytes):")
    print(f"     {'name':<44} {'B/order':>8} {'payload B/order':>16} {'fill':>6}")
    small = [name for name, (pages, _) in footprint.tables.items() if pages <= footprint.page_size]
    ranked = sorted(footprint.tables.items(), key=lambda item: -item[1][0])
    for name, (pages, payload) in ranked:
        if name not in small:
            print(
                f"     {name:<44} {pages / orders:8.1f} {payload / orders:16.1f} "
                f"{100 * payload / pages:5.0f}%"
            )
    if small:
        pages = sum(footprint.tables[name][0] for name in small)
        label = f"{len(small)} others of one page or none each"
        print(f"     {label:<44} {pages / orders:8.1f}")


def print_passes(tool: str, rounds: Sequence[Footprint]) -> None:
    """Sections 3 and 4 for one tool: peak RSS of both passes, CPU of the second."""
    print(f"\n3./4. {tool}: each pass a fresh process; medians of {ROUNDS} interleaved rounds")
    print(
        f"   {'orders':>6} {'pass':>6} {'wall s':>7} {'CPU s':>7} "
        f"{'CPU ms/order':>13} {'peak RSS MiB':>13}"
    )
    for size in SIZES:
        chosen = by_size(rounds, size)
        for label, pick in (("first", _first), ("second", _second)):
            usages = [pick(f) for f in chosen]
            wall = median([u.wall for u in usages])
            cpu = median([u.cpu for u in usages])
            rss = median([u.peak_rss for u in usages]) / MIB
            print(
                f"   {size:>6} {label:>6} {wall:7.2f} {cpu:7.2f} "
                f"{1000 * cpu / size:13.3f} {rss:13.1f}"
            )
    slope, intercept = line_fit(rounds)
    print(
        f"   second pass, CPU = fixed + per order x N: {1000 * slope:.3f} ms per unchanged "
        f"poll, {1000 * intercept:.0f} ms fixed per invocation"
    )


def _first(footprint: Footprint) -> Usage:
    return footprint.first


def _second(footprint: Footprint) -> Usage:
    return footprint.second


def print_daemon(run: DaemonRun, rate: float) -> None:
    """Section 5."""
    print(
        f"\n5. Daemon: tracker run over {run.orders} orders "
        f"(requests_per_second {rate:g}, max_concurrency {CONCURRENCY}, interval 1h)"
    )
    print(
        f"   watch add --file: {run.watch.wall:.1f} s wall, {run.watch.cpu:.1f} s CPU, "
        f"peak RSS {run.watch.peak_rss / MIB:.0f} MiB"
    )
    if run.capped:
        print(
            f"   STOPPED AT THE TIME CAP: {run.polled} of {run.orders} orders answered "
            f"({run.recorded} recorded) after {run.seconds_to_poll:.0f} s; the RSS below is "
            "after that part only"
        )
    else:
        print(
            f"   every order polled once in {run.seconds_to_poll:.1f} s "
            f"({run.orders / run.seconds_to_poll:.0f} polls/s; {run.recorded} recorded)"
        )
    per_poll = 1000 * run.run.cpu / max(run.polled, 1)
    print(
        f"   RSS when done {run.rss_when_done / MIB:.0f} MiB, "
        f"peak RSS {run.run.peak_rss / MIB:.0f} MiB, CPU {run.run.cpu:.1f} s "
        f"({per_poll:.2f} ms per poll), SIGTERM to exit {run.stop_seconds:.1f} s, "
        f"exit code {run.exit_code}"
    )


def print_ratios(tracker: Sequence[Footprint], urlwatch: Sequence[Footprint]) -> None:
    """Section 6: tracker / urlwatch for each measure (below 1 means the tracker uses less)."""
    large = SIZES[-1]

    def disk(rounds: Sequence[Footprint]) -> float:
        return median([f.disk_bytes for f in by_size(rounds, large)]) / large

    def rss(rounds: Sequence[Footprint], pick: Callable[[Footprint], Usage]) -> float:
        return median([pick(f).peak_rss for f in by_size(rounds, large)])

    t_slope, t_fixed = line_fit(tracker)
    u_slope, u_fixed = line_fit(urlwatch)
    rows = [
        (f"bytes on disk per order ({large})", disk(tracker), disk(urlwatch), 1.0, "B"),
        (f"peak RSS first pass ({large})", rss(tracker, _first), rss(urlwatch, _first), MIB, "MiB"),
        (
            f"peak RSS second pass ({large})",
            rss(tracker, _second),
            rss(urlwatch, _second),
            MIB,
            "MiB",
        ),
        ("CPU per unchanged poll", t_slope, u_slope, 1e-3, "ms"),
        ("CPU fixed per invocation", t_fixed, u_fixed, 1e-3, "ms"),
    ]
    print("\n6. tracker vs urlwatch (ratio = tracker / urlwatch)")
    print(f"   {'measure':<34} {'tracker':>10} {'urlwatch':>10} {'ratio':>7}")
    for name, ours, theirs, unit, label in rows:
        ratio = f"{ours / theirs:7.2f}" if theirs > 0 else "      -"
        print(f"   {name:<34} {ours / unit:10.2f} {theirs / unit:10.2f} {ratio}  ({label})")


# -- main ------------------------------------------------------------------------------------


def main() -> None:
    """Measure everything and print one readable report."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--urlwatch", type=Path, help="a urlwatch executable to compare against")
    parser.add_argument(
        "--orders-daemon", type=int, default=100_000, help="orders the daemon watches"
    )
    parser.add_argument(
        "--daemon-seconds",
        type=float,
        default=240,
        help="stop the daemon after this long even if not every order was polled",
    )
    parser.add_argument(
        "--daemon-rate", type=float, default=1000, help="the daemon's requests_per_second"
    )
    parser.add_argument(
        "--part",
        choices=("all", "startup", "passes", "daemon"),
        default="all",
        help="measure one part only: startup times, the poll --all passes, or the daemon",
    )
    args = parser.parse_args()
    wanted = {"all": {"startup", "passes", "daemon"}}.get(args.part, {args.part})
    tracker = tracker_executable()
    began = time.monotonic()
    print_header(tracker, args.urlwatch)

    simulator = Simulator.start(max(SIZES))
    ours: list[Footprint] = []
    theirs: list[Footprint] = []
    try:
        if "startup" in wanted:
            print_startup(startup(tracker, simulator.url, simulator.ids[0]))
        for _ in range(
            ROUNDS if "passes" in wanted else 0
        ):  # interleaved: tracker and urlwatch, both sizes, every round
            for size in SIZES:
                ours.append(tracker_footprint(tracker, simulator.url, simulator.ids[:size]))
                if args.urlwatch:
                    theirs.append(
                        urlwatch_footprint(str(args.urlwatch), simulator.url, simulator.ids[:size])
                    )
    finally:
        simulator.stop()
    if ours:
        print_disk("tracker", "snapshot", ours)
        print_passes("tracker", ours)
    if theirs:
        print_disk("urlwatch (cache.db)", "cache entry", theirs)
        print_passes("urlwatch", theirs)
        print(f"   (urlwatch fetches with its fixed 10 threads; the tracker {CONCURRENCY} at once)")
    if "daemon" in wanted:
        daemon = daemon_footprint(
            tracker, args.orders_daemon, args.daemon_rate, args.daemon_seconds
        )
        print_daemon(daemon, args.daemon_rate)
    if theirs:
        print_ratios(ours, theirs)
    print(f"\nwhole benchmark: {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
