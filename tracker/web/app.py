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
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tracker.config import HttpUser
from tracker.errors import clip, first_line
from tracker.store import Store
from tracker.web.api import api_routes
from tracker.web.hooks import hook_routes
from tracker.web.metrics import CONTENT_TYPE, Metrics
from tracker.web.pages import error_page, page_routes, wants_page

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
    users: Sequence[HttpUser] = (),
    webhook_secret: SecretStr | None = None,  # POST /hooks/nomos: see tracker.web.hooks
) -> Starlette:
    """The routes over ``store``; ``readiness`` is the daemon's under ``tracker run``.

    ``sinks`` names the configured sinks (read at each scrape, so a reload shows); ``users``
    are the ``[[http.users]]`` whose bearer tokens the API and the pages accept. Errors are
    JSON, but pages for the pages' routes and for browsers (see :func:`wants_page`).
    """

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_request: Request) -> Response:
        reason = readiness() if readiness is not None else None
        if reason is None:
            reason = await _ping(store)
        if reason is None:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "unready", "reason": clip(reason)}, status_code=503)

    async def scrape(_request: Request) -> Response:
        await metrics.refresh(store, sinks())
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", scrape, methods=["GET"]),
            *api_routes(store=store, users=users, sinks=sinks),
            *hook_routes(store=store, secret=webhook_secret, metrics=metrics),
            *page_routes(store=store, users=users, sinks=sinks),
        ],
        exception_handlers={HTTPException: _http_error, Exception: _crash},
    )


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


def error_body(status: int, message: str) -> dict[str, dict[str, str]]:
    """The contract's error object: ``{"error": {"code": …, "message": …}}``."""
    code = HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    return {"error": {"code": code, "message": message}}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)  # noqa: S101 - registered for HTTPException only
    message = exc.detail if exc.detail else HTTPStatus(exc.status_code).phrase
    if wants_page(request):
        return error_page(exc.status_code, message, headers=exc.headers)
    return JSONResponse(
        error_body(exc.status_code, message), status_code=exc.status_code, headers=exc.headers
    )


async def _crash(request: Request, exc: Exception) -> Response:
    log.error(
        "http_request_failed",
        path=request.url.path,
        error=clip(f"{type(exc).__name__}: {exc}"),
        exc_info=exc,
    )
    if wants_page(request):
        return error_page(500, "internal error; see the log")
    return JSONResponse(error_body(500, "internal error; see the log"), status_code=500)
