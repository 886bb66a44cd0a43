"""Hostile-peer benchmark: peers that drip or flood, against the tracker's time and size bounds.

Run with ``make bench`` (or ``python benchmarks/bench_hostile.py``). It prints three numbers:

1. the wall time of one poll whose answer drips a byte every 0.5 s (``timeout = 2``);
2. the peak RSS of ``tracker run`` while one order answers 200 MB and the webhook receiver
   answers every POST with 500 MB, against the same run with well-behaved peers;
3. healthy polls per second while 4 orders drip (each holding a worker for the whole timeout),
   and while two groups of 4 take turns so that 4 workers are held nearly all the time,
   against the same run without them.

The peers are raw ``asyncio`` servers on 127.0.0.1 in this process (the huge answers are
generated chunk by chunk, never held); every daemon runs in its own process, so its peak RSS
and CPU are its own. Every loop is bounded in count and time, and the script stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import update

from tracker.config import UpstreamSettings, load
from tracker.daemon import run_until_signalled
from tracker.errors import UpstreamError
from tracker.logs import configure as configure_logs
from tracker.service import open_service
from tracker.store.tables import watched_orders
from tracker.upstream import build_client

HOST = "127.0.0.1"  # every peer listens on loopback only
TOKEN = "nom_bench_hostile_token"  # noqa: S105 - the peers' throwaway token
#: 32 random-looking bytes, as Standard Webhooks secrets are; the receiver does not verify.
SECRET = "whsec_" + base64.b64encode(b"hostile-benchmark-signing-key-32").decode()
ROUNDS = 3  # the drip poll takes ~2 s, so three rounds keep a median cheap

DRIP_EVERY = 0.5  # seconds between two bytes of a dripping answer: each read is far below timeout
DRIP_TIMEOUT = 2  # [upstream] timeout of the drip scenarios: short, so they finish quickly
DRIP_ORDER = "prdo_drip0"  # any valid id: the drip peer answers every path alike

HUGE_ORDER_BYTES = 200_000_000  # 100x the default max_body: reading it all would show in RSS
HUGE_HOOK_BYTES = 500_000_000  # 120000x the 4 KiB a webhook answer is read to
CHUNK = 64 * 1024  # one write of a flood; drained before the next, so the peer stays small
NORMAL_ORDERS = 20  # enough to keep the outbox busy with ~20 transitions a second
HUGE_ORDER = "prdo_huge"  # the one order that floods; the others are named prdo_normalNN
RSS_SECONDS = 25.0  # long enough for hundreds of webhook attempts and the first huge poll
RSS_SAMPLE = 0.2  # VmRSS sampling period, a cross-check of the kernel's VmHWM
RSS_TIMEOUT = 5  # [upstream]/[delivery] timeout of the RSS runs; bounds the shutdown too

HEALTHY_ORDERS = 400  # 10 s of work at the budget: the queue never runs dry
#: Half of the workers. Made due again after each failure, four dripping orders still hold
#: only ~2 workers on average (between two polls each waits for a tick and its place in the
#: queue), so a second run has two groups of four taking turns, to hold ~4 all the time.
DRIPPING_ORDERS = 4
WORKERS = 8  # [upstream] max_concurrency
BUDGET = 40  # requests/s: a healthy poll takes a few ms, so 4 free workers carry it easily
WARMUP = 2.0  # seconds after the first healthy answer that are not counted
WINDOW = 16.0  # seconds counted; with warm-up and start-up the run lasts ~20 s
KEEP_DUE_EVERY = 0.2  # how often the daemon child makes finished dripping orders due again
IN_FLIGHT_SAMPLE = 0.1  # how often the upstream counts the dripping requests it is serving
CHILD_LIMIT = 120.0  # a daemon child stops itself after this long, even if this script died
#: A due time older than any real one: claims are taken oldest due first, so these go first.
LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)

START_LIMIT = 30.0  # seconds a daemon gets to send its first request (migrations included)
STOP_LIMIT = 20.0  # seconds a daemon gets after SIGTERM before it is killed
ANSWER_LIMIT = 60.0  # no answer of any peer lasts longer, whatever the client does
MAX_REQUEST_BODY = 1024 * 1024  # webhook payloads are a few KiB; more is refused
FLIP = ("ordered", "checked")  # the statuses normal orders alternate between


def order_bytes(order_id: str, status: str) -> bytes:
    """A documented meter order body (~270 bytes)."""
    return json.dumps(
        {
            "object": "meter_order",
            "id": order_id,
            "subscription": "sub_vzyqxohw546im28zwyhn04ei",
            "customer": "cus_qacki3zcrkc9r41qt44ngl9d",
            "provider": "energy-metering",
            "status": status,
            "created_at": "2024-03-14T12:00:00Z",
            "updated_at": "2024-03-14T12:00:00Z",
        }
    ).encode()


# -- raw peers ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Conversation:
    """One received request and the connection to answer it on."""

    method: str
    path: str
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


Answer = Callable[[Conversation], Awaitable[None]]


async def read_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> Conversation | None:
    """Read a request head up to ``\\r\\n\\r\\n`` and its Content-Length body; ``None`` at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _version = lines[0].split(" ", 2)
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    if length > MAX_REQUEST_BODY:
        return None
    await reader.readexactly(length)
    return Conversation(method, path, reader, writer)


class RawPeer:
    """An HTTP/1.1 server on 127.0.0.1 that answers one request per connection, then closes."""

    def __init__(self, answer: Answer) -> None:
        """A peer that answers each request with ``answer``."""
        self._answer = answer
        self._server: asyncio.Server | None = None
        self._handlers: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}

    async def __aenter__(self) -> str:
        """Listen on a free port; the base URL."""
        self._server = await asyncio.start_server(self._serve, HOST, 0)
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    async def __aexit__(self, *exc_info: object) -> None:
        """Stop listening and end every answer still being sent."""
        if self._server is None:
            return
        self._server.close()
        # Aborting the connections ends each answer with a ConnectionError or an EOF, which
        # the handlers expect; cancelling them would make asyncio log every cancelled one.
        for writer in self._handlers.values():
            writer.transport.abort()
        if self._handlers:
            _done, late = await asyncio.wait(list(self._handlers), timeout=STOP_LIMIT)
            for task in late:
                task.cancel()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read the request, answer it within ANSWER_LIMIT, close the connection."""
        task = asyncio.current_task()
        if task is not None:
            self._handlers[task] = writer
        try:
            async with asyncio.timeout(ANSWER_LIMIT):
                conversation = await read_request(reader, writer)
                if conversation is not None:
                    await self._answer(conversation)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the client hung up, as the tracker should on a hostile answer
        finally:
            writer.close()
            if task is not None:
                self._handlers.pop(task, None)


def response_head(status: int, headers: dict[str, str]) -> bytes:
    """Status line and headers of an answer that closes the connection."""
    lines = [
        f"HTTP/1.1 {status} X",
        "Connection: close",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def send(writer: asyncio.StreamWriter, status: int, body: bytes) -> None:
    """A whole answer at once (no Content-Length for a 204, as HTTP requires)."""
    headers = {"Content-Type": "application/json"}
    if status != 204:
        headers["Content-Length"] = str(len(body))
    writer.write(response_head(status, headers) + body)
    await writer.drain()


async def hung_up(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Wait up to ``seconds`` for the client to close its end; whether it did."""
    try:
        async with asyncio.timeout(seconds):
            return not await reader.read(1)
    except TimeoutError:
        return False


async def drip(conversation: Conversation, body: bytes) -> None:
    """Headers at once (a normal Content-Length), then one body byte every DRIP_EVERY s."""
    writer = conversation.writer
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
    writer.write(response_head(200, headers))
    await writer.drain()
    for index in range(len(body)):
        writer.write(body[index : index + 1])
        await writer.drain()
        if await hung_up(conversation.reader, DRIP_EVERY):
            return


FLOOD_FRAME = b"%x\r\n" % CHUNK + b"x" * CHUNK + b"\r\n"  # one chunk, built once and reused


async def flood(writer: asyncio.StreamWriter, status: int, prefix: bytes, total: int) -> int:
    """A chunked answer of ``total`` bytes made on the fly; the bytes written before a hang-up."""
    headers = {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
    writer.write(response_head(status, headers))
    writer.write(b"%x\r\n%s\r\n" % (len(prefix), prefix) if prefix else b"")
    written = len(prefix)
    try:
        for _ in range((total - len(prefix)) // CHUNK):
            writer.write(FLOOD_FRAME)
            await writer.drain()
            written += CHUNK
        writer.write(b"0\r\n\r\n")
        await writer.drain()
    except ConnectionError:
        pass  # the client stopped reading and closed: what we measure
    return written


# -- configuration (as tests/support.py builds it) -------------------------------------------


def config_mapping(folder: Path, upstream_url: str, **sections: Any) -> dict[str, Any]:
    """A configuration with a static token, SQLite in ``folder`` and JSON warning logs."""
    upstream: dict[str, Any] = {"base_url": upstream_url, "token": TOKEN}
    upstream |= sections.pop("upstream", {})
    mapping: dict[str, Any] = {
        "upstream": upstream,
        "database": {"url": f"sqlite:///{folder / 'tracker.db'}"},
        "polling": {"interval": 1, "jitter": 0},
        "log": {"format": "json", "level": "warning"},
    }
    for name, section in sections.items():
        mapping[name] = section if isinstance(section, list) else mapping.get(name, {}) | section
    return mapping


def write_toml(path: Path, mapping: dict[str, Any]) -> Path:
    """Write ``mapping`` as a TOML file (tables of scalars and lists, arrays of tables)."""
    lines: list[str] = []
    for name, section in mapping.items():
        if isinstance(section, dict):
            lines.append(f"[{name}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in section.items()]
    for name, entries in mapping.items():
        if isinstance(entries, list):
            for entry in entries:
                lines.append(f"[[{name}]]")
                lines += [f"{k} = {json.dumps(v)}" for k, v in entry.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


# -- daemon processes --------------------------------------------------------------------------


def open_log(path: Path) -> TextIO:
    """The file a daemon child writes its stdout and stderr to."""
    return path.open("w", encoding="utf-8")


async def start_daemon(args: list[str], log: Path) -> asyncio.subprocess.Process:
    """Start ``python ARGS`` with its output going to ``log``."""
    with open_log(log) as sink:
        return await asyncio.create_subprocess_exec(
            sys.executable, *args, stdout=sink, stderr=subprocess.STDOUT
        )


async def stop_daemon(process: asyncio.subprocess.Process) -> int:
    """SIGTERM, then wait up to STOP_LIMIT (killing it after that); the exit code."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(STOP_LIMIT):
            return await process.wait()
    except TimeoutError:
        process.kill()
        return await process.wait()


@dataclass
class Child:
    """A running daemon process; ``exit_code`` is set once it has been stopped."""

    process: asyncio.subprocess.Process
    exit_code: int | None = None


@contextlib.asynccontextmanager
async def daemon_process(args: list[str], log: Path) -> AsyncIterator[Child]:
    """Run ``python ARGS`` (output to ``log``) for the block; stopped however the block ends."""
    child = Child(await start_daemon(args, log))
    try:
        yield child
    finally:
        child.exit_code = await stop_daemon(child.process)


def memory_kib(pid: int, field_name: str) -> int:
    """A ``/proc/PID/status`` memory field (VmRSS, VmHWM) in KiB; 0 once the process is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


def log_summary(log: Path) -> list[str]:
    """The daemon's warnings and errors, counted by event, kind and reason (most first)."""
    counts: collections.Counter[str] = collections.Counter()
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            counts[f"(not JSON) {line[:160]}"] += 1
            continue
        if not isinstance(entry, dict):
            continue
        reason = entry.get("reason") or entry.get("error") or ""
        what = " ".join(str(entry.get(k, "")) for k in ("level", "event", "kind")).strip()
        counts[f"{what} {str(reason)[:100]!r}" if reason else what] += 1
    return [f"{count:5d} x {what}" for what, count in counts.most_common(6)]


async def cli_json(*args: str) -> Any:
    """Run ``python -m tracker ARGS`` and parse its standard output as JSON."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tracker",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(START_LIMIT):
        out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"tracker {' '.join(args)} failed: {err.decode()[-500:]}")
    return json.loads(out)


# -- 1. one poll of a dripping answer ---------------------------------------------------------


async def drip_polls() -> list[tuple[float, str, str]]:
    """ROUNDS polls with the real client against a dripping answer: (wall s, kind, reason)."""
    body = order_bytes(DRIP_ORDER, "ordered")

    async def answer(conversation: Conversation) -> None:
        """Drip the order body to every request."""
        await drip(conversation, body)

    results: list[tuple[float, str, str]] = []
    async with RawPeer(answer) as url:
        upstream = UpstreamSettings.model_validate(
            {"base_url": url, "token": TOKEN, "timeout": DRIP_TIMEOUT}
        )
        client, http = build_client(upstream)
        try:
            for _ in range(ROUNDS):
                started = time.monotonic()
                try:
                    await client.fetch(DRIP_ORDER)
                    kind, reason = "ok", "answered in full"
                except UpstreamError as exc:
                    kind, reason = exc.kind, exc.reason
                results.append((time.monotonic() - started, kind, reason))
        finally:
            await http.aclose()
    return results


# -- 2. peak RSS with huge peers ----------------------------------------------------------------


@dataclass
class HugePeers:
    """The upstream and the webhook receiver of one RSS run, and what they served."""

    huge: bool
    flips: collections.Counter[str] = field(default_factory=collections.Counter)
    huge_requests: int = 0
    huge_bytes_written: int = 0
    posts: int = 0
    post_bytes_written: int = 0

    async def upstream(self, conversation: Conversation) -> None:
        """Normal orders flip status on every answer; the huge one floods (when ``huge``)."""
        order_id = conversation.path.removeprefix("/meter-orders/")
        if self.huge and order_id == HUGE_ORDER:
            self.huge_requests += 1
            prefix = b'{"object":"meter_order","id":"%s","pad":"' % order_id.encode()
            written = await flood(conversation.writer, 200, prefix, HUGE_ORDER_BYTES)
            self.huge_bytes_written += written
            return
        status = FLIP[self.flips[order_id] % 2]
        self.flips[order_id] += 1
        await send(conversation.writer, 200, order_bytes(order_id, status))

    async def receiver(self, conversation: Conversation) -> None:
        """Every POST: 500 with a 500 MB body (when ``huge``), else 204 with none."""
        self.posts += 1
        if self.huge:
            written = await flood(conversation.writer, 500, b"", HUGE_HOOK_BYTES)
            self.post_bytes_written += written
        else:
            await send(conversation.writer, 204, b"")


@dataclass
class RssRun:
    """What one RSS run measured."""

    peak_kib: int
    sampled_kib: int
    exit_code: int | None
    peers: HugePeers
    malformed_orders: int
    malformed_failures: int
    log: list[str]


async def rss_run(*, huge: bool) -> RssRun:
    """Run ``tracker run`` for RSS_SECONDS against the peers; its peak RSS and what happened."""
    peers = HugePeers(huge=huge)
    orders = [f"prdo_normal{i:02d}" for i in range(NORMAL_ORDERS)] + [HUGE_ORDER]
    async with RawPeer(peers.upstream) as upstream_url, RawPeer(peers.receiver) as hook_url:
        with tempfile.TemporaryDirectory() as name:
            folder = Path(name)
            mapping = config_mapping(
                folder,
                upstream_url,
                upstream={"timeout": RSS_TIMEOUT},
                delivery={"timeout": RSS_TIMEOUT},
                watch={"orders": orders},
                sinks=[
                    {
                        "name": "hostile",
                        "type": "webhook",
                        "url": f"{hook_url}/hook",
                        "secret": SECRET,
                        "on": ["*"],
                    }
                ],
            )
            config = write_toml(folder / "tracker.toml", mapping)
            log = folder / "daemon.log"
            args = ["-m", "tracker", "run", "--config", str(config)]
            async with daemon_process(args, log) as child:
                pid, sampled = child.process.pid, 0
                deadline = time.monotonic() + RSS_SECONDS
                while time.monotonic() < deadline and child.process.returncode is None:
                    sampled = max(sampled, memory_kib(pid, "VmRSS"))
                    await asyncio.sleep(RSS_SAMPLE)
                peak = memory_kib(pid, "VmHWM")  # just before SIGTERM
            listing = await cli_json("watch", "list", "--json", "--config", str(config))
            malformed = [o for o in listing if o["last_error_kind"] == "malformed"]
            return RssRun(
                peak_kib=peak,
                sampled_kib=sampled,
                exit_code=child.exit_code,
                peers=peers,
                malformed_orders=len(malformed),
                malformed_failures=sum(o["consecutive_failures"] for o in malformed),
                log=log_summary(log),
            )


# -- 3. healthy polls per second while some orders drip --------------------------------------


@dataclass
class SteadyUpstream:
    """Healthy orders answer at once and never change; dripping ones drip until hung up."""

    dripping: frozenset[str]
    healthy_at: list[float] = field(default_factory=list)
    drip_requests: int = 0
    dripping_now: int = 0
    answered: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, conversation: Conversation) -> None:
        """Answer one GET /meter-orders/{id}."""
        order_id = conversation.path.removeprefix("/meter-orders/")
        if order_id in self.dripping:
            self.drip_requests += 1
            self.dripping_now += 1
            try:
                await drip(conversation, order_bytes(order_id, "ordered"))
            finally:
                self.dripping_now -= 1
            return
        await send(conversation.writer, 200, order_bytes(order_id, "ordered"))
        self.healthy_at.append(asyncio.get_running_loop().time())
        self.answered.set()


@dataclass
class SteadyRun:
    """What one throughput run measured."""

    dripping: int
    staggered: bool
    healthy_per_second: float
    in_flight: list[int]
    drip_requests: int
    exit_code: int | None
    log: list[str]

    def share(self, held: Callable[[int], bool]) -> float:
        """The share of the window's samples whose dripping requests in flight satisfy ``held``."""
        return sum(1 for n in self.in_flight if held(n)) / max(len(self.in_flight), 1)


async def steady_run(*, dripping: int, staggered: bool = False) -> SteadyRun:
    """A daemon child over HEALTHY_ORDERS healthy and ``dripping`` dripping orders."""
    drips = [f"prdo_drip{i}" for i in range(dripping)]
    upstream = SteadyUpstream(dripping=frozenset(drips))
    loop = asyncio.get_running_loop()
    async with RawPeer(upstream) as url:
        with tempfile.TemporaryDirectory() as name:
            folder = Path(name)
            mapping = config_mapping(
                folder,
                url,
                upstream={
                    "timeout": DRIP_TIMEOUT,
                    "max_concurrency": WORKERS,
                    "requests_per_second": BUDGET,
                },
                watch={"orders": [f"prdo_ok{i:04d}" for i in range(HEALTHY_ORDERS)] + drips},
            )
            config = write_toml(folder / "tracker.toml", mapping)
            log = folder / "daemon.log"
            args = [__file__, "--daemon", str(config), *(["--stagger"] if staggered else [])]
            in_flight: list[int] = []
            async with daemon_process([*args, *drips], log) as child:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(START_LIMIT):
                        await upstream.answered.wait()
                first = upstream.healthy_at[0] if upstream.healthy_at else loop.time()
                begin, end = first + WARMUP, first + WARMUP + WINDOW
                await asyncio.sleep(max(begin - loop.time(), 0))
                drips_before = upstream.drip_requests
                while loop.time() < end:
                    in_flight.append(upstream.dripping_now)
                    await asyncio.sleep(IN_FLIGHT_SAMPLE)
                counted = sum(1 for at in upstream.healthy_at if begin <= at < end)
                drip_requests = upstream.drip_requests - drips_before
            return SteadyRun(
                dripping=dripping,
                staggered=staggered,
                healthy_per_second=counted / WINDOW,
                in_flight=in_flight,
                drip_requests=drip_requests,
                exit_code=child.exit_code,
                log=log_summary(log),
            )


async def make_due(engine: Any, order_ids: list[str]) -> None:
    """Move the next poll of those of ``order_ids`` that are not claimed to LONG_AGO."""
    table = watched_orders.c
    async with engine.begin() as conn:
        await conn.execute(
            update(watched_orders)
            .where(
                table.order_id.in_(order_ids),
                table.leased_until.is_(None),
                table.next_poll_at > LONG_AGO,
            )
            .values(next_poll_at=LONG_AGO)
        )


async def keep_due(engine: Any, order_ids: list[str], *, staggered: bool) -> None:
    """Make dripping orders due again, first in line, despite their 15-30 s failure backoff."""
    # At once after each failed poll is written; or (staggered) in groups of DRIPPING_ORDERS
    # taking turns of DRIP_TIMEOUT seconds, so one group is polled while the other waits.
    groups = [order_ids[i : i + DRIPPING_ORDERS] for i in range(0, len(order_ids), DRIPPING_ORDERS)]
    steps_per_turn = round(DRIP_TIMEOUT / KEEP_DUE_EVERY) if staggered else 1
    for step in range(int(CHILD_LIMIT / KEEP_DUE_EVERY)):
        turn = step // steps_per_turn
        await make_due(engine, groups[turn % len(groups)] if staggered else order_ids)
        await asyncio.sleep(KEEP_DUE_EVERY)


async def daemon_child(config: Path, keep: list[str], *, staggered: bool) -> None:
    """The daemon as ``tracker run`` wires it, plus keeping ``keep`` due; ends by CHILD_LIMIT."""
    settings = load(config)
    configure_logs(settings.log)
    asyncio.get_running_loop().call_later(CHILD_LIMIT, signal.raise_signal, signal.SIGTERM)
    async with open_service(settings) as polling:
        engine = polling.store._engine
        keeper = asyncio.create_task(keep_due(engine, keep, staggered=staggered)) if keep else None
        try:
            await run_until_signalled(polling.daemon())
        finally:
            if keeper is not None:
                keeper.cancel()
                await asyncio.gather(keeper, return_exceptions=True)


# -- report ----------------------------------------------------------------------------------


def report_drip(results: list[tuple[float, str, str]]) -> None:
    """Print scenario 1."""
    wall = statistics.median(r[0] for r in results)
    outcomes = sorted({f"{kind} {reason!r}" for _, kind, reason in results})
    body = len(order_bytes(DRIP_ORDER, "ordered"))
    print(
        f"1. dripping upstream ({body}-byte body, 1 byte every {DRIP_EVERY} s, "
        f"timeout = {DRIP_TIMEOUT}): poll wall time median of {ROUNDS} {wall:.3f} s "
        f"(runs {', '.join(f'{r[0]:.3f}' for r in results)}; goal <= 2.5 s), "
        f"outcome {'; '.join(outcomes)}"
    )


def report_rss(huge: RssRun, normal: RssRun) -> None:
    """Print scenario 2."""
    difference = (huge.peak_kib - normal.peak_kib) / 1024
    print(
        f"2. peak RSS of `tracker run` over {RSS_SECONDS:.0f} s (VmHWM): with huge peers "
        f"{huge.peak_kib / 1024:.1f} MiB, with well-behaved peers "
        f"{normal.peak_kib / 1024:.1f} MiB, "
        f"difference {difference:+.1f} MiB (goal: within 20 MB); sampled VmRSS max "
        f"{huge.sampled_kib / 1024:.1f} / {normal.sampled_kib / 1024:.1f} MiB"
    )
    for label, run in (("huge", huge), ("well-behaved", normal)):
        peers = run.peers
        print(
            f"   {label} run: {sum(peers.flips.values())} normal answers, "
            f"{peers.huge_requests} requests of the 200 MB order "
            f"({peers.huge_bytes_written / 1e6:.1f} MB written before the client hung up), "
            f"orders whose last poll failed as malformed {run.malformed_orders} "
            f"({run.malformed_failures} consecutive failures), "
            f"webhook attempts at the receiver {peers.posts} "
            f"({peers.post_bytes_written / 1e6:.1f} MB of 500 MB answers written in total, "
            f"{peers.post_bytes_written / max(peers.posts, 1) / 1e6:.2f} MB per attempt), "
            f"daemon exit code {run.exit_code}"
        )
        for line in run.log:
            print(f"     log {line}")


def report_steady(runs: list[SteadyRun], clean: SteadyRun) -> None:
    """Print scenario 3: each run with dripping orders against the clean one."""
    print(
        f"3. healthy polls/s over {WINDOW:.0f} s ({HEALTHY_ORDERS} healthy orders, {WORKERS} "
        f"workers, budget {BUDGET}/s, timeout = {DRIP_TIMEOUT}; dripping orders are made due "
        f"again despite their backoff): without dripping orders "
        f"{clean.healthy_per_second:.2f}/s (daemon exit code {clean.exit_code})"
    )
    for run in runs:
        ratio = run.healthy_per_second / clean.healthy_per_second if clean.healthy_per_second else 0
        how = (
            f"in groups of {DRIPPING_ORDERS} taking turns every {DRIP_TIMEOUT} s"
            if run.staggered
            else "each as soon as its failure is written"
        )
        average = statistics.fmean(run.in_flight) if run.in_flight else 0.0
        at_least = run.share(lambda n: n >= DRIPPING_ORDERS)
        over = run.share(lambda n: n > DRIPPING_ORDERS)
        print(
            f"   with {run.dripping} dripping orders ({how}): {run.healthy_per_second:.2f}/s, "
            f"ratio {ratio:.3f} (goal >= 0.90); {run.drip_requests} dripping requests in the "
            f"window; dripping requests in flight: {average:.2f} on average, "
            f">= {DRIPPING_ORDERS} in {100 * at_least:.0f}% and > {DRIPPING_ORDERS} in "
            f"{100 * over:.0f}% of the window; daemon exit code {run.exit_code}"
        )
        # tracker/pacing.py counts a request until one window after its answer's head arrived,
        # not after its body: a dripping request costs one request of the budget, as any other.
        spent = run.drip_requests / WINDOW
        print(
            f"     the dripping requests spend {spent:.1f} of the {BUDGET} req/s, "
            f"leaving ~{BUDGET - spent:.1f}/s for healthy polls"
        )
        for line in run.log:
            print(f"     log {line}")
    for line in clean.log:
        print(f"     log (run without dripping orders) {line}")


async def measure() -> None:
    """Run the three scenarios in turn and print them as they finish."""
    report_drip(await drip_polls())
    report_rss(await rss_run(huge=True), await rss_run(huge=False))
    runs = [
        await steady_run(dripping=DRIPPING_ORDERS),
        await steady_run(dripping=2 * DRIPPING_ORDERS, staggered=True),
    ]
    report_steady(runs, await steady_run(dripping=0))


def main() -> None:
    """Measure, or (``--daemon CONFIG [ID...]``) be the daemon child of scenario 3."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--daemon", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--stagger", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("keep_due", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.daemon is not None:
        asyncio.run(daemon_child(args.daemon, args.keep_due, staggered=args.stagger))
        return
    started = time.monotonic()
    asyncio.run(measure())
    print(f"total {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
