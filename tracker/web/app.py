"""The Starlette app: health, readiness, metrics, the API and the support pages.

The factory receives everything it needs (the store, the metrics, the daemon's readiness, the
configured sinks) and holds nothing global, so several apps can live in one process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Sequence
from http import HTTPStatus

import structlog
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tracker.clock import Clock, utc_now
from tracker.config import HttpUser
from tracker.errors import clip, first_line
from tracker.store import Store, is_busy
from tracker.web.api import PREFIX, api_routes
from tracker.web.auth import Users
from tracker.web.bodies import BodyBudget, error_body
from tracker.web.desk import desk_routes
from tracker.web.hooks import hook_routes
from tracker.web.i18n import LocaleMiddleware, Localization
from tracker.web.metrics import CONTENT_TYPE, Metrics
from tracker.web.pages import error_page, page_guard, page_routes, wants_page
from tracker.web.refresh import refresh_routes
from tracker.web.report_page import Targets, report_routes
from tracker.web.throttle import Tally

log = structlog.get_logger("tracker.web")

#: Why the daemon is not ready (``Daemon.readiness``), or ``None`` while it is.
Readiness = Callable[[], str | None]
#: Seconds ``/readyz`` waits for the database: a probe must answer well within its own timeout
#: (the Dockerfile's is 5 s), and a database slower than this is not ready either.
PING_TIMEOUT = 2.0


def build_app(
    *,
    store: Store,
    metrics: Metrics,
    readiness: Readiness | None = None,
    sinks: Callable[[], Collection[str]] = tuple,
    users: Users | Sequence[HttpUser] = (),
    webhook_secret: SecretStr | None = None,  # POST /hooks/nomos: see tracker.web.hooks
    probe: Store | None = None,
    clock: Clock = utc_now,
    targets: Targets = dict,  # [alerts.stuck], the report page's SLA targets
    localization: Localization | None = None,  # [http] language and timezone: the pages'
) -> Starlette:
    """The routes over ``store``; ``readiness`` is the daemon's under ``tracker run``.

    ``sinks`` names the configured sinks (read at each scrape, so a reload shows); ``users``
    are the ``[[http.users]]`` whose bearer tokens the API and the pages accept (a
    :class:`Users` that a reload swaps, or a fixed list). ``/readyz`` asks ``probe`` (the
    daemon's own store, default ``store``) whether the database answers: the listener's
    connections may all be busy with clients while polling's are not. Errors are JSON, but
    pages for the pages' routes and for browsers (see :func:`wants_page`). ``clock`` dates the
    push hints and judges their signatures' timestamps.
    """
    if not isinstance(users, Users):
        users = Users(users, logins=store.logins)
    guard = page_guard(store=store, users=users, sinks=sinks)
    app = Starlette(
        routes=[
            *_probe_routes(store, probe or store, metrics, readiness, sinks),
            *api_routes(store=store, users=users, sinks=sinks, stuck=targets),
            *hook_routes(
                store=store,
                secret=webhook_secret,
                clock=clock,
                metrics=metrics,
                throttle=users.throttle,
            ),
            *page_routes(store=store, users=users, sinks=sinks, stuck=targets),
            *report_routes(store=store, users=users, guard=guard, targets=targets),
            *refresh_routes(),
            *desk_routes(store=store, users=users, guard=guard, sinks=sinks),
        ],
        exception_handlers={HTTPException: _http_error, Exception: _crash},
        middleware=[
            Middleware(_ApiHeaders),
            Middleware(LocaleMiddleware, localization=localization or Localization()),
        ],
    )
    app.state.bodies = BodyBudget()
    app.state.busy = Tally("http_database_busy")
    return app


def _probe_routes(
    store: Store,
    probed: Store,
    metrics: Metrics,
    readiness: Readiness | None,
    sinks: Callable[[], Collection[str]],
) -> list[Route]:
    """``/healthz``, ``/readyz`` (asking ``probed`` whether the database answers) and
    ``/metrics`` (refreshed from ``store`` at each scrape)."""

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_request: Request) -> Response:
        reason = readiness() if readiness is not None else None
        if reason is None:
            reason = await _ping(probed)
        if reason is None:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "unready", "reason": clip(reason)}, status_code=503)

    async def scrape(_request: Request) -> Response:
        unready = readiness() if readiness is not None else None
        await metrics.refresh(store, sinks(), unready=unready)
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", scrape, methods=["GET"]),
    ]


async def _ping(store: Store) -> str | None:
    """``None`` when the database answers a trivial query in time; else why not."""
    try:
        async with asyncio.timeout(PING_TIMEOUT):
            await store.ping()
    except TimeoutError:
        return f"the database ({store.where}) did not answer within {PING_TIMEOUT:g} s"
    except Exception as exc:
        return f"the database ({store.where}) does not answer: {first_line(exc)}"
    return None


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)  # noqa: S101 - registered for HTTPException only
    message = exc.detail if exc.detail else HTTPStatus(exc.status_code).phrase
    if wants_page(request):
        return error_page(exc.status_code, message, headers=exc.headers)
    return JSONResponse(
        error_body(exc.status_code, message), status_code=exc.status_code, headers=exc.headers
    )


async def _crash(request: Request, exc: Exception) -> Response:
    if is_busy(exc):  # the listener's connections are all in use: a moment's wait
        request.app.state.busy.add(path=request.url.path)
        busy = "the database is busy with other requests; retry"
        return await _http_error(request, HTTPException(503, busy, {"Retry-After": "1"}))
    log.error(
        "http_request_failed",
        path=request.url.path,
        error=clip(f"{type(exc).__name__}: {exc}"),
        exc_info=exc,
    )
    return await _http_error(request, HTTPException(500, "internal error; see the log"))


#: Sent with every answer under the API: customers' data is never sniffed into another type,
#: nor kept by a browser's or a proxy's cache.
API_HEADERS = ((b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-store"))
_API_HEADER_NAMES = frozenset(name for name, _ in API_HEADERS)


class _ApiHeaders:
    """Adds :data:`API_HEADERS` to every answer under ``/api/v1/``, errors included."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(f"{PREFIX}/"):
            await self._app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers", [])
                kept = [(k, v) for k, v in headers if k.lower() not in _API_HEADER_NAMES]
                message = {**message, "headers": [*kept, *API_HEADERS]}
            await send(message)

        await self._app(scope, receive, sending)
