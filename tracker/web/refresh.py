"""The board that refreshes itself: a small script from this host, and the page's cue.

The board's ``<main>`` carries ``data-refresh`` (seconds); ``/static/refresh.js`` fetches the
same page every so often, swaps the new ``<main>`` in (no reload, no flicker) and keeps an
"updated N s ago" line ticking. Without script the page is the plain page it always was, its
line saying when it was rendered. The script is served like the stylesheet: versioned URL,
cacheable, and allowed by the pages' ``Content-Security-Policy`` (``script-src 'self'``).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

#: Where the script is served.
SCRIPT_PATH = "/static/refresh.js"
#: Seconds between two fetches of a refreshing page: a support desk notices a change within
#: half a minute, and the board's handful of bounded queries cost little at that pace.
REFRESH_SECONDS = 30
#: The templates whose pages refresh themselves.
REFRESHING = frozenset({"board.html"})


@functools.cache
def _script() -> tuple[bytes, str]:
    """The script and a version of it for its URL (a changed file is fetched anew)."""
    code = importlib.resources.files("tracker.web").joinpath("static/refresh.js").read_bytes()
    return code, hashlib.sha256(code).hexdigest()[:12]


def script_url() -> str:
    """The script's versioned URL."""
    return f"{SCRIPT_PATH}?v={_script()[1]}"


def refresh_seconds(template: str) -> int | None:
    """Seconds between refreshes of a page of ``template``, ``None`` for a page that stays."""
    return REFRESH_SECONDS if template in REFRESHING else None


async def script(_request: Request) -> Response:
    """The refresh script, cacheable: its URL changes with its content."""
    code, _version = _script()
    headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "public, max-age=86400"}
    return Response(code, media_type="text/javascript; charset=utf-8", headers=headers)


def refresh_routes() -> list[BaseRoute]:
    """The script's route (public: it holds nothing but code)."""
    return [Route(SCRIPT_PATH, script, methods=["GET"])]
