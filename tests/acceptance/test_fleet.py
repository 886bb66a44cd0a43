"""Three daemons on one PostgreSQL, one SIGKILLed mid-cycle and restarted, act as one tracker."""

from __future__ import annotations

import asyncio
import bisect
import itertools
import json
import math
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response

from tests.processes import busiest_second, live_daemons, start_daemon, stop
from tests.support import WEBHOOK_SECRET, HookReceiver, settings_mapping, tracker_cli, write_config
from tracker.demo.serving import catch_all, serve
from tracker.demo.simulator import Script, Simulator, demo_scripts, order_id
from tracker.model import HEARTBEAT
from tracker.store import Store, open_store
from tracker.views import history_json

#: Only PostgreSQL lets several daemons share one database.
pytestmark = pytest.mark.parametrize("database", ["postgresql"], indirect=True)

ORDERS = 200
#: Statuses per order (fewer on the demo's shortest path): up to three transitions each.
STATUSES = 4
INTERVAL = 2.0
JITTER = 0.2
#: Seconds; the contract's takeover bound is ``2 * upstream.timeout + 60 s``.
TIMEOUT = 2.0
TAKEOVER_BOUND = 2 * TIMEOUT + 60
#: Below the 100 requests a second that 200 orders every 2 s would take: the fleet polls at
#: its budget all along, so that daemons always hold claims. Divisible by two and three: each
#: daemon's share is a whole number of requests a second.
RATE = 60
#: The upstream's think time, as a real API's: a poll is in flight for a while.
UPSTREAM_DELAY = 0.1
#: The receiver's think time, so that deliveries are in flight when a daemon dies.
RECEIVER_DELAY = 0.2
#: The receiver answers 503 to the first attempt of every fifth event.
REFUSE_EVERY = 5
#: The victim dies holding at least this many orders (and a delivery): a takeover to see.
HELD_ORDERS = 10
#: The victim dies this long before another daemon's heartbeat, which notices it.
BEFORE_HEARTBEAT = 0.25
#: The daemons decide on the wall clock, the test measures on the monotonic one; the two may
#: drift apart this much over one polling interval.
CLOCK_SLACK = 0.05
#: Limits for a step to happen at all; missing one fails the test, it times nothing.
PATIENCE = 120.0
#: Each daemon has a token of its own, so that the upstream tells whose poll it is.
TOKENS = {"a": "nom_fleet_a", "b": "nom_fleet_b", "c": "nom_fleet_c"}
#: The token every per-order simulator accepts; the daemons' own tokens are mapped onto it.
SIMULATOR_TOKEN = "nom_fleet_simulator"

Connection = psycopg.AsyncConnection[tuple[Any, ...]]
Processes = dict[str, asyncio.subprocess.Process]


def fleet_scripts() -> list[Script]:
    """``ORDERS`` lifecycles along the demo's paths, each status lasting 9 to 12 seconds."""
    paths = [tuple(status for status, _dwell in script.steps) for script in demo_scripts()]
    scripts = []
    for n in range(ORDERS):
        path = paths[n % len(paths)]
        # A window of the path, so that orders on one path still differ in where they start.
        start = (n // len(paths)) % max(len(path) - STATUSES + 1, 1)
        dwell = 9.0 + n % 4  # orders do not all move in the same second
        scripts.append(
            Script(
                order_id=order_id(f"fleet-{n}"),
                provider="metrify",
                steps=tuple((status, dwell) for status in path[start : start + STATUSES]),
            )
        )
    return scripts


def transitions_of(script: Script) -> list[tuple[str, str]]:
    """The (from, to) pairs the script's lifecycle goes through."""
    return list(itertools.pairwise(status for status, _dwell in script.steps))


class Lifecycle:
    """One order's simulated lifecycle, on a clock that lets no status pass unseen.

    The clock starts at the order's first poll, and a status ends only once two polls were
    answered with it: a daemon polls an order again only after it recorded the previous
    poll, so of two polls at least one was recorded, even when a daemon died holding the
    other. On a wall clock, a status could pass while its order waits for a takeover or on a
    loaded machine, and the stored history would miss it for the machine's speed rather than
    for a fault of the tracker (as ``DaemonClock`` in test_crash.py explains). Held at the end
    of a status until then, the clock loses that time instead.
    """

    def __init__(self, script: Script) -> None:
        self.script = script
        self._elapsed = 0.0
        self._last: float | None = None
        self._answered: Counter[int] = Counter()
        #: When each status begins on this clock.
        self._starts = [0.0, *itertools.accumulate(dwell for _s, dwell in script.steps[:-1])]
        self.simulator = Simulator([script], static_token=SIMULATOR_TOKEN, clock=self.clock)

    def clock(self) -> float:
        """Seconds of the lifecycle so far."""
        return self._elapsed

    @property
    def index(self) -> int:
        """Which status the order is in."""
        return self.script.at(self._elapsed)[0]

    @property
    def done(self) -> bool:
        """Whether the order reached its last status, which lasts for ever."""
        return self.index == len(self.script.steps) - 1

    def polled(self, now: float) -> None:
        """A poll arrived at ``now`` (monotonic): move the clock on, then count the answer."""
        if self._last is not None:
            index = self.index
            # Into the next status at most, and only once this one was answered twice.
            reach = index + 2 if self._answered[index] >= 2 else index + 1
            limit = self._starts[reach] if reach < len(self._starts) else math.inf
            self._elapsed = min(self._elapsed + (now - self._last), limit - 1e-6)
        self._last = now
        self._answered[self.index] += 1


@dataclass(frozen=True, slots=True)
class Poll:
    """One request for an order, as the upstream saw it arrive."""

    at: float  # time.monotonic()
    daemon: str


class FleetUpstream:
    """The simulated upstream, one simulator per order; it tells the daemons apart by token."""

    def __init__(self, scripts: Iterable[Script]) -> None:
        self.lifecycles = {script.order_id: Lifecycle(script) for script in scripts}
        #: Token -> the daemon's name; a daemon started again gets a name of its own.
        self.daemons = {token: name for name, token in TOKENS.items()}
        self.polls: dict[str, list[Poll]] = defaultdict(list)
        self.arrivals: list[float] = []
        self.strays: list[str] = []

    async def __call__(self, request: Request) -> Response:
        now = time.monotonic()
        self.arrivals.append(now)
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        lifecycle = self.lifecycles.get(request.url.path.removeprefix("/meter-orders/"))
        daemon = self.daemons.get(token)
        if lifecycle is None or daemon is None:
            self.strays.append(f"{request.method} {request.url.path}")
            return Response(status_code=404)
        lifecycle.polled(now)
        self.polls[lifecycle.script.order_id].append(Poll(now, daemon))
        await asyncio.sleep(UPSTREAM_DELAY)
        scope = {**request.scope, "headers": list(request.scope["headers"])}
        MutableHeaders(scope=scope)["authorization"] = f"Bearer {SIMULATOR_TOKEN}"
        return await lifecycle.simulator.answer(Request(scope))

    def polled_by(self) -> Counter[str]:
        """How many polls each daemon made."""
        return Counter(poll.daemon for polls in self.polls.values() for poll in polls)


class RefusingReceiver:
    """The customer's endpoint: 503 to the first attempt of every ``every``-th event, else 204."""

    def __init__(self, every: int) -> None:
        self.hooks = HookReceiver()
        self.refused: set[str] = set()
        self._every = every
        self._numbers: dict[str, int] = {}

    @property
    def accepted(self) -> set[str]:
        """The event ids answered with 2xx at least once."""
        return {hook.event_id for hook in self.hooks.accepted}

    async def __call__(self, request: Request) -> Response:
        await asyncio.sleep(RECEIVER_DELAY)
        event_id = request.headers.get("webhook-id", "")
        first = event_id not in self._numbers
        number = self._numbers.setdefault(event_id, len(self._numbers) + 1)
        refuse = first and number % self._every == 0
        if refuse:
            self.refused.add(event_id)
        # Set right before the call, which answers without awaiting anything first.
        self.hooks.answers = [503 if refuse else 204]
        return await self.hooks(request)


@dataclass(frozen=True, slots=True, kw_only=True)
class Kill:
    """Which daemon was killed, when, and what it held then."""

    daemon: str
    at: float  # time.monotonic()
    wall: datetime
    orders: frozenset[str]
    events: frozenset[str]

    @property
    def restarted(self) -> str:
        """The name of the daemon started again with the victim's configuration."""
        return f"{self.daemon}-restarted"


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within: float) -> None:
    """Wait until ``check()`` is true; fail after ``within`` seconds saying ``what``."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within:.0f} s: {what}")
        await asyncio.sleep(0.2)


async def claims_of(conn: Connection, daemon_id: str) -> tuple[frozenset[str], frozenset[str]]:
    """The orders and the pending deliveries (their event ids) that ``daemon_id`` holds."""
    orders = await conn.execute(
        "SELECT order_id FROM watched_orders WHERE leased_by = %s", (daemon_id,)
    )
    events = await conn.execute(
        "SELECT event_id FROM deliveries WHERE leased_by = %s AND state = 'pending'",
        (daemon_id,),
    )
    return (
        frozenset(row[0] for row in await orders.fetchall()),
        frozenset(row[0] for row in await events.fetchall()),
    )


async def next_heartbeat(conn: Connection, victim_id: str) -> float:
    """Seconds until the next heartbeat of a daemon other than ``victim_id``, at least
    ``BEFORE_HEARTBEAT`` away (a heartbeat runs every ``HEARTBEAT`` from the daemon's start)."""
    beats = await conn.execute(
        "SELECT max(heartbeat_at) FROM daemons WHERE id != %s GROUP BY id", (victim_id,)
    )
    now, period = datetime.now(UTC), HEARTBEAT.total_seconds()
    waits: list[float] = []
    for row in await beats.fetchall():
        last: datetime = row[0]
        wait = (last - now).total_seconds() % period
        waits.append(wait if wait > BEFORE_HEARTBEAT else wait + period)
    return min(waits, default=0.0)


async def kill_the_busiest(daemons: Processes, names: dict[str, str], conn: Connection) -> Kill:
    """SIGKILL the daemon that holds the most claims, once it holds orders and a delivery.

    Killed just before another daemon's heartbeat, its death is noticed at once: the fastest
    takeover, and the hardest moment for the budget, as its last requests still count in the
    window in which the others take over its share. Stopped (SIGSTOP) first, it claims and
    records nothing more while its claims are read; to the others it still looks alive, so
    they take over nothing before the kill. ``names`` maps daemon ids to names.
    """
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        busiest = await conn.execute(
            "SELECT leased_by FROM watched_orders WHERE leased_by IS NOT NULL "
            "GROUP BY leased_by ORDER BY count(*) DESC LIMIT 1"
        )
        if (row := await busiest.fetchone()) is None:
            await asyncio.sleep(0.1)
            continue
        name, daemon_id = names[row[0]], row[0]
        await asyncio.sleep(await next_heartbeat(conn, daemon_id) - BEFORE_HEARTBEAT)
        victim = daemons[name]
        victim.send_signal(signal.SIGSTOP)
        try:
            orders, events = await claims_of(conn, daemon_id)
            if len(orders) >= HELD_ORDERS and events:
                victim.kill()
                at, wall = time.monotonic(), datetime.now(UTC)
                await victim.communicate()
                return Kill(daemon=name, at=at, wall=wall, orders=orders, events=events)
        finally:
            if victim.returncode is None:
                victim.send_signal(signal.SIGCONT)
    raise AssertionError(f"no daemon ever held {HELD_ORDERS} orders and a delivery")


def early_polls(upstream: FleetUpstream, kill: Kill) -> list[str]:
    """Polls of one order closer together than its interval allows.

    The one exception: an order the victim held when it died may be polled again as soon as
    it is taken over, since the victim's own poll of it may not have been recorded.
    """
    shortest = INTERVAL - JITTER - CLOCK_SLACK
    found = []
    for order, polls in upstream.polls.items():
        for before, after in itertools.pairwise(polls):
            excused = order in kill.orders and before.daemon == kill.daemon and after.at > kill.at
            if after.at - before.at < shortest and not excused:
                found.append(
                    f"{order}: {before.daemon} then {after.daemon} "
                    f"{after.at - before.at:.3f} s apart"
                )
    return found


def crowded_seconds(arrivals: list[float], kill: Kill) -> list[str]:
    """The one-second windows holding more requests than the budget, timed from the kill."""
    times = sorted(arrivals)
    return [
        f"{count} from {at - kill.at:+.2f} s after the kill"
        for index, at in enumerate(times)
        if (count := bisect.bisect_left(times, at + 1.0) - index) > RATE
    ]


def takeovers(upstream: FleetUpstream, kill: Kill) -> dict[str, float]:
    """For each order the victim held: seconds from the kill to its next poll by another daemon."""
    taken = {}
    for order in kill.orders:
        after = [p.at for p in upstream.polls[order] if p.at > kill.at and p.daemon != kill.daemon]
        taken[order] = (after[0] if after else math.inf) - kill.at
    return taken


def config(tmp_path: Path, name: str, upstream_url: str, hooks_url: str) -> str:
    """The daemon ``name``'s configuration: the fleet's, with the daemon's own token."""
    mapping = settings_mapping(
        tmp_path,
        upstream_url,
        upstream={
            "token": TOKENS[name],
            "requests_per_second": RATE,
            "timeout": TIMEOUT,
            "max_concurrency": 8,
        },
        # Polls by id: each order's lifecycle moves on only after two polls saw its status.
        polling={"interval": INTERVAL, "jitter": JITTER, "sweep": "ids"},
        watch={"orders": [order_id(f"fleet-{n}") for n in range(ORDERS)]},
        log={"level": "warning"},
        delivery={"backoff": ["0.5s"] * 10, "max_concurrency": 4, "timeout": 2},
        sinks=[
            {
                "name": "ops",
                "type": "webhook",
                "url": hooks_url,
                "secret": WEBHOOK_SECRET,
                "on": ["*"],
            }
        ],
    )
    return str(write_config(tmp_path / f"{name}.toml", mapping))


async def all_stored_and_delivered(store: Store, events: int) -> bool:
    """Whether ``events`` transitions are stored and none of their deliveries is pending."""
    if (await store.reports.counts())["transitions"] < events:
        return False
    overview = await store.reports.overview(stale_before=datetime.now(UTC))
    states = Counter[str]()
    for _sink, state, count, _oldest in overview.deliveries:
        states[state] += count
    return states["pending"] == 0 and states.total() >= events


async def shut_down(processes: Iterable[asyncio.subprocess.Process]) -> None:
    """End the daemons still running (after a failure): SIGTERM, then SIGKILL."""
    running = [process for process in processes if process.returncode is None]
    for process in running:
        process.terminate()
    for process in running:
        try:
            await asyncio.wait_for(process.communicate(), 15)
        except TimeoutError:
            process.kill()
            await process.communicate()


async def run_fleet(
    paths: dict[str, str],
    upstream: FleetUpstream,
    receiver: RefusingReceiver,
    store: Store,
    conn: Connection,
) -> Kill:
    """Three daemons; the busiest SIGKILLed mid-cycle and started again once its orders were
    taken over; all stopped (cleanly) when every lifecycle is stored and delivered."""
    events = sum(len(transitions_of(life.script)) for life in upstream.lifecycles.values())
    daemons: Processes = {}
    try:
        # One after the other: each joins a fleet that already counts the ones before it.
        for count, name in enumerate(TOKENS, start=1):
            daemons[name] = await start_daemon(paths[name])
            fleet = await live_daemons(paths[name], count)
        pids = {process.pid: name for name, process in daemons.items()}
        names = {str(daemon["id"]): pids[int(str(daemon["pid"]))] for daemon in fleet}

        async def mid_cycle() -> bool:
            polled = upstream.polled_by()
            return all(polled[name] for name in TOKENS) and len(receiver.accepted) >= events // 4

        await eventually(mid_cycle, "all three polling, a quarter of the events out", PATIENCE)
        kill = await kill_the_busiest(daemons, names, conn)
        del daemons[kill.daemon]

        async def taken_over() -> bool:
            return max(takeovers(upstream, kill).values()) < math.inf

        await eventually(taken_over, "the victim's orders polled again", TAKEOVER_BOUND + 10)
        # Started again, it is another daemon: the upstream tells its polls from the victim's.
        upstream.daemons[TOKENS[kill.daemon]] = kill.restarted
        daemons[kill.restarted] = await start_daemon(paths[kill.daemon])

        async def settled() -> bool:
            if not upstream.polled_by()[kill.restarted]:
                return False
            if not all(life.done for life in upstream.lifecycles.values()):
                return False
            return await all_stored_and_delivered(store, events)

        await eventually(settled, "every lifecycle stored and delivered", PATIENCE)
        # All at once: none outlives the others to take over their shares of the budget.
        stopped = [stop(process) for process in daemons.values()]
        for outcome in await asyncio.gather(*stopped, return_exceptions=True):
            if isinstance(outcome, BaseException):
                raise outcome
    finally:
        await shut_down(daemons.values())
    return kill


async def check_histories(store: Store, scripts: list[Script], receiver: RefusingReceiver) -> int:
    """Every step stored once with one event id, delivered under that id and no other.

    Returns how many events there were.
    """
    stored: dict[str, tuple[str, str, str]] = {}
    for script in scripts:
        found = await store.reports.history(script.order_id)
        assert found is not None
        history = history_json(found)
        moves = [(t["from_status"], t["to_status"]) for t in history["transitions"]]
        assert moves == transitions_of(script), script.order_id
        assert history["status"] == script.steps[-1][0]
        for move in history["transitions"]:
            assert move["event_id"] not in stored
            stored[move["event_id"]] = (script.order_id, move["from_status"], move["to_status"])
            assert [d["state"] for d in move["deliveries"]] == ["delivered"]
    assert all(hook.verified for hook in receiver.hooks.hooks)
    # At least once each, never under an id the store does not know, always the same event.
    assert receiver.accepted == set(stored)
    for hook in receiver.hooks.accepted:
        data = json.loads(hook.body)["data"]
        assert (data["order_id"], data["from_status"], data["to_status"]) == stored[hook.event_id]
    assert receiver.refused  # each of them accepted on a later attempt (above)
    return len(stored)


async def delivered_at(conn: Connection, event_ids: Iterable[str]) -> list[datetime]:
    """When each of ``event_ids`` was delivered."""
    rows = await conn.execute(
        "SELECT delivered_at FROM deliveries WHERE event_id = ANY(%s)", (list(event_ids),)
    )
    return [row[0] for row in await rows.fetchall()]


class TestFleetLosesADaemon:
    """A daemon of three killed mid-cycle: nothing lost, doubled, polled early or over budget."""

    async def test_sigkill_one_of_three(self, tmp_path: Path, database: str) -> None:
        """A killed daemon of three loses and doubles nothing; takeover and budget stay in bound."""
        scripts = fleet_scripts()
        upstream = FleetUpstream(scripts)
        receiver = RefusingReceiver(REFUSE_EVERY)
        async with (
            open_store(database) as store,
            await psycopg.AsyncConnection.connect(database, autocommit=True) as conn,
            serve(catch_all(upstream)) as server,
            serve(catch_all(receiver)) as hooks,
        ):
            paths = {name: config(tmp_path, name, server.url, hooks.url) for name in TOKENS}
            kill = await run_fleet(paths, upstream, receiver, store, conn)

            # 1. Every step stored once, under one event id, delivered under that id only.
            events = await check_histories(store, scripts, receiver)
            # What `tracker history --json` prints is what was read there.
            held = min(kill.orders)
            ran = await tracker_cli("history", held, "--json", "--config", paths["a"])
            found = await store.reports.history(held)
            assert found is not None
            assert json.loads(ran.out) == history_json(found)
            delivered = await delivered_at(conn, kill.events)

        taken = takeovers(upstream, kill)
        slowest = max(taken.values())
        resent = max((when - kill.wall).total_seconds() for when in delivered)
        busiest = busiest_second(upstream.arrivals)
        print(  # noqa: T201 - the measured takeover shows with -s
            f"\nfleet: {ORDERS} orders, {events} transitions, {len(receiver.refused)} first "
            f"attempts refused; {kill.daemon} killed holding {len(kill.orders)} orders and "
            f"{len(kill.events)} deliveries; max takeover {slowest:.1f} s for orders, "
            f"{resent:.1f} s for deliveries (bound {TAKEOVER_BOUND:.0f} s); busiest second "
            f"{busiest} requests (budget {RATE})"
        )

        # 2. No order polled twice within its interval (the victim's unrecorded polls excused).
        assert early_polls(upstream, kill) == []
        assert upstream.strays == []
        assert set(upstream.polled_by()) == {*TOKENS, kill.restarted}

        # 3. The victim's claims taken over within the contract's bound.
        assert slowest <= TAKEOVER_BOUND, sorted(taken.items(), key=lambda kv: -kv[1])[:5]
        assert resent <= TAKEOVER_BOUND, (kill.wall, delivered)

        # 4. The whole fleet within one budget, in every one-second window.
        assert busiest <= RATE, crowded_seconds(upstream.arrivals, kill)[:10]
