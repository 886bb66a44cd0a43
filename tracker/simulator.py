"""A simulated Nomos upstream: the same API shape, version header and OAuth, on a local port.

Its orders move through scripted lifecycles on a clock, so ``tracker demo``, the tests and the
benchmarks watch realistic orders without the real API. Run it alone with
``python -m tracker.simulator --port 8090``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

from tracker.httpserver import HttpServer, Request, Response

API_VERSION = "2026-01-29.edison"
DEMO_CLIENT_ID = "demo-client"
DEMO_CLIENT_SECRET = "demo-secret"  # noqa: S105 - the simulator's own fixed demo credential
_EPOCH = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def order_id(seed: str) -> str:
    """A stable, valid order id derived from ``seed``."""
    digest = hashlib.sha256(seed.encode()).digest()
    return "prdo_" + "".join(_ALPHABET[b % len(_ALPHABET)] for b in digest[:24])


@dataclass(frozen=True, slots=True, kw_only=True)
class Script:
    """One order's lifecycle: each status with how long it lasts (the last one lasts forever)."""

    order_id: str
    provider: str
    steps: tuple[tuple[str, float], ...]

    def at(self, elapsed: float) -> tuple[int, float]:
        """The step index at ``elapsed`` seconds and when that step began."""
        began = 0.0
        for index, (_status, dwell) in enumerate(self.steps[:-1]):
            if elapsed < began + dwell:
                return index, began
            began += dwell
        return len(self.steps) - 1, began


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


@dataclass(slots=True)
class Stats:
    """What the simulator saw: requests in total, per whole second, and the busiest window."""

    requests: int = 0
    rate_limited: int = 0
    busiest_second: int = 0
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


class Simulator:
    """The request handler of the simulated upstream.

    With ``request_log``, every counted request (not ``/_stats``) is written as one line:
    the clock's seconds, the answer's status, the method and the path.
    """

    def __init__(
        self,
        scripts: Sequence[Script],
        *,
        client_id: str = DEMO_CLIENT_ID,
        client_secret: str = DEMO_CLIENT_SECRET,
        static_token: str | None = None,
        token_lifetime: int = 3600,
        rate_limit: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        request_log: TextIO | None = None,
    ) -> None:
        self._scripts = {script.order_id: script for script in scripts}
        self._basic = "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
        self._static = static_token
        self._lifetime = token_lifetime
        self._tokens: dict[str, float] = {}
        self._rate_limit = rate_limit
        self._clock = clock
        self._started = clock()
        self._recent: deque[float] = deque()
        self._request_log = request_log
        self.stats = Stats()

    @property
    def order_ids(self) -> list[str]:
        """The ids of the simulated orders."""
        return list(self._scripts)

    def status_of(self, order_id: str) -> str:
        """The status the order has now."""
        script = self._scripts[order_id]
        return script.steps[script.at(self._clock() - self._started)[0]][0]

    async def __call__(self, request: Request) -> Response:
        """Answer one request as the Nomos API would."""
        now = self._clock()
        if request.path == "/_stats":
            return _json(200, self._stats_body())
        self.stats.count(now)
        response = self._answer(request, now)
        if self._request_log is not None:
            # Flushed at once: a reader may follow the file live, and SIGTERM loses no line.
            line = f"{now:.6f} {response.status} {request.method} {request.path}\n"
            self._request_log.write(line)
            self._request_log.flush()
        return response

    def _answer(self, request: Request, now: float) -> Response:
        if self._over_limit(now):
            self.stats.rate_limited += 1
            return _error(
                429, "RATE_LIMITED", "Wait 1 seconds before retrying.", {"retry-after": "1"}
            )
        if request.method == "POST" and request.path == "/oauth/token":
            return self._token(request, now)
        if request.method != "GET" or not request.path.startswith("/meter-orders/"):
            return _error(404, "NOT_FOUND", f"no route {request.method} {request.path}")
        if request.headers.get("x-api-version") != API_VERSION:
            return _error(400, "BAD_REQUEST", f"this simulator speaks X-API-Version {API_VERSION}")
        if not self._authorized(request.headers.get("authorization", ""), now):
            return _error(401, "UNAUTHORIZED", "missing, invalid or expired token")
        return self._order(request.path.removeprefix("/meter-orders/"), now)

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

    def _order(self, wanted: str, now: float) -> Response:
        script = self._scripts.get(wanted)
        if script is None:
            return _error(404, "NOT_FOUND", f"meter order {wanted[:40]} not found")
        index, began = script.at(now - self._started)
        body = {
            "object": "meter_order",
            "id": script.order_id,
            "subscription": "sub_" + script.order_id[5:],
            "customer": "cus_" + script.order_id[5:],
            "provider": script.provider,
            "status": script.steps[index][0],
            "created_at": _EPOCH.isoformat().replace("+00:00", "Z"),
            "updated_at": _timestamp(_EPOCH + timedelta(days=7 * index, seconds=began)),
        }
        return _json(200, body)

    def _stats_body(self) -> dict[str, object]:
        stats = self.stats
        return {
            "requests": stats.requests,
            "rate_limited": stats.rate_limited,
            "busiest_second": stats.busiest_second,
            "rate_over_whole_seconds": stats.rate(),
        }


def _timestamp(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _json(status: int, body: object, headers: dict[str, str] | None = None) -> Response:
    return Response(
        status=status,
        body=json.dumps(body).encode(),
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
        "docs": "https://docs.nomos.energy",
    }
    return _json(status, body, headers)


async def _serve(args: argparse.Namespace) -> None:
    scripts = steady_scripts(args.orders) if args.steady else demo_scripts(args.step)
    with contextlib.ExitStack() as files:
        request_log = (
            files.enter_context(args.request_log.open("a", encoding="utf-8"))
            if args.request_log is not None
            else None
        )
        simulator = Simulator(
            scripts,
            static_token=args.token,
            rate_limit=args.rate_limit,
            request_log=request_log,
        )
        async with HttpServer(simulator, port=args.port) as server:
            announcement = {"url": server.url, "orders": simulator.order_ids}
            print(json.dumps(announcement), flush=True)  # noqa: T201
            await asyncio.Event().wait()


def main() -> None:
    """``python -m tracker.simulator``: serve the simulated upstream until interrupted."""
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
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
