"""Fleet benchmark: three ``tracker run`` daemons on one PostgreSQL, beside one on SQLite.

Everything runs as a user would run it: ``tracker watch add --file`` and ``tracker run`` in child
processes with a TOML configuration, against the steady simulator in a process of its own
(``python -m tracker.demo.simulator --steady --request-log FILE``), which writes down the moment
(``time.monotonic``: one clock for every process on Linux), answer and path of every request it
is sent. PostgreSQL is the tests' throwaway cluster
(``tests.postgres``: Debian's server run through ``runuser``). Every order is due at the start
and the polling interval is longer than the whole run, so the run is (part of) the first pass
over a backlog larger than the budget can clear. The due times are spread by a millisecond
each, as a steady state's jitter would spread them, so that "oldest due first" is one order.

The PostgreSQL run: three daemons start together; after a warm-up, the steady part runs until
one daemon is stopped (SIGSTOP), the orders it holds are read from the database
(``watched_orders.leased_by`` = its id in ``daemons``), and it is SIGKILLed. The run waits until
each of those orders was requested again (or the contract's bound and 10 s more have passed),
starts the killed daemon again and runs a while longer. The SQLite run: one daemon over the same
number of orders with the same budget. It prints:

(a) the combined pace over the steady part as a fraction of ``requests_per_second``, and the
    busiest one-second window of all requests from the first to the last (restarts included),
    both also for each part of the run;
(b) orders requested twice within one polling interval (crash re-polls of the killed daemon's
    orders shown apart);
(c) CPU per poll: the daemons' CPU time (user + system, ``/proc/PID/stat``) over the steady part
    divided by the requests in it, three daemons on PostgreSQL against one on SQLite (the
    PostgreSQL server's own CPU is shown beside, as SQLite's is inside its daemon);
(d) takeover after SIGKILL: for each order the killed daemon held, the time from the kill to its
    next request; max and median, against the bound ``2 x upstream.timeout + 60 s``.

Run it from the repository root with the project's virtualenv::

    .venv/bin/python -m benchmarks.bench_fleet [--quick] [--orders N] [--seconds S] [--keep DIR]

``--keep DIR`` leaves the configurations, the daemons' logs and the request logs there. The full
run takes about four and a half minutes, ``--quick`` about one and a half (each up to 70 s
longer when a takeover waits for the lease to expire). If it is killed midway, stop the
leftover server with ``runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D
/tmp/tracker-pg-*/data -m immediate stop``. It is not part of the tests.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shlex
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from sqlalchemy import bindparam, select, update

from tracker.store.tables import daemons, watched_orders

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file (``make bench``), not with ``-m``
    sys.path.insert(0, str(ROOT))

from benchmarks.common import (  # noqa: E402 - needs the root on the path
    Request,
    RequestLog,
    SteadySimulator,
    sync_engine,
    tracker_executable,
)
from tests.postgres import Cluster, running_cluster  # noqa: E402 - needs the root on the path

TOKEN = "nom_bench_token"  # noqa: S105 - the simulator's throwaway token
API_VERSION = "2026-01-29.edison"
CONCURRENCY = 8
TIMEOUT = 10  # upstream.timeout, seconds
FLEET = 3
#: The contract's bound on taking over a dead daemon's claims ("Several daemons on PostgreSQL").
TAKEOVER_BOUND = 2 * TIMEOUT + 60
#: How long past the bound the run waits for the last taken-over order before going on.
TAKEOVER_SLACK = 10.0
#: The run goes on this long after the killed daemon was started again: its join, settle and
#: first polls are part of what the busiest window covers.
AFTER_RESTART = 20.0
#: The kill comes this far into the part after the warm-up.
KILL_AT = 0.45
#: Steps of the due times the orders are given: a strict "oldest due first".
DUE_STEP = timedelta(milliseconds=1)
#: How long a SIGTERMed daemon may take: it gives its in-flight polls one timeout, then hands
#: the rest back.
STOP_GRACE = 2 * TIMEOUT + 10
TICKS = os.sysconf("SC_CLK_TCK")


# -- the simulated upstream and its request log ----------------------------------------------


# -- the tracker -----------------------------------------------------------------------------


def write_config(folder: Path, url: str, database_url: str, rate: float, interval: float) -> Path:
    """A ``tracker.toml`` against the simulator; info-level JSON logs for the events."""
    config = folder / "tracker.toml"
    config.write_text(
        f"""[upstream]
base_url = "{url}"
api_version = "{API_VERSION}"
token = "{TOKEN}"
requests_per_second = {rate}
max_concurrency = {CONCURRENCY}
timeout = {TIMEOUT}

[database]
url = "{database_url}"

[polling]
interval = {interval:.0f}
sweep = "ids"  # the budget's pace is measured on polls by id

[log]
format = "json"
level = "info"
""",
        encoding="utf-8",
    )
    return config


def run_cli(argv: Sequence[str]) -> None:
    """Run a one-shot command to the end; fail loudly with its output if it fails."""
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} exited {done.returncode}:\n{done.stderr[-2000:]}")


def watch_all(tracker: str, config: Path, ids: Sequence[str], database_url: str) -> None:
    """``tracker watch add --file``, then give the orders distinct due times, all past."""
    id_file = config.parent / "ids.txt"
    id_file.write_text("\n".join(ids) + "\n", encoding="utf-8")
    run_cli([tracker, "--config", str(config), "watch", "add", "--file", str(id_file)])
    w = watched_orders
    now = datetime.now(UTC)
    due = [
        {"b_id": order_id, "b_due": now - (len(ids) - k) * DUE_STEP}
        for k, order_id in enumerate(ids)
    ]
    with sync_engine(database_url) as engine, engine.begin() as conn:
        conn.execute(
            update(w)
            .where(w.c.order_id == bindparam("b_id"))
            .values(next_poll_at=bindparam("b_due")),
            due,
        )


def held_by(database_url: str, pid: int) -> set[str]:
    """The orders leased by the daemon registered with ``pid`` (one host: pids are unique)."""
    with sync_engine(database_url) as engine, engine.connect() as conn:
        daemon_id = conn.execute(select(daemons.c.id).where(daemons.c.pid == pid)).scalar()
        if daemon_id is None:
            raise RuntimeError(f"no daemon with pid {pid} is registered")
        w = watched_orders
        return set(conn.execute(select(w.c.order_id).where(w.c.leased_by == daemon_id)).scalars())


@dataclass(slots=True)
class Daemon:
    """One ``tracker run`` process, its log in a file of its own."""

    process: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes]

    @classmethod
    def start(cls, tracker: str, config: Path, log_path: Path) -> Daemon:
        """Start ``tracker run``; stdout and stderr go to ``log_path``."""
        log = log_path.open("ab")
        process = subprocess.Popen(
            [tracker, "--config", str(config), "run"], stdout=log, stderr=subprocess.STDOUT
        )
        return cls(process, log_path, log)

    @property
    def pid(self) -> int:
        """The daemon's pid (the ``tracker`` script is the interpreter itself)."""
        return self.process.pid

    def check_alive(self) -> None:
        """Fail with the end of its log if it exited."""
        if self.process.poll() is not None:
            tail = self.log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
            raise RuntimeError(f"daemon {self.pid} exited {self.process.returncode}:\n{tail}")

    def kill(self) -> None:
        """SIGKILL and reap."""
        self.process.kill()
        self.process.wait()
        self._log.close()

    def stop(self, grace: float = STOP_GRACE) -> int:
        """SIGTERM, wait (SIGKILL after ``grace``); the exit code."""
        self.process.terminate()
        try:
            code = self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._log.close()
        return code


# -- CPU from /proc ----------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/PID/stat`` after the command name (field 3 on), or ``None`` once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process (0 once it is gone)."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / TICKS if fields is not None else 0.0


def server_cpu_seconds(cluster: Cluster) -> float:
    """CPU seconds of the PostgreSQL postmaster and every process it started (its backends)."""
    postmaster = int(
        (cluster.folder / "data" / "postmaster.pid").read_text(encoding="ascii").split()[0]
    )
    total = cpu_seconds(postmaster)
    for entry in Path("/proc").iterdir():
        fields = _stat_fields(int(entry.name)) if entry.name.isdigit() else None
        if fields is not None and int(fields[1]) == postmaster:
            total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def stop_signal_taken(pid: int, deadline: float) -> None:
    """Wait until a SIGSTOPped process shows as stopped."""
    while time.monotonic() < deadline:
        fields = _stat_fields(pid)
        if fields is None or fields[0] in {"T", "t"}:
            return
        time.sleep(0.005)
    raise RuntimeError(f"process {pid} did not stop")


# -- measures --------------------------------------------------------------------------------


def busiest_window(times: Sequence[float]) -> tuple[int, float]:
    """The most requests in any one-second window ``(t - 1, t]``, and the ``t`` it ends at."""
    ordered = sorted(times)
    best, end, first = 0, 0.0, 0
    for last, moment in enumerate(ordered):
        while ordered[first] <= moment - 1.0:
            first += 1
        if last - first + 1 > best:
            best, end = last - first + 1, moment
    return best, end


def seconds_over(times: Sequence[float], start: float, rate: float) -> int:
    """Whole seconds after ``start`` in which a one-second window ends holding over ``rate``.

    Tells a lasting excess apart from one burst, which ``busiest_window`` cannot.
    """
    ordered = sorted(times)
    over: set[int] = set()
    first = 0
    for last, moment in enumerate(ordered):
        while ordered[first] <= moment - 1.0:
            first += 1
        if last - first + 1 > rate:
            over.add(int(moment - start))
    return len(over)


def pace(log: RequestLog, start: float, end: float, rate: float) -> float:
    """Requests per second in ``[start, end)`` as a fraction of the budget."""
    if end <= start:
        return float("nan")
    return len(log.between(start, end)) / (end - start) / rate


def polls_by_order(requests: Iterable[Request]) -> dict[str, list[float]]:
    """Each order's poll times."""
    polls: dict[str, list[float]] = defaultdict(list)
    for request in requests:
        if (order_id := request.order_id) is not None:
            polls[order_id].append(request.at)
    return polls


def polled_twice(requests: Iterable[Request], interval: float) -> dict[str, list[float]]:
    """Orders requested at least twice within ``interval`` seconds: their poll times."""
    return {
        order_id: times
        for order_id, times in polls_by_order(requests).items()
        if any(b - a < interval for a, b in itertools.pairwise(times))
    }


def drained_at(requests: Sequence[Request], orders: int) -> float | None:
    """When the last never-polled order was first polled (the backlog ran out), if it was."""
    seen: set[str] = set()
    for request in requests:
        if (order_id := request.order_id) is not None:
            seen.add(order_id)
            if len(seen) == orders:
                return request.at
    return None


def log_entries(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """The daemons' JSON log lines; a line that is not JSON becomes ``{"event": "(not JSON)"}``."""
    entries: list[dict[str, Any]] = []
    for path in paths:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                entry = None
            entries.append(entry if isinstance(entry, dict) else {"event": "(not JSON)"})
    return entries


def log_events(entries: Iterable[dict[str, Any]]) -> Counter[str]:
    """How often each event appears (warnings and errors marked, shares by daemon count)."""
    events: Counter[str] = Counter()
    for entry in entries:
        name = str(entry.get("event"))
        if name == "budget_shared":
            name += f" daemons={entry.get('daemons')}"
        if entry.get("level") in {"warning", "error", "critical"}:
            name += f" [{entry['level']}]"
        events[name] += 1
    return events


def takeovers(entries: Iterable[dict[str, Any]]) -> list[datetime]:
    """When a daemon logged taking over some claims (``claims_taken_over``, ``leases_...``)."""
    return sorted(
        datetime.fromisoformat(entry["timestamp"])
        for entry in entries
        if entry.get("event") in {"claims_taken_over", "leases_taken_over"} and entry.get("orders")
    )


# -- the runs --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """What to run: sizes and durations (seconds)."""

    orders: int
    rate: float
    seconds: float
    sqlite_seconds: float
    warmup: float

    @property
    def interval(self) -> float:
        """The polling interval: an hour, or twice one full pass if that is longer."""
        return max(3600.0, 2 * self.orders / self.rate)

    @property
    def kill_after(self) -> float:
        """Seconds from the start to the kill: the end of the steady part."""
        return self.warmup + KILL_AT * (self.seconds - self.warmup)


@dataclass(slots=True)
class Window:
    """CPU seconds sampled at the start and the end of a measured part."""

    start: float = 0.0
    end: float = 0.0
    daemons_cpu: float = 0.0
    server_cpu: float = 0.0

    def polls(self, log: RequestLog) -> int:
        """Polls that reached the upstream in the window."""
        return sum(1 for r in log.between(self.start, self.end) if r.order_id is not None)


@dataclass(slots=True)
class FleetRun:
    """What the PostgreSQL run saw."""

    log: RequestLog
    began: float = 0.0
    #: ``began`` on the wall clock, to find moments in the daemons' logs.
    began_utc: datetime = field(default_factory=lambda: datetime.now(UTC))
    steady: Window = field(default_factory=Window)
    killed_at: float = 0.0
    held: set[str] = field(default_factory=set)
    restarted_at: float = 0.0
    ended: float = 0.0
    exit_codes: list[int] = field(default_factory=list)
    events: Counter[str] = field(default_factory=Counter)
    #: When the daemons logged taking over orders (wall clock).
    taken_over: list[datetime] = field(default_factory=list)


@dataclass(slots=True)
class SoloRun:
    """What the SQLite run saw."""

    log: RequestLog
    began: float = 0.0
    steady: Window = field(default_factory=Window)
    exit_code: int = 0


def sleep_until(moment: float, running: Sequence[Daemon]) -> None:
    """Sleep until ``moment`` (monotonic), checking every half second that the daemons live."""
    while (left := moment - time.monotonic()) > 0:
        for daemon in running:
            daemon.check_alive()
        time.sleep(min(left, 0.5))


def sample(running: Sequence[Daemon], cluster: Cluster | None) -> tuple[float, float, float]:
    """(now, the daemons' CPU seconds, the server's CPU seconds)."""
    server = server_cpu_seconds(cluster) if cluster is not None else 0.0
    return time.monotonic(), sum(cpu_seconds(d.pid) for d in running), server


def kill_and_read_claims(victim: Daemon, database_url: str) -> tuple[set[str], float]:
    """Freeze ``victim``, read what it holds, SIGKILL it: (its orders, when it was killed).

    Stopped first, it can neither claim more nor commit a claim in progress while the database
    is read; what it had not committed is rolled back when its connections drop.
    """
    os.kill(victim.pid, signal.SIGSTOP)
    try:
        stop_signal_taken(victim.pid, time.monotonic() + 5)
        held = held_by(database_url, victim.pid)
    finally:
        victim.kill()
    return held, time.monotonic()


def wait_for_takeover(run: FleetRun, running: Sequence[Daemon]) -> None:
    """Until every order the killed daemon held was requested again, or the bound + slack."""
    deadline = run.killed_at + TAKEOVER_BOUND + TAKEOVER_SLACK
    while time.monotonic() < deadline:
        run.log.refresh()
        if len(run.log.first_poll_after(run.killed_at, run.held)) == len(run.held):
            return
        sleep_until(min(time.monotonic() + 0.5, deadline), running)


def fleet_run(plan: Plan, cluster: Cluster, tracker: str, folder: Path) -> FleetRun:
    """Three daemons on one PostgreSQL: warm-up, steady part, kill, takeover, restart."""
    simulator = SteadySimulator.start(plan.orders, TOKEN, folder / "requests.log")
    run = FleetRun(log=simulator.log)
    running: list[Daemon] = []
    try:
        database_url = cluster.clone()
        config = write_config(folder, simulator.url, database_url, plan.rate, plan.interval)
        watch_all(tracker, config, simulator.ids, database_url)
        run.began, run.began_utc = time.monotonic(), datetime.now(UTC)
        running = [Daemon.start(tracker, config, folder / f"daemon-{n}.log") for n in range(FLEET)]
        sleep_until(run.began + plan.warmup, running)
        run.steady.start, run.steady.daemons_cpu, run.steady.server_cpu = sample(running, cluster)
        sleep_until(run.began + plan.kill_after, running)
        end, cpu, server = sample(running, cluster)
        run.steady.end = end
        run.steady.daemons_cpu = cpu - run.steady.daemons_cpu
        run.steady.server_cpu = server - run.steady.server_cpu
        victim = running.pop(1)
        run.held, run.killed_at = kill_and_read_claims(victim, database_url)
        wait_for_takeover(run, running)
        running.append(Daemon.start(tracker, config, folder / "daemon-restarted.log"))
        run.restarted_at = time.monotonic()
        sleep_until(max(run.began + plan.seconds, run.restarted_at + AFTER_RESTART), running)
        run.ended = time.monotonic()
    finally:
        run.exit_codes = [daemon.stop() for daemon in running]
        simulator.stop()
    entries = log_entries(sorted(folder.glob("daemon-*.log")))
    run.events, run.taken_over = log_events(entries), takeovers(entries)
    return run


def solo_run(plan: Plan, tracker: str, folder: Path) -> SoloRun:
    """One daemon on a SQLite file, same orders and budget: the CPU per poll to compare with."""
    simulator = SteadySimulator.start(plan.orders, TOKEN, folder / "requests.log")
    run = SoloRun(log=simulator.log)
    try:
        database_url = f"sqlite:///{folder / 'tracker.db'}"
        config = write_config(folder, simulator.url, database_url, plan.rate, plan.interval)
        watch_all(tracker, config, simulator.ids, database_url)
        run.began = time.monotonic()
        daemon = Daemon.start(tracker, config, folder / "daemon.log")
        try:
            sleep_until(run.began + plan.warmup, [daemon])
            run.steady.start, run.steady.daemons_cpu, _ = sample([daemon], None)
            sleep_until(run.began + plan.sqlite_seconds, [daemon])
            run.steady.end, cpu, _ = sample([daemon], None)
            run.steady.daemons_cpu = cpu - run.steady.daemons_cpu
        finally:
            run.exit_code = daemon.stop()
    finally:
        simulator.stop()
    return run


# -- the report ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the summary table."""

    measure: str
    value: str
    goal: str = ""
    #: Whether the goal was met; ``None`` for a line without a goal.
    met: bool | None = field(default=None, kw_only=True)


def fleet_report(plan: Plan, run: FleetRun) -> list[Row]:
    """Print the PostgreSQL run's details; return its rows of the table."""
    log, began = run.log, run.began
    requests = log.between(began, run.ended + 1)

    def at(moment: float) -> str:
        return f"t={moment - began:.1f} s"

    print(f"\nPostgreSQL, {FLEET} daemons, {plan.orders} orders, budget {plan.rate:g} req/s")
    print(f"  t=0 is {run.began_utc:%H:%M:%S.%f} UTC (the daemons' log timestamps)")
    phases = [
        ("start and warm-up", run.began, run.steady.start),
        ("steady part", run.steady.start, run.steady.end),
        ("kill until restart", run.steady.end, run.restarted_at),
        ("after the restart", run.restarted_at, run.ended),
        ("whole run", run.began, run.ended),
    ]
    print(
        "  part of the run                         pace (x budget)  busiest 1-s window"
        "  seconds with a window over the budget"
    )
    for name, start, end in phases:
        times = [r.at for r in log.between(start, end)]
        busiest, busiest_end = busiest_window(times)
        over = seconds_over(times, start, plan.rate)
        print(
            f"  {name:<19} {at(start):>9}..{at(end):<9} {pace(log, start, end, plan.rate):15.3f}"
            f"  {busiest:4} (at {at(busiest_end):>9})  {over:4} of {math.ceil(end - start)}"
        )
    steady = pace(log, run.steady.start, run.steady.end, plan.rate)
    busiest, _ = busiest_window([r.at for r in requests])
    if (drained := drained_at(requests, plan.orders)) is not None:
        print(f"  the backlog ran out at {at(drained)}: paces after it are not the budget's")
    odd = Counter(r.status for r in requests if r.status != 200)
    if odd:
        print(f"  answers other than 200: {dict(odd)}")
    twice = polled_twice(requests, plan.interval)
    crash = {order_id for order_id in twice if order_id in run.held}
    others = sorted(set(twice) - crash)
    print(
        f"  orders polled twice within the interval ({plan.interval:.0f} s): {len(others)}, "
        f"plus {len(crash)} of the {len(run.held)} the killed daemon held"
    )
    for order_id in others[:5]:
        print(f"    {order_id}: " + ", ".join(at(t) for t in twice[order_id]))
    cpu = per_poll(run.steady, log)
    server = 1000 * run.steady.server_cpu / max(run.steady.polls(log), 1)
    print(
        f"  CPU over the steady part: daemons {run.steady.daemons_cpu:.2f} s, PostgreSQL server "
        f"{run.steady.server_cpu:.2f} s, {run.steady.polls(log)} polls: {cpu:.3f} ms per poll "
        f"(+{server:.3f} ms in the server)"
    )
    print(f"  daemons' exit codes on SIGTERM: {run.exit_codes}")
    print("  daemon log events: " + ", ".join(f"{k} x{v}" for k, v in sorted(run.events.items())))
    return [
        Row(
            "combined pace, steady part (x budget)",
            f"{steady:.3f}",
            "0.95-1.00",
            met=0.95 <= steady <= 1.0,
        ),
        Row(
            "busiest one-second window (requests)",
            f"{busiest}",
            f"<= {plan.rate:g}",
            met=busiest <= plan.rate,
        ),
        Row("orders polled twice (not crash re-polls)", f"{len(others)}", "0", met=not others),
    ]


def takeover_report(run: FleetRun) -> list[Row]:
    """Print the takeover times; return their rows of the table."""
    repolled = run.log.first_poll_after(run.killed_at, run.held)
    delays = sorted(t - run.killed_at for t in repolled.values())
    before = {r.order_id for r in run.log.between(run.began, run.killed_at)}
    in_flight = len(run.held & before)
    missing = len(run.held) - len(delays)
    print(
        f"  takeover: the killed daemon held {len(run.held)} orders ({in_flight} of them already "
        f"requested before the kill); {len(delays)} requested again, {missing} not within "
        f"{TAKEOVER_BOUND + TAKEOVER_SLACK:.0f} s; restarted "
        f"{run.restarted_at - run.killed_at:.1f} s after the kill"
    )
    killed_utc = run.began_utc + timedelta(seconds=run.killed_at - run.began)
    released = [f"{(moment - killed_utc).total_seconds():+.1f} s" for moment in run.taken_over]
    print(f"  orders taken over (in the daemons' logs) at: {', '.join(released) or 'never'}")
    if not delays:
        return [Row("takeover after SIGKILL, max (s)", "none", f"<= {TAKEOVER_BOUND}", met=False)]
    worst, middle = delays[-1], statistics.median(delays)
    print(
        f"  time from the kill to the next request: min {delays[0]:.1f} s, "
        f"median {middle:.1f} s, max {worst:.1f} s"
    )
    return [
        Row("takeover after SIGKILL, median (s)", f"{middle:.1f}"),
        Row(
            "takeover after SIGKILL, max (s)",
            f"{worst:.1f}" + (f" ({missing} never)" if missing else ""),
            f"<= {TAKEOVER_BOUND} (2 x timeout + 60)",
            met=worst <= TAKEOVER_BOUND and not missing,
        ),
    ]


def per_poll(window: Window, log: RequestLog) -> float:
    """Milliseconds of the daemons' CPU per poll in ``window``."""
    return 1000 * window.daemons_cpu / max(window.polls(log), 1)


def solo_report(plan: Plan, run: SoloRun) -> float:
    """Print the SQLite run's details; return its CPU per poll (ms)."""
    log = run.log
    print(f"\nSQLite, 1 daemon, {plan.orders} orders, budget {plan.rate:g} req/s")
    steady = pace(log, run.steady.start, run.steady.end, plan.rate)
    times = [r.at for r in log.requests]
    busiest, _ = busiest_window(times)
    over = seconds_over(times, run.began, plan.rate)
    cpu = per_poll(run.steady, log)
    print(
        f"  pace over t={run.steady.start - run.began:.1f}..{run.steady.end - run.began:.1f} s: "
        f"{steady:.3f}; busiest one-second window {busiest} ({over} seconds with a window over "
        f"the budget); CPU {run.steady.daemons_cpu:.2f} s "
        f"for {run.steady.polls(log)} polls: {cpu:.3f} ms per poll; exit code {run.exit_code}"
    )
    return cpu


def print_table(rows: Sequence[Row]) -> None:
    """The summary."""
    print(f"\n{'measure':<44} {'value':>14}  {'goal':<28} met")
    for row in rows:
        met = "" if row.met is None else ("yes" if row.met else "NO")
        print(f"{row.measure:<44} {row.value:>14}  {row.goal:<28} {met}")


# -- main ------------------------------------------------------------------------------------


def plan_from(args: argparse.Namespace) -> Plan:
    """The run's sizes: ``--quick`` shrinks what was not given explicitly."""
    quick = {"orders": 2000, "seconds": 60.0, "sqlite_seconds": 25.0, "warmup": 10.0}
    full = {"orders": 10_000, "seconds": 200.0, "sqlite_seconds": 60.0, "warmup": 15.0}
    chosen: dict[str, Any] = quick if args.quick else full
    given = {k: v for k, v in vars(args).items() if k in chosen and v is not None}
    plan = Plan(rate=args.rate, **(chosen | given))
    if plan.rate * plan.kill_after > plan.orders:
        print(f"warning: {plan.orders} orders run out before the kill; the steady pace will be low")
    return plan


@contextmanager
def workspace(keep: Path | None, name: str) -> Iterator[Path]:
    """A temporary folder for one run, or ``keep/name`` (created, left in place)."""
    if keep is not None:
        folder = keep / name
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
        return
    with tempfile.TemporaryDirectory() as temporary:
        yield Path(temporary)


def main() -> None:
    """Run both, print the details and one table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer orders, shorter")
    parser.add_argument("--orders", type=int, help="watched orders (default 10000; quick 2000)")
    parser.add_argument("--seconds", type=float, help="the PostgreSQL run (default 200; quick 60)")
    parser.add_argument(
        "--sqlite-seconds", type=float, help="the SQLite run (default 60; quick 25)"
    )
    parser.add_argument("--warmup", type=float, help="seconds before the steady part (15; 10)")
    parser.add_argument("--rate", type=float, default=40.0, help="upstream.requests_per_second")
    parser.add_argument(
        "--keep", type=Path, help="keep configs, daemon logs and request logs in this folder"
    )
    args = parser.parse_args()
    plan = plan_from(args)
    tracker = tracker_executable()
    began = time.monotonic()
    # Run with -m, argv[0] is the file's path: say how it was started.
    how = ["-m", __spec__.name] if __spec__ is not None else sys.argv[:1]
    print(f"command: {shlex.join([sys.executable, *how, *sys.argv[1:]])}")
    print(
        f"{os.cpu_count()} CPUs; SQLite {sqlite3.sqlite_version}; {plan.orders} orders; budget "
        f"{plan.rate:g} req/s; interval {plan.interval:.0f} s; upstream.timeout {TIMEOUT} s; "
        f"max_concurrency {CONCURRENCY}"
    )
    with running_cluster() as cluster, workspace(args.keep, "postgresql") as folder:
        fleet = fleet_run(plan, cluster, tracker, folder)
    with workspace(args.keep, "sqlite") as folder:
        solo = solo_run(plan, tracker, folder)
    rows = fleet_report(plan, fleet)
    takeover = takeover_report(fleet)
    sqlite_cpu = solo_report(plan, solo)
    pg_cpu = per_poll(fleet.steady, fleet.log)
    server_cpu = 1000 * fleet.steady.server_cpu / max(fleet.steady.polls(fleet.log), 1)
    ratio = pg_cpu / sqlite_cpu if sqlite_cpu else float("nan")
    with_server = (pg_cpu + server_cpu) / sqlite_cpu if sqlite_cpu else float("nan")
    rows += [
        Row(f"CPU per poll, PostgreSQL x{FLEET} daemons (ms)", f"{pg_cpu:.3f}"),
        Row("CPU per poll, SQLite x1 (ms)", f"{sqlite_cpu:.3f}"),
        Row("CPU per poll, PostgreSQL / SQLite", f"{ratio:.2f}", "<= 1.5", met=ratio <= 1.5),
        Row("  the same, PostgreSQL server's CPU added", f"{with_server:.2f}"),
        *takeover,
    ]
    print_table(rows)
    print(f"\nwhole benchmark: {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
