"""Abuse benchmark (issue 17): can anyone on the other side of a socket stop the watching?

Everything runs as a user would run it: ``tracker run`` as a child process with a TOML
configuration, against the steady simulator in a process of its own (``--request-log``: every
poll it answers is written down with its ``time.monotonic``, one clock for every process on
Linux). Three parts (``--part``, default ``all``):

1. ``abuse``: SQLite, 300 orders due every 30 s (10 polls/s; budget 50 req/s, so a backlog is
   cleared quickly), an ``[http] listen`` on loopback with a read and a write user and a
   ``webhook_secret`` (so ``POST /hooks/nomos`` exists), and 10,000 more orders with 30,000
   transitions (~9.6 MB of NDJSON) for the exports to stream. The daemon runs with
   ``RLIMIT_NOFILE`` 1024 soft and hard (``ulimit -n 1024``, Debian's default soft limit) in
   every window. Windows of ``--seconds`` each: a baseline without abuse, then

   - 15 unread exports: a read user's ``GET /api/v1/transitions?since=2000-01-01`` on raw
     sockets (receive buffer 4 KiB) that never read a byte and stay open;
   - 50 slowloris connections: a partial request head, one more header line every 2 s, never
     finished (a connection the server closes is opened again);
   - a login brute force: 3 clients POSTing wrong tokens to ``/login`` and 2 POSTing unsigned
     hints to ``/hooks/nomos``, each back to back on a keep-alive connection;
   - 1,100 idle sockets: connected, nothing ever sent.

   Before each window the orders' due times are spread evenly over the interval again (so a
   backlog left by the window before does not inflate the next), and after it the abuse stops
   and the run waits for ``/readyz`` to answer 200 (at most 30 s) and for the backlog to be
   polled (no order more than 3 s overdue, at most 60 s). Per window: polls/s (the
   simulator's 200 answers to ``GET /meter-orders/ID`` inside the window) against the
   baseline's (goal >= 0.90); polls that failed (``tracker_polls_total{result="failed"}`` from
   ``/metrics``, scraped before the abuse starts and after it ends); orders answered in the
   window whose poll was not recorded by its end (``watched_orders.last_polled_at``);
   ``/readyz`` probed every 0.5 s by a fresh connection with a 3 s timeout (goal: every probe
   200; 3 s, so that the 503 of a database check that took its 2 s shows as a 503); the
   daemon's log growth, CPU and open descriptors; what became of the abusive connections (TCP
   state at the end, bytes the server managed to send).

2. ``poison``: a throwaway PostgreSQL cluster (``tests.postgres``), 200 orders of which 5 answer
   a status of 65-300 characters or with a NUL (the simulator's own app, served by a child of
   this script), ``sweep = "list"``. Pass 1 is the start (every order due, nothing known);
   each further pass makes all 200 due at once and waits until the 195 healthy orders were
   recorded (``last_success_at``), at most 15 s. Per pass: healthy orders recorded, list and id
   requests, failed polls, how the poison orders stand (``consecutive_failures``,
   ``last_error_kind``: what ``tracker watch list`` shows) and ``/readyz``. Goal: all 195 every
   pass, the 5 reported failing.

3. ``memory``: SQLite, the daemon's VmRSS before and while 250 connections each hold an
   unfinished ``POST /login`` (Content-Length 1 MiB, all but the last byte sent).
   Goal: growth <= 50 MiB.

Run it from the repository with its virtualenv (about 5 to 6 minutes with the defaults)::

    .venv/bin/python benchmarks/bench_abuse.py [--part all|abuse|poison|memory] [--seconds S]
        [--passes N] [--keep DIR]

``--seconds`` sets the length of each abuse window (default 30) and the memory hold (at most
15). All traffic goes to 127.0.0.1; every loop is bounded; the daemons, the upstreams, the
PostgreSQL cluster and every socket are stopped or closed when a part ends, on Ctrl-C or on
SIGTERM too. It is not part of ``make bench`` (yet).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import fcntl
import json
import random
import resource
import shlex
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import bindparam, func, or_, select, update

from tracker.store.tables import watched_orders

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a file, not with ``-m``
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_api import Server, free_port, stats  # noqa: E402 - needs the root on the path
from benchmarks.bench_api import load as load_history  # noqa: E402
from benchmarks.bench_hostile import log_summary, memory_kib  # noqa: E402
from benchmarks.bench_sweep import _metric  # noqa: E402
from benchmarks.common import SteadySimulator, sync_engine, tracker_executable  # noqa: E402

HOST = "127.0.0.1"  # every socket of this benchmark is on loopback
TOKEN = "nom_bench_token"  # noqa: S105 - the simulator's throwaway token
READ_TOKEN = "bench-abuse-read-7f3a9c2e5b1d"  # noqa: S105 - this run's throwaway API tokens
WRITE_TOKEN = "bench-abuse-write-c81d4b6a09e2"  # noqa: S105
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"abuse-benchmark-signing-key-0032").decode()

ORDERS = 300  # polled by id, each every INTERVAL seconds: ORDERS / INTERVAL polls/s
INTERVAL = 30
BUDGET = 50  # requests/s: well above the 10 polls/s, so the budget is never the limit
CONCURRENCY = 8
#: Orders with histories loaded for the exports: 3 transitions each, ~320 bytes of NDJSON per
#: transition, so ~9.6 MB per export: more than the kernel's socket buffers can swallow.
EXPORT_ORDERS = 10_000
FILE_LIMIT = 1024  # the daemon's RLIMIT_NOFILE, soft and hard

EXPORTS = 15
EXPORT_RCVBUF = 4096
SLOWLORIS = 50
SLOWLORIS_EVERY = 2.0  # seconds between two header lines of a slowloris connection
LOGIN_CLIENTS = 3
HOOK_CLIENTS = 2
IDLE_SOCKETS = 1_100
CONNECT_LIMIT = 3.0  # seconds one connect may take (a full backlog drops SYNs)
SETUP_LIMIT = 20.0  # seconds the abusers get to open their connections
ANSWER_LIMIT = 5.0  # seconds a brute-force client waits for an answer

PROBE_EVERY = 0.5
PROBE_TIMEOUT = 3.0  # more than the 2 s /readyz gives the database: its 503 is seen
START_LIMIT = 60.0  # seconds a daemon gets to answer /readyz 200 after its start
FIRST_PASS_LIMIT = 60.0  # seconds for the first pass over the orders
RECOVER_LIMIT = 30.0  # seconds after an abuse for /readyz to answer 200 again
#: Seconds after an abuse for the backlog it left to be polled: the next window starts clean.
CATCH_UP_LIMIT = 60.0
OVERDUE = 3.0  # seconds past its due time that make an order part of a backlog
SETTLE = 1.0  # seconds between spreading the due times and a window
GOAL_RATIO = 0.90

HEALTHY = 195
#: The poison orders' statuses: longer than the 64 characters of the column, or with a NUL.
POISON_STATUSES = (
    "ordered" + "_" * 58,
    "checked\x00",
    "x" * 300,
    "installation_planning\x00<script>",
    "o" * 65,
)
POISON_BUDGET = 50
PASS_LIMIT = 15.0
UPSTREAM_LIMIT = 900.0  # the poison upstream child stops itself after this long

MEMORY_CONNECTIONS = 250
BODY_BYTES = 1024 * 1024
SEND_CHUNK = 64 * 1024
SEND_LIMIT = 30.0  # seconds to send the 250 bodies (less once a server stops reading them)
MEMORY_HOLD_MAX = 15.0
RSS_EVERY = 0.2
GOAL_RSS_MIB = 50.0

TCP_ESTABLISHED = 1
TCP_STATES = {1: "established", 7: "closed", 8: "closed by the server (FIN)"}


# -- configuration and processes -----------------------------------------------------------------


def write_config(
    folder: Path,
    *,
    upstream: str,
    database: str,
    port: int,
    sweep: str,
    interval: str,
    budget: float,
    watch: Sequence[str] = (),
) -> Path:
    """A ``tracker.toml``: the upstream with a hint secret, info-level JSON logs, a listener
    on loopback with a read and a write user, and ``watch`` in ``[watch]``."""
    lines = [
        "[upstream]",
        f"base_url = {json.dumps(upstream)}",
        f"token = {json.dumps(TOKEN)}",
        f"requests_per_second = {budget}",
        f"max_concurrency = {CONCURRENCY}",
        "timeout = 10",
        f"webhook_secret = {json.dumps(WEBHOOK_SECRET)}",
        "[database]",
        f"url = {json.dumps(database)}",
        "[polling]",
        f"interval = {json.dumps(interval)}",
        f"sweep = {json.dumps(sweep)}",
        "[log]",
        'format = "json"',
        'level = "info"',
        "[watch]",
        f"orders = {json.dumps(list(watch))}",
        "[http]",
        f'listen = "{HOST}:{port}"',
        "[[http.users]]",
        'name = "reader"',
        f"token = {json.dumps(READ_TOKEN)}",
        'role = "read"',
        "[[http.users]]",
        'name = "writer"',
        f"token = {json.dumps(WRITE_TOKEN)}",
        'role = "write"',
    ]
    path = folder / "tracker.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def steady_config(folder: Path, simulator: SteadySimulator, database: str, port: int) -> Path:
    """The configuration of the abuse and memory parts: the steady orders polled by id."""
    return write_config(
        folder,
        upstream=simulator.url,
        database=database,
        port=port,
        sweep="ids",
        interval=f"{INTERVAL}s",
        budget=BUDGET,
        watch=simulator.ids,
    )


def _limit_files(limit: int) -> None:
    """In the child before exec: RLIMIT_NOFILE soft and hard ``limit``."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


def raise_own_file_limit(needed: int) -> int:
    """This process holds ``needed`` sockets at once: its soft limit up to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = needed if hard == resource.RLIM_INFINITY else min(hard, max(soft, needed))
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        soft = wanted
    return soft


@contextlib.contextmanager
def tracker_run(
    config: Path, port: int, log: Path, *, file_limit: int | None = None
) -> Iterator[Server]:
    """``tracker run`` (RLIMIT_NOFILE ``file_limit`` when given) until the block ends, once
    ``/readyz`` answers 200; stopped with SIGTERM (killed after 30 s) however the block ends."""
    limit = None if file_limit is None else lambda: _limit_files(file_limit)
    with log.open("ab") as out:
        process = subprocess.Popen(
            [tracker_executable(), "--config", str(config), "run"],
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=limit,  # noqa: PLW1509 - no thread of this process is running yet
        )
    server = Server(process, f"http://{HOST}:{port}")
    try:
        deadline = time.monotonic() + START_LIMIT
        while readyz_now(port) != "200":
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(encoding="utf-8", errors="replace")[-2000:]
                raise SystemExit(f"tracker run did not get ready:\n{tail}")
            time.sleep(0.3)
        yield server
    finally:
        server.stop()


def soft_file_limit(pid: int) -> str:
    """The process's open-files limits as /proc shows them (soft/hard)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return f"{soft}/{hard}"
    return "?"


def open_files(pid: int) -> int:
    """Descriptors the process has open now."""
    with contextlib.suppress(OSError):
        return sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())
    return -1


def log_size(log: Path) -> int:
    """Bytes in the daemon's log so far."""
    with contextlib.suppress(OSError):
        return log.stat().st_size
    return 0


def failed_polls(port: int) -> float | None:
    """``tracker_polls_total{result="failed"}`` now, or ``None`` when /metrics does not answer."""
    try:
        return _metric(port).get('tracker_polls_total{result="failed"}', 0.0)
    except OSError:
        return None


async def failed_polls_soon(port: int, limit: float) -> float | None:
    """:func:`failed_polls`, asked again for up to ``limit`` seconds while it does not answer."""
    deadline = time.monotonic() + limit
    while True:
        found = await asyncio.to_thread(failed_polls, port)
        if found is not None or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.5)


# -- the database, as the daemon sees it ------------------------------------------------------


def spread_due(database: str, ids: Sequence[str], over: float) -> None:
    """Make the orders not claimed right now due one after another, evenly over ``over``
    seconds from one second on, as a long-running daemon's jittered schedule has them."""
    now = datetime.now(UTC)
    start, step = now + timedelta(seconds=SETTLE), timedelta(seconds=over / len(ids))
    w = watched_orders
    due = [{"b_id": order_id, "b_due": start + k * step} for k, order_id in enumerate(ids)]
    with sync_engine(database) as engine, engine.begin() as conn:
        conn.execute(
            update(w)
            .where(
                w.c.order_id == bindparam("b_id"),
                or_(w.c.leased_until.is_(None), w.c.leased_until < now),
            )
            .values(next_poll_at=bindparam("b_due")),
            due,
        )


def make_due(database: str, ids: Sequence[str]) -> None:
    """Every one of ``ids`` due now (claimed or not)."""
    w = watched_orders
    with sync_engine(database) as engine, engine.begin() as conn:
        conn.execute(update(w).where(w.c.order_id.in_(ids)).values(next_poll_at=datetime.now(UTC)))


@dataclass(frozen=True, slots=True)
class OrderRow:
    """What the store says about one watched order."""

    order_id: str
    last_polled_at: datetime | None
    last_success_at: datetime | None
    consecutive_failures: int
    last_error_kind: str | None
    leased_until: datetime | None


def order_rows(database: str, ids: Sequence[str]) -> dict[str, OrderRow]:
    """The rows of ``ids``."""
    w = watched_orders.c
    columns = (
        w.order_id,
        w.last_polled_at,
        w.last_success_at,
        w.consecutive_failures,
        w.last_error_kind,
        w.leased_until,
    )
    with sync_engine(database) as engine, engine.connect() as conn:
        found = conn.execute(select(*columns).where(w.order_id.in_(ids))).all()
    return {row[0]: OrderRow(*row) for row in found}


def polled_since(database: str, ids: Sequence[str], moment: datetime) -> set[str]:
    """Those of ``ids`` whose last poll was recorded at or after ``moment``."""
    return {
        row.order_id
        for row in order_rows(database, ids).values()
        if row.last_polled_at is not None and row.last_polled_at >= moment
    }


def overdue(database: str, ids: Sequence[str]) -> int:
    """Those of ``ids`` due more than OVERDUE seconds ago (or never polled): a backlog."""
    cutoff = datetime.now(UTC) - timedelta(seconds=OVERDUE)
    w = watched_orders.c
    with sync_engine(database) as engine, engine.connect() as conn:
        late = select(func.count()).where(
            w.order_id.in_(ids), or_(w.next_poll_at.is_(None), w.next_poll_at < cutoff)
        )
        return int(conn.execute(late).scalar_one())


def wait_caught_up(database: str, ids: Sequence[str]) -> float | None:
    """Seconds until no order of ``ids`` is overdue (``None``: not within CATCH_UP_LIMIT)."""
    began = time.monotonic()
    while time.monotonic() - began < CATCH_UP_LIMIT:
        if overdue(database, ids) == 0:
            return time.monotonic() - began
        time.sleep(0.5)
    return None


def wait_first_pass(database: str, ids: Sequence[str]) -> float:
    """Seconds until every one of ``ids`` was polled once (at most FIRST_PASS_LIMIT)."""
    began = time.monotonic()
    moment = datetime(2000, 1, 1, tzinfo=UTC)
    while time.monotonic() - began < FIRST_PASS_LIMIT:
        if len(polled_since(database, ids, moment)) == len(ids):
            break
        time.sleep(0.5)
    return time.monotonic() - began


# -- raw sockets ----------------------------------------------------------------------------


async def readyz(port: int) -> str:
    """One ``GET /readyz`` on a fresh connection within PROBE_TIMEOUT: its status code, or
    ``timeout`` / the error's name when none came."""
    writer = None
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            line = await reader.readline()
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        return type(exc).__name__
    finally:
        if writer is not None:
            writer.close()
    parts = line.split()
    return parts[1].decode("latin-1") if len(parts) >= 2 else "no answer"


def readyz_now(port: int) -> str:
    """:func:`readyz`, from synchronous code."""
    return asyncio.run(readyz(port))


async def probe_until(port: int, deadline: float) -> Counter[str]:
    """Probe ``/readyz`` every PROBE_EVERY seconds until ``deadline``; the answers counted."""
    probes: list[asyncio.Task[str]] = []
    loop = asyncio.get_running_loop()
    start = loop.time()
    for tick in range(int((deadline - time.monotonic()) / PROBE_EVERY) + 1):
        await asyncio.sleep(max(start + tick * PROBE_EVERY - loop.time(), 0))
        probes.append(asyncio.create_task(readyz(port)))
    return Counter(await asyncio.gather(*probes))


async def ready_again(port: int) -> float | None:
    """Seconds until ``/readyz`` answers 200 (``None``: not within RECOVER_LIMIT)."""
    began = time.monotonic()
    while time.monotonic() - began < RECOVER_LIMIT:
        if await readyz(port) == "200":
            return time.monotonic() - began
        await asyncio.sleep(0.25)
    return None


async def connect(port: int, *, rcvbuf: int | None = None) -> socket.socket:
    """A non-blocking TCP connection to the listener (within CONNECT_LIMIT)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)  # noqa: FBT003 - the socket module's own signature
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        async with asyncio.timeout(CONNECT_LIMIT):
            await asyncio.get_running_loop().sock_connect(sock, (HOST, port))
    except BaseException:
        sock.close()
        raise
    return sock


def tcp_state(sock: socket.socket) -> str:
    """The connection's TCP state, as this end sees it."""
    try:
        state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
    except OSError:
        return "gone"
    return TCP_STATES.get(state, f"state {state}")


def unread_bytes(sock: socket.socket) -> int:
    """Bytes the server sent that wait unread in this end's receive buffer."""
    try:
        found = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except OSError:
        return 0
    return int(struct.unpack("i", found)[0])


def states(sockets: Sequence[socket.socket]) -> str:
    """How many connections are in each TCP state."""
    counted = Counter(tcp_state(sock) for sock in sockets)
    return ", ".join(f"{count} {state}" for state, count in counted.most_common())


# -- the abusers ----------------------------------------------------------------------------


class Abuse:
    """No abuse: the baseline. Subclasses open connections in :meth:`start`, keep at it in
    :meth:`keep` until the deadline, and say what happened in :meth:`summary`."""

    name = "baseline (no abuse)"

    def __init__(self, port: int) -> None:
        """Abuse the listener on ``port``."""
        self.port = port
        self.sockets: list[socket.socket] = []
        self.failed_connects = 0

    async def start(self) -> None:
        """Open the connections."""

    async def keep(self, deadline: float) -> None:
        """Keep at it until ``deadline`` (monotonic seconds)."""
        await asyncio.sleep(max(deadline - time.monotonic(), 0))

    def summary(self) -> str:
        """What happened, just before the connections are closed."""
        return ""

    def close(self) -> None:
        """Close every connection."""
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()

    async def open_many(self, count: int, first_bytes: bytes, rcvbuf: int | None = None) -> None:
        """Open ``count`` connections (in parallel groups of 100, within SETUP_LIMIT), each
        sending ``first_bytes`` once connected."""
        loop = asyncio.get_running_loop()

        async def one() -> None:
            try:
                sock = await connect(self.port, rcvbuf=rcvbuf)
            except (OSError, TimeoutError):
                self.failed_connects += 1
                return
            self.sockets.append(sock)
            if first_bytes:
                with contextlib.suppress(OSError):
                    await loop.sock_sendall(sock, first_bytes)

        deadline = time.monotonic() + SETUP_LIMIT
        for group in range(0, count, 100):
            if time.monotonic() > deadline:
                self.failed_connects += count - group
                break
            await asyncio.gather(*(one() for _ in range(min(100, count - group))))


class UnreadExports(Abuse):
    """A read user's exports that the client never reads."""

    name = f"{EXPORTS} unread exports"

    async def start(self) -> None:
        """Send the requests; never read."""
        request = (
            "GET /api/v1/transitions?since=2000-01-01 HTTP/1.1\r\n"
            f"Host: {HOST}:{self.port}\r\nAuthorization: Bearer {READ_TOKEN}\r\n\r\n"
        ).encode()
        await self.open_many(EXPORTS, request, rcvbuf=EXPORT_RCVBUF)

    def summary(self) -> str:
        """The connections' states and what the server got to send."""
        unread = [unread_bytes(sock) for sock in self.sockets]
        return (
            f"{len(self.sockets)} sent ({self.failed_connects} could not connect); at the end: "
            f"{states(self.sockets)}; bytes waiting unread per connection: median "
            f"{statistics.median(unread) if unread else 0:.0f}, max {max(unread, default=0)}"
        )


class IdleSockets(Abuse):
    """Connections that never send a byte."""

    name = f"{IDLE_SOCKETS:,} idle sockets (ulimit -n {FILE_LIMIT})"

    async def start(self) -> None:
        """Connect; send nothing."""
        await self.open_many(IDLE_SOCKETS, b"")

    def summary(self) -> str:
        """The connections' states."""
        return (
            f"{len(self.sockets)} connected ({self.failed_connects} could not connect); "
            f"at the end: {states(self.sockets)}"
        )


class Slowloris(Abuse):
    """Request heads that grow by a header line every SLOWLORIS_EVERY seconds, never ending."""

    name = f"{SLOWLORIS} slowloris connections"
    HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"

    def __init__(self, port: int) -> None:
        """Abuse the listener on ``port``."""
        super().__init__(port)
        self.lines = 0
        self.closed_by_server = 0
        self.reopened = 0

    async def start(self) -> None:
        """Open the connections with the first line of a head."""
        await self.open_many(SLOWLORIS, self.HEAD)

    async def keep(self, deadline: float) -> None:
        """A header line on each connection every SLOWLORIS_EVERY s; reopen closed ones."""
        for _ in range(int(max(deadline - time.monotonic(), 0) / SLOWLORIS_EVERY) + 1):
            await asyncio.sleep(min(SLOWLORIS_EVERY, max(deadline - time.monotonic(), 0)))
            if time.monotonic() >= deadline:
                break
            for index, sock in enumerate(list(self.sockets)):
                if tcp_state(sock) == TCP_STATES[TCP_ESTABLISHED]:
                    with contextlib.suppress(OSError):
                        sock.send(b"X-Slow-%d: %d\r\n" % (self.lines, index))
                        self.lines += 1
                        continue
                self.closed_by_server += 1  # it ended, or a line could not be sent
                sock.close()
                self.sockets.remove(sock)
            await self._reopen(deadline)

    async def _reopen(self, deadline: float) -> None:
        """Open new connections for the ones the server closed, while time remains."""
        missing = SLOWLORIS - len(self.sockets)
        if missing > 0 and time.monotonic() < deadline:
            before = len(self.sockets)
            await self.open_many(missing, self.HEAD)
            self.reopened += len(self.sockets) - before

    def summary(self) -> str:
        """Lines sent, connections the server closed."""
        return (
            f"{self.lines} header lines sent; {self.closed_by_server} connections found closed "
            f"by the server and {self.reopened} reopened; at the end: {states(self.sockets)}"
        )


@dataclass(slots=True)
class Hammer:
    """One kind of brute-force request and the answers it got."""

    what: str
    clients: int
    make: Callable[[], bytes]  # the next request
    answers: Counter[str] = field(default_factory=Counter)

    def rate(self, seconds: float) -> str:
        """Requests per second and the answers."""
        total = sum(self.answers.values())
        answers = ", ".join(f"{status}: {n}" for status, n in self.answers.most_common())
        return f"{self.what}: {total / seconds:.0f}/s ({answers or 'none'})"


async def read_answer(reader: asyncio.StreamReader) -> tuple[str, bool]:
    """An answer's status, and whether the connection must be opened again after it."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ")[1] if " " in lines[0] else "?"
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip().lower()
    length = headers.get("content-length")
    if length is None or not length.isdigit():
        return status, True  # no length (chunked, or to the end): start a new connection
    await reader.readexactly(int(length))
    return status, headers.get("connection") == "close"


async def hammer(port: int, kind: Hammer, deadline: float) -> None:
    """Send ``kind``'s requests back to back on a keep-alive connection until ``deadline``."""
    writer: asyncio.StreamWriter | None = None
    reader: asyncio.StreamReader | None = None
    try:
        while time.monotonic() < deadline:
            try:
                async with asyncio.timeout(ANSWER_LIMIT):
                    if writer is None or reader is None:
                        reader, writer = await asyncio.open_connection(HOST, port)
                    writer.write(kind.make())
                    status, again = await read_answer(reader)
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                status, again = type(exc).__name__, True
                await asyncio.sleep(0.05)  # a refused connect is not retried in a busy loop
            kind.answers[status] += 1
            if again and writer is not None:
                writer.close()
                writer = reader = None
    finally:
        if writer is not None:
            writer.close()


class BruteForce(Abuse):
    """Wrong tokens POSTed to /login and unsigned hints to /hooks/nomos, as fast as a few
    clients can."""

    name = "login brute force + unsigned hooks"

    def __init__(self, port: int) -> None:
        """Abuse the listener on ``port``."""
        super().__init__(port)
        self.guesses = random.Random(17)
        self.login = Hammer("wrong-token POST /login", LOGIN_CLIENTS, self._login)
        self.hooks = Hammer("unsigned POST /hooks/nomos", HOOK_CLIENTS, self._hook)
        self.seconds = 0.0

    def _login(self) -> bytes:
        guess = "".join(self.guesses.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=28))
        body = f"token={guess}&next=%2F".encode()
        return (
            b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )

    def _hook(self) -> bytes:
        body = json.dumps(
            {"id": f"evt_{self.guesses.randrange(10**9)}", "type": "meter_order.updated"}
        ).encode()
        return (
            b"POST /hooks/nomos HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )

    async def keep(self, deadline: float) -> None:
        """Every client hammering until ``deadline``."""
        began = time.monotonic()
        await asyncio.gather(
            *(
                hammer(self.port, kind, deadline)
                for kind in (self.login, self.hooks)
                for _ in range(kind.clients)
            )
        )
        self.seconds = time.monotonic() - began

    def summary(self) -> str:
        """Attempts per second and answers."""
        seconds = max(self.seconds, 1e-9)
        return f"{self.login.rate(seconds)}; {self.hooks.rate(seconds)}"


# -- part 1: polls/s and readiness under abuse -------------------------------------------------


@dataclass(slots=True)
class Window:
    """What one window measured."""

    name: str
    seconds: float
    polls_per_second: float
    answered: int
    unrecorded: int
    failed: float | None
    probes: Counter[str]
    log_bytes: int
    cpu: float
    summary: str
    ready_after: float | None
    caught_up: float | None
    open_files: int

    def probes_ok(self) -> int:
        """Probes answered 200."""
        return self.probes.get("200", 0)


@dataclass(slots=True)
class Stage:
    """The running daemon and its upstream, shared by the windows."""

    server: Server
    simulator: SteadySimulator
    database: str
    port: int
    log: Path
    seconds: float


async def measure_window(stage: Stage, abuse: Abuse) -> Window:
    """One window of ``stage.seconds`` with ``abuse`` going on (set up first, torn down after)."""
    await asyncio.to_thread(spread_due, stage.database, stage.simulator.ids, INTERVAL)
    await asyncio.sleep(SETTLE)
    failed_before = await asyncio.to_thread(failed_polls, stage.port)
    pid = stage.server.process.pid
    try:
        await abuse.start()
        start, wall = time.monotonic(), datetime.now(UTC)
        log_before, cpu_before = log_size(stage.log), stage.server.cpu()
        deadline = start + stage.seconds
        probing = asyncio.create_task(probe_until(stage.port, deadline))
        await abuse.keep(deadline)
        end = time.monotonic()
        cpu, summary, files = stage.server.cpu() - cpu_before, abuse.summary(), open_files(pid)
        recorded = await asyncio.to_thread(polled_since, stage.database, stage.simulator.ids, wall)
        log_bytes = log_size(stage.log) - log_before
        probes = await probing
    finally:
        abuse.close()
    failed_after = await failed_polls_soon(stage.port, RECOVER_LIMIT)
    ready_after = await ready_again(stage.port)
    caught_up = await asyncio.to_thread(wait_caught_up, stage.database, stage.simulator.ids)
    stage.simulator.log.refresh()
    polls = [r for r in stage.simulator.log.between(start, end) if r.order_id and r.status == 200]
    # Answers of the window's last second may still be on their way to the database.
    answered = {r.order_id for r in polls if r.at < end - 1.0 and r.order_id is not None}
    failed = None
    if failed_before is not None and failed_after is not None:
        failed = failed_after - failed_before
    return Window(
        name=abuse.name,
        seconds=end - start,
        polls_per_second=len(polls) / (end - start),
        answered=len(answered),
        unrecorded=len(answered - recorded),
        failed=failed,
        probes=probes,
        log_bytes=log_bytes,
        cpu=cpu,
        summary=summary,
        ready_after=ready_after,
        caught_up=caught_up,
        open_files=files,
    )


async def run_windows(stage: Stage) -> list[Window]:
    """The baseline and each abuse in turn, printed as they finish."""
    windows: list[Window] = []
    for kind in (Abuse, UnreadExports, Slowloris, BruteForce, IdleSockets):
        print(f"   {kind.name} ...", flush=True)
        windows.append(await measure_window(stage, kind(stage.port)))
    return windows


def abuse_part(folder: Path, seconds: float) -> None:
    """Part 1."""
    print(
        f"\n1. polls/s and /readyz under abuse: SQLite, {ORDERS} orders every {INTERVAL} s "
        f"by id (~{ORDERS / INTERVAL:.0f} polls/s, budget {BUDGET} req/s), daemon with "
        f"RLIMIT_NOFILE {FILE_LIMIT}/{FILE_LIMIT}, windows of {seconds:g} s"
    )
    own = raise_own_file_limit(IDLE_SOCKETS + 300)
    if own < IDLE_SOCKETS + 100:
        print(f"   this process may open only {own} files: the idle-socket window is short")
    database = f"sqlite:///{folder / 'tracker.db'}"
    took = load_history(database, EXPORT_ORDERS)
    print(
        f"   loaded {EXPORT_ORDERS:,} orders with {3 * EXPORT_ORDERS:,} transitions for the "
        f"exports in {took:.1f} s",
        flush=True,
    )
    simulator = SteadySimulator.start(ORDERS, TOKEN, folder / "requests.log")
    try:
        port = free_port()
        config = steady_config(folder, simulator, database, port)
        log = folder / "daemon.log"
        with tracker_run(config, port, log, file_limit=FILE_LIMIT) as server:
            first = wait_first_pass(database, simulator.ids)
            print(
                f"   daemon pid {server.process.pid}, open files limit "
                f"{soft_file_limit(server.process.pid)}; first pass {first:.1f} s",
                flush=True,
            )
            stage = Stage(server, simulator, database, port, log, seconds)
            windows = asyncio.run(run_windows(stage))
    finally:
        simulator.stop()
    report_windows(windows, server.process.returncode)
    for line in log_summary(log):
        print(f"   log (whole run) {line}")


def report_windows(windows: list[Window], exit_code: int | None) -> None:
    """The windows as a table, then each abuse's details."""
    baseline = windows[0].polls_per_second
    head = (
        "window",
        "polls/s",
        "vs base",
        "failed",
        "unrecorded",
        "/readyz 200",
        "log KiB",
        "CPU s/s",
        "fds",
        "ready after",
        "caught up",
        "goals",
    )
    rows = [head]
    for w in windows:
        ratio = w.polls_per_second / baseline if baseline else 0.0
        met = ratio >= GOAL_RATIO and w.probes_ok() == sum(w.probes.values())
        rows.append(
            (
                w.name,
                f"{w.polls_per_second:.2f}",
                f"{ratio:.3f}",
                "?" if w.failed is None else f"{w.failed:.0f}",
                f"{w.unrecorded}/{w.answered}",
                f"{w.probes_ok()}/{sum(w.probes.values())}",
                f"{w.log_bytes / 1024:.0f}",
                f"{w.cpu / w.seconds:.2f}",
                str(w.open_files),
                "-" if w.ready_after is None else f"{w.ready_after:.1f} s",
                "-" if w.caught_up is None else f"{w.caught_up:.1f} s",
                "met" if met else "NOT met",
            )
        )
    print_table(rows)
    print(
        f"   polls/s: the simulator's 200 answers to GET /meter-orders/ID in the window; goal "
        f">= {GOAL_RATIO:.2f} x the baseline and every /readyz probe 200 (every "
        f"{PROBE_EVERY} s, fresh connection, {PROBE_TIMEOUT:g} s timeout). failed: polls "
        'counted in tracker_polls_total{result="failed"} (? = /metrics did not answer); '
        "unrecorded: orders answered in the window (but its last second) whose poll the "
        "database did not hold at its end; fds: the daemon's open descriptors at the end; "
        "ready after: seconds until /readyz answered 200 once the abuse stopped ('-': not "
        f"within {RECOVER_LIMIT:.0f} s); caught up: seconds after that until no order was "
        f"more than {OVERDUE:g} s overdue ('-': not within {CATCH_UP_LIMIT:.0f} s; the next "
        "window starts only then)"
    )
    for w in windows:
        probes = ", ".join(f"{status}: {n}" for status, n in w.probes.most_common())
        print(f"   {w.name}: /readyz {probes}" + (f"; {w.summary}" if w.summary else ""))
    print(f"   daemon exit code after SIGTERM: {exit_code}")


def print_table(rows: Sequence[Sequence[str]]) -> None:
    """Left-aligned columns, a rule under the head."""
    width = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [rows[0], ["-" * w for w in width], *rows[1:]]
    for row in lines:
        print("   " + "  ".join(cell.ljust(width[i]) for i, cell in enumerate(row)).rstrip())


# -- part 2: poison orders on PostgreSQL ------------------------------------------------------


async def serve_poison() -> None:
    """The child that serves the simulator's app with HEALTHY steady orders and one poison
    order per POISON_STATUSES; it announces its URL and ids on stdout, then serves until
    terminated (or UPSTREAM_LIMIT seconds)."""
    from tracker.config import LogSettings  # noqa: PLC0415 - the child's alone
    from tracker.demo.serving import serve  # noqa: PLC0415
    from tracker.demo.simulator import Script, Simulator, order_id, steady_scripts  # noqa: PLC0415
    from tracker.logs import configure  # noqa: PLC0415

    # Log lines go to stderr, as the simulator's do: stdout's first line is the announcement.
    configure(LogSettings(format="console", level="warning"), stream=sys.stderr)
    healthy = steady_scripts(HEALTHY)
    poison = [
        Script(order_id=order_id(f"poison-{i}"), provider="metrify", steps=((status, 0.0),))
        for i, status in enumerate(POISON_STATUSES)
    ]
    simulator = Simulator([*healthy, *poison], static_token=TOKEN)
    async with serve(simulator.app) as server:
        announcement = {
            "url": server.url,
            "healthy": [s.order_id for s in healthy],
            "poison": [s.order_id for s in poison],
        }
        print(json.dumps(announcement), flush=True)
        await asyncio.sleep(UPSTREAM_LIMIT)


@contextlib.contextmanager
def poison_upstream() -> Iterator[tuple[str, list[str], list[str]]]:
    """:func:`serve_poison` in a child process: its URL, healthy ids and poison ids."""
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve-poison"], stdout=subprocess.PIPE, text=True
    )
    try:
        if process.stdout is None:
            raise RuntimeError("the upstream has no stdout")
        announced = json.loads(process.stdout.readline())
        yield announced["url"], announced["healthy"], announced["poison"]
    finally:
        process.terminate()
        process.wait()


@dataclass(slots=True)
class Pass:
    """What one pass over the 200 orders showed."""

    number: int
    seconds: float
    healthy_recorded: set[str]
    poison: list[OrderRow]
    poison_recorded: int
    leased: int
    list_requests: int
    id_requests: int
    failed: float | None
    ready: str


def succeeded_since(rows: dict[str, OrderRow], ids: Sequence[str], moment: datetime) -> set[str]:
    """Those of ``ids`` whose last successful poll was recorded at or after ``moment``."""
    return {i for i in ids if (at := rows[i].last_success_at) is not None and at >= moment}


def one_pass(
    number: int, database: str, port: int, upstream: str, ids: tuple[list[str], list[str]]
) -> Pass:
    """Make every order due (pass 1: the start did) and wait until the healthy ones were
    recorded, at most PASS_LIMIT seconds. Pass 1 counts from the daemon's start."""
    healthy, poison = ids
    everything = [*healthy, *poison]
    failed_before: float | None
    if number == 1:
        before, failed_before = {"list_requests": 0, "id_requests": 0}, 0.0
        moment = datetime.now(UTC) - timedelta(seconds=START_LIMIT)
    else:
        before, failed_before = stats(upstream), failed_polls(port)
        moment = datetime.now(UTC)
        make_due(database, everything)
    began = time.monotonic()
    for _ in range(int(PASS_LIMIT / 0.5)):
        if len(succeeded_since(order_rows(database, everything), healthy, moment)) == len(healthy):
            break
        time.sleep(0.5)
    seconds = time.monotonic() - began
    time.sleep(0.5)  # the poison orders' outcomes are recorded with (or right after) the rest
    rows = order_rows(database, everything)
    after, failed_after = stats(upstream), failed_polls(port)
    now = datetime.now(UTC)
    return Pass(
        number=number,
        seconds=seconds,
        healthy_recorded=succeeded_since(rows, healthy, moment),
        poison=[rows[i] for i in poison],
        poison_recorded=sum(
            1 for i in poison if (at := rows[i].last_polled_at) is not None and at >= moment
        ),
        leased=sum(1 for row in rows.values() if row.leased_until and row.leased_until > now),
        list_requests=after["list_requests"] - before["list_requests"],
        id_requests=after["id_requests"] - before["id_requests"],
        failed=None
        if failed_before is None or failed_after is None
        else failed_after - failed_before,
        ready=readyz_now(port),
    )


def poison_part(folder: Path, passes: int) -> None:
    """Part 2."""
    from tests.postgres import running_cluster  # noqa: PLC0415 - only this part needs it

    print(
        f"\n2. poison orders on PostgreSQL: {HEALTHY} healthy + {len(POISON_STATUSES)} poison "
        f"(status lengths {', '.join(str(len(s)) for s in POISON_STATUSES)}; "
        f"{sum(1 for s in POISON_STATUSES if chr(0) in s)} with a NUL), sweep = list, "
        f"{passes} passes (each at most {PASS_LIMIT:g} s)",
        flush=True,
    )
    with running_cluster() as cluster, poison_upstream() as (upstream, healthy, poison):
        database = cluster.clone()
        port = free_port()
        config = write_config(
            folder,
            upstream=upstream,
            database=database,
            port=port,
            sweep="list",
            interval="1h",
            budget=POISON_BUDGET,
            watch=[*healthy, *poison],
        )
        log = folder / "poison.log"
        with tracker_run(config, port, log) as server:
            results = [
                one_pass(n, database, port, upstream, (healthy, poison))
                for n in range(1, passes + 1)
            ]
    report_passes(results, healthy, server.process.returncode)
    for line in log_summary(log):
        print(f"   log {line}")


def report_passes(results: list[Pass], healthy: list[str], exit_code: int | None) -> None:
    """The passes as a table, then the verdict."""
    rows = [
        (
            "pass",
            "healthy recorded",
            "seconds",
            "list req",
            "id req",
            "failed",
            "leased",
            "poison",
            "/readyz",
        )
    ]
    for p in results:
        failing = sum(1 for row in p.poison if row.consecutive_failures > 0)
        kinds = sorted({row.last_error_kind or "-" for row in p.poison})
        rows.append(
            (
                str(p.number),
                f"{len(p.healthy_recorded)}/{len(healthy)}",
                f"{p.seconds:.1f}",
                str(p.list_requests),
                str(p.id_requests),
                "?" if p.failed is None else f"{p.failed:.0f}",
                str(p.leased),
                f"{failing} failing ({'/'.join(kinds)}), {p.poison_recorded} polls recorded",
                p.ready,
            )
        )
    print_table(rows)
    every = set(healthy).intersection(*(p.healthy_recorded for p in results))
    last = results[-1]
    failing = sum(1 for row in last.poison if row.consecutive_failures > 0)
    met = len(every) == len(healthy) and failing == len(last.poison)
    print(
        f"   healthy orders recorded on every pass: {len(every)}/{len(healthy)}; poison orders "
        f"reported failing after the last pass (watch list: consecutive_failures > 0): "
        f"{failing}/{len(last.poison)} (goal: all and all: {'met' if met else 'NOT met'})"
    )
    print(
        "   recorded: last_success_at at or after the pass began; failed: "
        'tracker_polls_total{result="failed"} over the pass; leased: orders of the 200 '
        "claimed (leased_until in the future) at the pass's end, so not claimable by the next; "
        "poison: their watch-list state, and how many had a poll recorded in the pass"
    )
    print(f"   daemon exit code after SIGTERM: {exit_code}")


# -- part 3: memory held by unfinished /login bodies -----------------------------------------


class HeldBodies(Abuse):
    """POST /login with a 1 MiB body of which all but the last byte is sent, then held."""

    name = f"{MEMORY_CONNECTIONS} held 1 MiB /login bodies"

    def __init__(self, port: int) -> None:
        """Abuse the listener on ``port``."""
        super().__init__(port)
        self.sent = 0
        self.stalled = 0

    async def start(self) -> None:
        """Connect, send the heads, then the bodies but their last byte (within SEND_LIMIT)."""
        head = (
            b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: %d\r\n\r\n" % BODY_BYTES
        )
        await self.open_many(MEMORY_CONNECTIONS, head)
        deadline = time.monotonic() + SEND_LIMIT
        await asyncio.gather(*(self._body(sock, deadline) for sock in list(self.sockets)))

    async def _body(self, sock: socket.socket, deadline: float) -> None:
        loop, chunk = asyncio.get_running_loop(), b"token=" + b"a" * (SEND_CHUNK - 6)
        left = BODY_BYTES - 1
        try:
            async with asyncio.timeout(max(deadline - time.monotonic(), 0)):
                while left > 0:
                    piece = chunk[: min(left, SEND_CHUNK)]
                    await loop.sock_sendall(sock, piece)
                    self.sent += len(piece)
                    left -= len(piece)
                    chunk = b"a" * SEND_CHUNK
        except (OSError, TimeoutError):
            self.stalled += 1

    def summary(self) -> str:
        """Bytes sent, connections that could not send it all, states."""
        answered = sum(1 for sock in self.sockets if unread_bytes(sock) > 0)
        return (
            f"{len(self.sockets)} connected ({self.failed_connects} could not connect), "
            f"{self.sent / 2**20:.0f} MiB of bodies accepted by the kernel (socket buffers "
            f"included), {self.stalled} could not send all but the last byte within "
            f"{SEND_LIMIT:.0f} s (refused or not read); {answered} got an answer before the "
            f"body was complete; at the end: {states(self.sockets)}"
        )


async def rss_peak(pid: int, seconds: float) -> tuple[int, int]:
    """VmRSS sampled every RSS_EVERY for ``seconds``: (median, max) in KiB."""
    samples = []
    for _ in range(max(int(seconds / RSS_EVERY), 1)):
        samples.append(memory_kib(pid, "VmRSS"))
        await asyncio.sleep(RSS_EVERY)
    return int(statistics.median(samples)), max(samples)


async def hold_bodies(pid: int, port: int, hold: float) -> list[str]:
    """RSS before, while the bodies are held, and after they are dropped; the lines to print."""
    before_median, before_max = await rss_peak(pid, 3.0)
    abuse = HeldBodies(port)
    try:
        began = time.monotonic()
        await abuse.start()
        sending = time.monotonic() - began
        held_median, held_max = await rss_peak(pid, hold)
        summary = abuse.summary()
    finally:
        abuse.close()
    await asyncio.sleep(2.0)
    after_median, _ = await rss_peak(pid, 2.0)
    growth = (held_max - before_max) / 1024
    verdict = "met" if growth <= GOAL_RSS_MIB else "NOT met"
    return [
        f"VmRSS before: {before_max / 1024:.1f} MiB (max of 3 s; median "
        f"{before_median / 1024:.1f}); while held ({hold:g} s after {sending:.1f} s of "
        f"sending): max {held_max / 1024:.1f} MiB, median {held_median / 1024:.1f}; growth "
        f"{growth:+.1f} MiB (goal <= {GOAL_RSS_MIB:.0f} MiB: {verdict}); 2 s after they "
        f"were dropped: {after_median / 1024:.1f} MiB; VmHWM {memory_kib(pid, 'VmHWM') / 1024:.1f}"
        " MiB",
        summary,
    ]


def memory_part(folder: Path, seconds: float) -> None:
    """Part 3."""
    hold = min(seconds, MEMORY_HOLD_MAX)
    print(
        f"\n3. memory: VmRSS of tracker run while {MEMORY_CONNECTIONS} connections hold an "
        f"unfinished 1 MiB POST /login (SQLite, {ORDERS} orders polling)",
        flush=True,
    )
    raise_own_file_limit(MEMORY_CONNECTIONS + 100)
    database = f"sqlite:///{folder / 'memory.db'}"
    simulator = SteadySimulator.start(ORDERS, TOKEN, folder / "memory-requests.log")
    try:
        port = free_port()
        config = steady_config(folder, simulator, database, port)
        with tracker_run(config, port, folder / "memory.log") as server:
            wait_first_pass(database, simulator.ids)
            spread_due(database, simulator.ids, INTERVAL)
            lines = asyncio.run(hold_bodies(server.process.pid, port, hold))
    finally:
        simulator.stop()
    for line in lines:
        print(f"   {line}")


# -- main ------------------------------------------------------------------------------------


def main() -> None:
    """Run the parts asked for and print their numbers."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--part", choices=("all", "abuse", "poison", "memory"), default="all")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each window")
    parser.add_argument("--passes", type=int, default=4, help="passes of the poison part")
    parser.add_argument("--keep", type=Path, help="leave configurations and logs in DIR")
    parser.add_argument("--serve-poison", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_poison:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve_poison())
        return
    # SIGTERM ends the run as Ctrl-C does: every block's cleanup runs.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    how = ["-m", __spec__.name] if __spec__ is not None else sys.argv[:1]
    print(f"command: {shlex.join([sys.executable, *how, *sys.argv[1:]])}")
    print(f"started {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC", flush=True)
    began = time.monotonic()
    parts = ("abuse", "poison", "memory") if args.part == "all" else (args.part,)
    try:
        with contextlib.ExitStack() as stack:
            if args.keep is not None:
                args.keep.mkdir(parents=True, exist_ok=True)
                root = args.keep
            else:
                root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-abuse-")))
            for part in parts:
                run_part(part, root / part, args)
    except KeyboardInterrupt:
        print("\ninterrupted: the daemon, the upstream and the sockets were stopped")
        raise SystemExit(130) from None
    print(f"\n(took {time.monotonic() - began:.0f} s)")


def run_part(part: str, folder: Path, args: argparse.Namespace) -> None:
    """One part, its files in ``folder``."""
    folder.mkdir(exist_ok=True)
    if part == "abuse":
        abuse_part(folder, args.seconds)
    elif part == "poison":
        poison_part(folder, args.passes)
    else:
        memory_part(folder, args.seconds)


if __name__ == "__main__":
    main()
