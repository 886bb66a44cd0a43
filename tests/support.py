"""Real local peers for the tests: a scripted Nomos upstream and settings pointing at it."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from tracker.config import Address, Settings, from_mapping
from tracker.demo.serving import DroppedAnswer
from tracker.web import listening

if TYPE_CHECKING:
    from tracker.service import Service

API_VERSION = "2026-01-29.edison"
STATIC_TOKEN = "nom_static_9f8e7d6c5b4a"
CLIENT_ID = "client-under-test"
CLIENT_SECRET = "client-secret-under-test"
ROOT = Path(__file__).parents[1]
#: The database of the running test, set by the ``database`` fixture (else a SQLite file).
database_url: str | None = None

Action = Callable[[str], Awaitable[Response]]


def order_body(order_id: str, status: str | None = "waiting", **changes: Any) -> dict[str, Any]:
    """A documented meter order, with ``changes`` applied (``None`` removes a field)."""
    body: dict[str, Any] = {
        "object": "meter_order",
        "id": order_id,
        "subscription": "sub_vzyqxohw546im28zwyhn04ei",
        "customer": "cus_qacki3zcrkc9r41qt44ngl9d",
        "provider": "energy-metering",
        "status": status,
        "created_at": "2024-03-14T12:00:00Z",
        "updated_at": "2024-03-14T12:00:00Z",
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def _json(status: int, body: object, headers: dict[str, str] | None = None) -> Response:
    return Response(
        content=json.dumps(body).encode(),
        status_code=status,
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def ok(status: str = "waiting", **changes: Any) -> Action:
    """Answer 200 with the order in ``status``."""

    async def act(order_id: str) -> Response:
        return _json(200, order_body(order_id, status, **changes))

    return act


def error(
    code: int, headers: dict[str, str] | None = None, request_id: str = "req_abc123"
) -> Action:
    """Answer ``code`` with the provider's documented error body."""

    async def act(_order_id: str) -> Response:
        body = {"code": "ERR", "message": f"scripted {code}", "requestId": request_id}
        return _json(code, body, headers)

    return act


def raw(body: bytes, code: int = 200) -> Action:
    """Answer with exactly ``body``."""

    async def act(_order_id: str) -> Response:
        return Response(
            content=body, status_code=code, headers={"Content-Type": "application/json"}
        )

    return act


def drop() -> Action:
    """Close the connection before the answer is complete."""

    async def act(_order_id: str) -> Response:
        return DroppedAnswer()

    return act


def stall(seconds: float, then: Action) -> Action:
    """Wait ``seconds`` before answering like ``then``."""

    async def act(order_id: str) -> Response:
        await asyncio.sleep(seconds)
        return await then(order_id)

    return act


@dataclass
class Seen:
    """One request the upstream received."""

    path: str
    version: str | None
    authorization: str | None
    #: When it arrived (``time.monotonic()``).
    at: float = field(default_factory=time.monotonic)
    #: When it arrived on the wall clock (``time.time()``), which the tracker schedules by.
    wall: float = field(default_factory=time.time)


class ScriptedUpstream:
    """Plays the Nomos API: each order answers its scripted actions in turn, the last repeating."""

    def __init__(self, token_lifetime: int = 3600) -> None:
        self.scripts: dict[str, list[Action]] = {}
        self.seen: list[Seen] = []
        self.tokens: set[str] = set()
        self.token_requests = 0
        self.token_lifetime = token_lifetime
        self._counter = itertools.count(1)

    def script(self, order_id: str, *actions: Action) -> None:
        """Set what ``order_id`` answers, in order; the last action repeats."""
        self.scripts[order_id] = list(actions)

    def expire_tokens(self) -> None:
        """Forget every issued OAuth token, as if they had expired."""
        self.tokens.clear()

    def polls(self, order_id: str) -> int:
        """How many GETs ``order_id`` received."""
        return sum(1 for s in self.seen if s.path == f"/meter-orders/{order_id}")

    async def __call__(self, request: Request) -> Response:
        path = request.url.path
        self.seen.append(
            Seen(
                path=path,
                version=request.headers.get("x-api-version"),
                authorization=request.headers.get("authorization"),
            )
        )
        if path == "/oauth/token":
            return self._token(request, await request.body())
        header = request.headers.get("authorization", "")
        token = header.removeprefix("Bearer ")
        if token != STATIC_TOKEN and token not in self.tokens:
            return await error(401, request_id="req_unauth")("")
        order_id = path.removeprefix("/meter-orders/")
        actions = self.scripts.get(order_id)
        if not actions:
            return await error(404, request_id="req_missing")(order_id)
        action = actions.pop(0) if len(actions) > 1 else actions[0]
        return await action(order_id)

    def _token(self, request: Request, body: bytes) -> Response:
        self.token_requests += 1
        expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("authorization") != expected or b"client_credentials" not in body:
            return _json(401, {"code": "UNAUTHORIZED", "message": "bad client", "requestId": "r"})
        token = f"tok_{next(self._counter)}_secretpart"
        self.tokens.add(token)
        return _json(
            200,
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": self.token_lifetime,
                "refresh_token": "ref",
            },
        )


def settings_mapping(
    tmp_path: Path, upstream_url: str, *, oauth: bool = False, **sections: Any
) -> dict[str, Any]:
    """A configuration for the tests: fast timeouts, the test's database (``database_url``)."""
    upstream: dict[str, Any] = {
        "base_url": upstream_url,
        "timeout": 5,
        "requests_per_second": 200,
        "max_concurrency": 4,
    }
    if oauth:
        upstream |= {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    else:
        upstream["token"] = STATIC_TOKEN
    upstream |= sections.pop("upstream", {})
    mapping: dict[str, Any] = {
        "upstream": upstream,
        "database": {"url": database_url or f"sqlite:///{tmp_path / 'tracker.db'}"},
        "polling": {"interval": 60, "jitter": 0},
        "log": {"format": "json", "level": "debug"},
    }
    for name, section in sections.items():
        mapping[name] = section if isinstance(section, list) else mapping.get(name, {}) | section
    return mapping


def make_settings(tmp_path: Path, upstream_url: str, **kwargs: Any) -> Settings:
    """Validated settings from :func:`settings_mapping`."""
    return from_mapping(settings_mapping(tmp_path, upstream_url, **kwargs), {}, origin="test")


def write_config(path: Path, mapping: dict[str, Any]) -> Path:
    """Write ``mapping`` as a TOML file (the few shapes the tests need)."""
    lines: list[str] = []
    tables = {k: v for k, v in mapping.items() if isinstance(v, dict)}
    for name, section in tables.items():
        nested = {k: v for k, v in section.items() if isinstance(v, dict)}
        arrays = {
            k: v
            for k, v in section.items()
            if isinstance(v, list) and v and all(isinstance(item, dict) for item in v)
        }
        lines.append(f"[{name}]")
        lines += [
            f"{k} = {json.dumps(v)}"
            for k, v in section.items()
            if k not in nested and k not in arrays
        ]
        for sub, values in nested.items():
            lines.append(f"[{name}.{sub}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
        for sub, entries in arrays.items():  # [[http.users]]
            for entry in entries:
                lines.append(f"[[{name}.{sub}]]")
                lines += [f"{k} = {json.dumps(v)}" for k, v in entry.items()]
    for name, entries in mapping.items():
        if isinstance(entries, list):
            for entry in entries:
                lines.append(f"[[{name}]]")
                lines += [f"{k} = {json.dumps(v)}" for k, v in entry.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Ran:
    """A finished CLI run."""

    code: int
    out: str
    err: str


async def tracker_cli(*args: str, env: dict[str, str] | None = None, limit: float = 60) -> Ran:
    """Run ``python -m tracker ARGS`` as a user would, without blocking the event loop."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tracker",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        cwd=ROOT,
    )
    out, err = await asyncio.wait_for(process.communicate(), limit)
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())


WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"receiver-side-secret-key-32bytes").decode()


@dataclass
class Hook:
    """One POST the receiver got."""

    event_id: str
    body: bytes
    verified: bool
    answered: int


class HookReceiver:
    """A customer's webhook endpoint: verifies with the ``standardwebhooks`` package.

    ``answers`` are the status codes to give, in turn (the last repeats; default 204).
    """

    def __init__(
        self,
        secret: str = WEBHOOK_SECRET,
        answers: tuple[int, ...] = (204,),
        delay: float = 0.0,
        retry_after: str = "0",
    ) -> None:
        from standardwebhooks.webhooks import Webhook  # noqa: PLC0415 - a dev-only package

        self._webhook = Webhook(secret)
        self.answers = list(answers)
        self.delay = delay
        self.retry_after = retry_after
        self.hooks: list[Hook] = []
        self.times: list[float] = []

    @property
    def accepted(self) -> list[Hook]:
        """The hooks answered with 2xx."""
        return [h for h in self.hooks if 200 <= h.answered < 300]

    async def __call__(self, request: Request) -> Response:
        if self.delay:
            await asyncio.sleep(self.delay)
        body = await request.body()
        try:
            self._webhook.verify(body, dict(request.headers))
            verified = True
        except Exception:
            verified = False
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if not verified:
            answer = 401
        self.hooks.append(Hook(request.headers.get("webhook-id", ""), body, verified, answer))
        self.times.append(asyncio.get_running_loop().time())
        headers = {"Retry-After": self.retry_after} if answer in {429, 503} else {}
        return Response(status_code=answer, headers=headers)


@asynccontextmanager
async def app_client(app: ASGIApp) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    """``app`` on a free loopback port, served as the daemon serves its listener, and a client
    pointed at it (which keeps cookies)."""
    async with (
        listening(app, Address("127.0.0.1", 0)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        yield url, client


async def run_until(
    service: Service, done: Callable[[], Awaitable[bool]], limit: float = 180
) -> None:
    """Run the service's daemon until ``done`` says so, then stop it. ``limit`` only ends a
    hang: a loaded machine took over 30 s for a discovery pass that takes 3 alone."""
    stop = asyncio.Event()
    running = asyncio.create_task(service.daemon().run(stop))
    try:
        async with asyncio.timeout(limit):
            while not await done():
                if running.done():
                    running.result()  # the daemon ended: say why
                await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(running, 10)
