"""A simulated Nomos upstream: the same API shape, version header and OAuth, on a local port.

Its orders move through scripted lifecycles on a clock, so ``tracker demo``, the tests and the
benchmarks watch realistic orders without the real API. It answers ``GET /meter-orders/{id}``,
the list endpoint ``GET /meter-orders`` (pages, cursors, filters), ``POST /oauth/token`` and,
for benchmarks, ``GET /_stats``. Run it alone with ``python -m tracker.demo.simulator --port 8090``.
Beside the scripted orders it can serve a whole organisation (``--organisation N``, see
:mod:`tracker.demo.organisation`), whose list pages cost about the items they return.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import heapq
import json
import secrets
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from tracker.config import LogSettings
from tracker.demo.hints import HINT_TIMEOUT, HintTarget, send_hint
from tracker.demo.listing import (
    TOP,
    Source,
    decode_cursor,
    encode_cursor,
    find_created,
    list_page,
    parse_filters,
    parse_limit,
)

# Change, Script and order_id are re-exported: tests and benchmarks import them from here.
from tracker.demo.organisation import Change as Change  # noqa: PLC0414
from tracker.demo.organisation import Organisation, ScriptedOrders
from tracker.demo.organisation import Script as Script  # noqa: PLC0414
from tracker.demo.organisation import order_id as order_id  # noqa: PLC0414
from tracker.demo.serving import catch_all, serve
from tracker.errors import BadRequest, ConfigError
from tracker.lifecycle import Status
from tracker.logs import configure as configure_logs

API_VERSION = "2026-01-29.edison"
DEMO_CLIENT_ID = "demo-client"
DEMO_CLIENT_SECRET = "demo-secret"  # noqa: S105 - the simulator's own fixed demo credential
_STATUSES = tuple(status.value for status in Status)


_DEMO_PATHS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "energy-metering",
        (
            "intended",
            "waiting",
            "ordered",
            "checked",
            "installation_planning",
            "installation_scheduled",
            "installation_waiting",
            "installation_finished",
            "installed",
            "activated",
        ),
    ),
    (
        "metrify",
        (
            "waiting",
            "ordered",
            "blocked",
            "ordered",
            "checked",
            "installation_planning",
            "installation_scheduled",
        ),
    ),
    (
        "inexogy",
        (
            "checked",
            "installation_planning",
            "blocked_wim",
            "installation_scheduled",
            "installation_waiting",
            "installation_finished",
        ),
    ),
    ("energy-metering", ("waiting", "ordered", "checked", "cancelled")),
    ("metrify", ("waiting", "ordered", "pre_installed")),
    (
        "inexogy",
        (
            "ordered",
            "checked",
            "installation_scheduled",
            "installation_finished",
            "installed",
            "activated",
        ),
    ),
    (
        "energy-metering",
        (
            "installation_planning",
            "installation_scheduled",
            "installation_planning",
            "installation_scheduled",
            "installation_waiting",
        ),
    ),
    ("metrify", ("intended", "waiting", "cancelled")),
    ("inexogy", ("waiting", "blocked", "waiting", "ordered", "checked")),
    ("energy-metering", ("installation_finished", "installed", "activated")),
    (
        "metrify",
        (
            "ordered",
            "checked",
            "installation_planning",
            "blocked_wim",
            "installation_planning",
            "installation_scheduled",
        ),
    ),
    (
        "inexogy",
        (
            "checked",
            "installation_planning",
            "installation_scheduled",
            "installation_waiting",
            "installation_finished",
            "installed",
        ),
    ),
)


def demo_scripts(step_seconds: float = 4.5) -> list[Script]:
    """A dozen orders: the main path, blocked detours, a WiM wait, cancellations, pre-installed."""
    scripts = []
    for index, (provider, statuses) in enumerate(_DEMO_PATHS):
        # Stagger the steps so that the orders do not all move in the same second.
        dwell = step_seconds * (0.8 + 0.1 * (index % 5))
        scripts.append(
            Script(
                order_id=order_id(f"demo-{index}"),
                provider=provider,
                steps=tuple((status, dwell) for status in statuses),
            )
        )
    return scripts


def steady_scripts(count: int, status: str = "ordered") -> list[Script]:
    """``count`` orders that never change: the steady state the benchmarks poll."""
    return [
        Script(order_id=order_id(f"steady-{i}"), provider="metrify", steps=((status, 0.0),))
        for i in range(count)
    ]


def unwatched_scripts(count: int) -> list[Script]:
    """``count`` steady orders of the organisation that the tracker is not meant to watch.

    Their statuses and providers cycle through every documented value; like every simulated
    order, each has its own customer and subscription (derived from its id).
    """
    providers = ("energy-metering", "metrify", "inexogy")
    return [
        Script(
            order_id=order_id(f"unwatched-{i}"),
            provider=providers[i % len(providers)],
            steps=((_STATUSES[i % len(_STATUSES)], 0.0),),
        )
        for i in range(count)
    ]


@dataclass(slots=True)
class Stats:
    """What the simulator saw: requests in total and by kind, per whole second, the busiest window.

    Hints the simulator sends are not requests it received: they are counted apart.
    """

    requests: int = 0
    rate_limited: int = 0
    busiest_second: int = 0
    #: ``GET /meter-orders`` requests (list pages), whatever their answer.
    list_requests: int = 0
    #: ``GET /meter-orders/{id}`` requests, whatever their answer.
    id_requests: int = 0
    #: Orders returned in list pages.
    items_served: int = 0
    #: Hints answered with 2xx by their receiver.
    hints_sent: int = 0
    #: Hints that got no answer or a non-2xx one.
    hints_failed: int = 0
    _start: float | None = None
    #: Requests started in each whole second since the first request.
    _per_second: list[int] = field(default_factory=list)
    _window: deque[float] = field(default_factory=deque)

    def rate(self) -> float:
        """Requests per second over the whole seconds since the first request."""
        complete = self._per_second[:-1]
        return sum(complete) / len(complete) if complete else 0.0

    def count(self, now: float) -> None:
        """Count a request that starts at ``now``."""
        self.requests += 1
        if self._start is None:
            self._start = now
        second = int(now - self._start)
        self._per_second.extend([0] * (second + 1 - len(self._per_second)))
        self._per_second[second] += 1
        self._window.append(now)
        while self._window[0] <= now - 1.0:
            self._window.popleft()
        self.busiest_second = max(self.busiest_second, len(self._window))

    def as_dict(self) -> dict[str, object]:
        """The numbers ``/_stats`` answers."""
        return {
            "requests": self.requests,
            "list_requests": self.list_requests,
            "id_requests": self.id_requests,
            "items_served": self.items_served,
            "rate_limited": self.rate_limited,
            "busiest_second": self.busiest_second,
            "rate_over_whole_seconds": self.rate(),
            "hints_sent": self.hints_sent,
            "hints_failed": self.hints_failed,
        }


class Simulator:
    """The request handler of the simulated upstream.

    ``scripts`` are the orders the tracker is meant to watch (:attr:`order_ids`);
    ``unwatched`` adds that many steady orders of the same organisation that only list pages
    show; ``organisation`` adds a whole organisation of orders (:class:`Organisation`), listed
    beside them. With ``stale_updated_at``, a scripted status change does not move the order's
    ``updated_at`` (as the upstream may do). ``ignore_filters`` names list filters this
    upstream ignores, like one that does not know them. With ``hints``, :meth:`hints_running`
    POSTs a signed webhook at each scripted status change. With ``request_log``, every
    counted request (not ``/_stats``) is written as one line: the clock's seconds, the
    answer's status, the method and the path.
    """

    def __init__(
        self,
        scripts: Sequence[Script],
        *,
        unwatched: int = 0,
        organisation: Organisation | None = None,
        stale_updated_at: bool = False,
        client_id: str = DEMO_CLIENT_ID,
        client_secret: str = DEMO_CLIENT_SECRET,
        static_token: str | None = None,
        token_lifetime: int = 3600,
        rate_limit: int | None = None,
        ignore_filters: Collection[str] = (),
        hints: HintTarget | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        request_log: TextIO | None = None,
    ) -> None:
        self._watched = [script.order_id for script in scripts]
        self._basic = "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
        self._static = static_token
        self._lifetime = token_lifetime
        self._tokens: dict[str, float] = {}
        self._rate_limit = rate_limit
        self._ignored = frozenset(ignore_filters)
        self._hints = hints
        self._clock = clock
        self._started = clock()
        self._wall_clock = wall_clock
        self._wall_started = wall_clock()
        everything = [*scripts, *unwatched_scripts(unwatched)]
        self._scripted = ScriptedOrders(everything, self._wall_started, stale=stale_updated_at)
        self._scripts = self._scripted.scripts
        self.organisation = organisation
        self._sources: list[Source] = [self._scripted]
        if organisation is not None:
            organisation.attach(clock, self._started, self._wall_started)
            self._sources.append(organisation)
        self._recent: deque[float] = deque()
        self._request_log = request_log
        self.stats = Stats()

    @property
    def wall_started(self) -> float:
        """When the simulator's clock started, in Unix seconds: every change is timed from it."""
        return self._wall_started

    @property
    def order_ids(self) -> list[str]:
        """The ids of the scripted orders, the ones the tracker is meant to watch."""
        return list(self._watched)

    @property
    def changes(self) -> list[Change]:
        """Every status change up to now (scripted, and the organisation's), oldest first."""
        elapsed = self._clock() - self._started
        extra = self.organisation.changes if self.organisation is not None else []
        found = [
            Change(
                order_id=order,
                status=status,
                monotonic=self._started + moment,
                wall=self._wall_started + moment,
            )
            for order in self._watched
            for moment, status in self._scripts[order].changes()
            if moment <= elapsed
        ]
        return sorted([*found, *extra], key=lambda change: (change.monotonic, change.order_id))

    def status_of(self, order_id: str) -> str:
        """The status the order (scripted, or of the organisation) has now."""
        script = self._scripts.get(order_id)
        if script is not None:
            return script.steps[script.at(self._clock() - self._started)[0]][0]
        found = self.organisation.status_of(order_id) if self.organisation is not None else None
        if found is None:
            raise KeyError(order_id)
        return found

    @property
    def app(self) -> ASGIApp:
        """The simulator as an ASGI app, to serve (e.g. with :func:`tracker.demo.serving.serve`)."""
        return catch_all(self.answer)

    async def answer(self, request: Request) -> Response:
        """Answer one request as the Nomos API would."""
        now = self._clock()
        path = request.url.path
        if path == "/_stats":
            return _json(200, self.stats.as_dict())
        self.stats.count(now)
        response = self._answer(request, path, now)
        if self._request_log is not None:
            # Flushed at once: a reader may follow the file live, and SIGTERM loses no line.
            line = f"{now:.6f} {response.status_code} {request.method} {path}\n"
            self._request_log.write(line)
            self._request_log.flush()
        return response

    def _answer(self, request: Request, path: str, now: float) -> Response:
        route = _route(request.method, path)
        if route == "list":
            self.stats.list_requests += 1
        elif route == "order":
            self.stats.id_requests += 1
        if self._over_limit(now):
            self.stats.rate_limited += 1
            return _error(
                429, "RATE_LIMITED", "Wait 1 seconds before retrying.", {"retry-after": "1"}
            )
        if route == "token":
            return self._token(request, now)
        if route is None:
            return _error(404, "NOT_FOUND", f"no route {request.method} {path[:80]}")
        if request.headers.get("x-api-version") != API_VERSION:
            return _error(400, "BAD_REQUEST", f"this simulator speaks X-API-Version {API_VERSION}")
        if not self._authorized(request.headers.get("authorization", ""), now):
            return _error(401, "UNAUTHORIZED", "missing, invalid or expired token")
        self._scripted.elapsed = now - self._started
        if self.organisation is not None:
            self.organisation.advance(now - self._started)
        if route == "list":
            return self._list(request.query_params.multi_items())
        return self._order(path.removeprefix("/meter-orders/"))

    def _over_limit(self, now: float) -> bool:
        if self._rate_limit is None:
            return False
        while self._recent and self._recent[0] <= now - 1.0:
            self._recent.popleft()
        if len(self._recent) >= self._rate_limit:
            return True
        self._recent.append(now)
        return False

    def _token(self, request: Request, now: float) -> Response:
        if request.headers.get("authorization") != self._basic:
            return _error(401, "UNAUTHORIZED", "invalid client credentials")
        token = "simtok_" + secrets.token_urlsafe(24)
        self._tokens[token] = now + self._lifetime
        body = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": self._lifetime,
            "refresh_token": "simref_" + secrets.token_urlsafe(16),
        }
        return _json(200, body)

    def _authorized(self, header: str, now: float) -> bool:
        token = header.removeprefix("Bearer ")
        if self._static is not None and token == self._static:
            return True
        return self._tokens.get(token, 0.0) > now

    def _order(self, wanted: str) -> Response:
        for source in self._sources:
            if source.created(wanted) is not None:
                return _json(200, source.body(wanted))
        return _error(404, "NOT_FOUND", f"meter order {wanted[:40]} not found")

    def _list(self, params: list[tuple[str, str]]) -> Response:
        query = dict(params)
        try:
            limit = parse_limit(query.get("limit"))
            filters = parse_filters(params, self._ignored)
            cursor = query.get("cursor")
            start = TOP if cursor is None else decode_cursor(cursor, self._created)
        except BadRequest as exc:
            return _error(400, "BAD_REQUEST", str(exc))
        items, following = list_page(self._sources, filters, limit, start)
        self.stats.items_served += len(items)
        next_page = None if following is None else encode_cursor(following)
        body = {
            "object": "list",
            "items": items,
            "has_more": next_page is not None,
            "next_page": next_page,
        }
        return _json(200, body)

    def _created(self, order: str) -> int | None:
        return find_created(self._sources, order)

    @contextlib.asynccontextmanager
    async def hints_running(self, target: HintTarget | None = None) -> AsyncIterator[None]:
        """While the block runs, POST a signed hint at each status change to ``target``, or
        else to the one given at construction (e.g. a receiver that starts after the simulator).

        Without a hint target it does nothing. Changes already past when it starts are not
        sent; a send that fails is counted (``stats.hints_failed``), written to stderr, and
        never stops the simulator.
        """
        target = target or self._hints
        if target is None:
            yield
            return
        async with httpx.AsyncClient(timeout=HINT_TIMEOUT, trust_env=False) as http:
            sender = asyncio.create_task(self._send_hints(http, target), name="hints")
            try:
                yield
            finally:
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)

    async def _send_hints(self, http: httpx.AsyncClient, target: HintTarget) -> None:
        """Sleep until each next scripted change, then send its hint in a task of its own."""
        elapsed = self._clock() - self._started
        upcoming = [
            (moment, order, status)
            for order in self._watched
            for moment, status in self._scripts[order].changes()
            if moment > elapsed
        ]
        heapq.heapify(upcoming)
        sending: set[asyncio.Task[None]] = set()
        try:
            while upcoming:
                moment, order, status = upcoming[0]
                wait = self._started + moment - self._clock()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                heapq.heappop(upcoming)
                task = asyncio.create_task(self._send_hint(http, target, order, status))
                sending.add(task)
                task.add_done_callback(sending.discard)
            await asyncio.gather(*sending)
        finally:
            for task in sending:
                task.cancel()

    async def _send_hint(
        self, http: httpx.AsyncClient, target: HintTarget, order: str, status: str
    ) -> None:
        """POST one signed hint about ``order``; count it, and report a failure on stderr."""
        failed = await send_hint(http, target, order, status, int(self._wall_clock()))
        if failed is None:
            self.stats.hints_sent += 1
            return
        self.stats.hints_failed += 1
        print(f"simulator: hint about {order} not delivered: {failed}", file=sys.stderr)  # noqa: T201


def _route(method: str, path: str) -> str | None:
    """Which of the simulator's routes ``method path`` is, if any."""
    if method == "POST" and path == "/oauth/token":
        return "token"
    if method == "GET" and path == "/meter-orders":
        return "list"
    if method == "GET" and path.startswith("/meter-orders/"):
        return "order"
    return None


def _json(status: int, body: object, headers: dict[str, str] | None = None) -> Response:
    return Response(
        content=json.dumps(body).encode(),
        status_code=status,
        headers={
            "Content-Type": "application/json",
            "X-API-Version": API_VERSION,
            **(headers or {}),
        },
    )


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    body = {
        "code": code,
        "message": message,
        "requestId": "req_" + secrets.token_hex(8),
        "docs": f"https://docs.nomos.energy/api-references/errors/{code}",
    }
    return _json(status, body, headers)


async def _serve(args: argparse.Namespace) -> None:
    scripts = steady_scripts(args.orders) if args.steady else demo_scripts(args.step)
    organisation = None
    if args.organisation is not None:
        organisation = Organisation(
            args.organisation,
            change_share_per_hour=args.change_share,
            new_per_hour=args.new_per_hour,
            stale_updated_at=args.stale_updated_at,
        )
        scripts = scripts if args.steady else []
    with contextlib.ExitStack() as files:
        request_log = (
            files.enter_context(args.request_log.open("a", encoding="utf-8"))
            if args.request_log is not None
            else None
        )
        hints = (
            HintTarget(url=args.hint_url, secret=args.hint_secret)
            if args.hint_url is not None
            else None
        )
        simulator = Simulator(
            scripts,
            unwatched=args.unwatched,
            organisation=organisation,
            stale_updated_at=args.stale_updated_at,
            static_token=args.token,
            rate_limit=args.rate_limit,
            ignore_filters=args.ignore_filter,
            hints=hints,
            request_log=request_log,
        )
        async with serve(simulator.app, port=args.port) as server, simulator.hints_running():
            announcement: dict[str, object] = {"url": server.url, "orders": simulator.order_ids}
            if organisation is not None:
                announcement["orders"] = [*simulator.order_ids, *organisation.order_ids(100)]
                announcement["organisation"] = organisation.size
                # A benchmark works out the organisation's changes (and when they happened)
                # from the same options and this moment.
                announcement["wall_started"] = simulator.wall_started
            print(json.dumps(announcement), flush=True)  # noqa: T201
            await asyncio.Event().wait()


def main() -> None:
    """``python -m tracker.demo.simulator``: serve the simulated upstream until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--steady", action="store_true", help="orders that never change")
    parser.add_argument("--orders", type=int, default=500, help="how many steady orders")
    parser.add_argument("--step", type=float, default=4.5, help="seconds per demo step")
    parser.add_argument("--token", default=None, help="also accept this static bearer token")
    parser.add_argument("--rate-limit", type=int, default=None, help="answer 429 above this rps")
    parser.add_argument(
        "--request-log",
        type=Path,
        default=None,
        help="append one line per request: monotonic seconds, status, method, path",
    )
    parser.add_argument(
        "--unwatched",
        type=int,
        default=0,
        help="this many more steady orders that list pages show but the tracker does not watch",
    )
    parser.add_argument(
        "--ignore-filter",
        action="append",
        default=[],
        metavar="FIELD",
        help="ignore list filters on FIELD, like an upstream that does not know it (repeatable)",
    )
    parser.add_argument(
        "--organisation",
        type=int,
        default=None,
        metavar="N",
        help="serve an organisation of N orders (instead of the demo orders, unless --steady)",
    )
    parser.add_argument(
        "--change-share", type=float, default=0.001, help="share of them changing per hour"
    )
    parser.add_argument(
        "--new-per-hour", type=float, default=0.0, help="new organisation orders per hour"
    )
    parser.add_argument(
        "--stale-updated-at",
        action="store_true",
        help="a status change does not move updated_at (scripted and organisation orders)",
    )
    parser.add_argument("--hint-url", default=None, help="POST a signed webhook per change here")
    parser.add_argument("--hint-secret", default=None, help="the secret that signs the hints")
    args = parser.parse_args()
    if (args.hint_url is None) != (args.hint_secret is None):
        parser.error("--hint-url and --hint-secret go together")
    # Log lines (uvicorn's start and stop) go to stderr: stdout's first line is the announcement.
    configure_logs(LogSettings(format="console", level="warning"), stream=sys.stderr)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(args))
    except ConfigError as exc:
        parser.exit(2, f"simulator: {exc}\n")


if __name__ == "__main__":
    main()
