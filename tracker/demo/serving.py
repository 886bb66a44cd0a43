"""Local HTTP servers for the demo, the tests and the benchmarks: Starlette apps on uvicorn.

They run on the caller's event loop through the same code as the daemon's own listener
(:func:`tracker.web.server.listening`), on loopback and a free port unless told otherwise.
:func:`catch_all` turns one ``async (Request) -> Response`` function into an app that answers
every method and path, with the request body bounded; :class:`DroppedAnswer` plays a peer that
hangs up mid-answer.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tracker.config import Address
from tracker.web.server import listening

#: Bytes a request body may hold: a webhook or a token request is a few hundred; this bounds
#: what a runaway client can make a local server buffer.
MAX_BODY = 8 * 1024 * 1024
#: Every method :func:`catch_all` answers (anything else gets 405 from Starlette).
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

#: One function answering a request.
Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalServer:
    """A running local server."""

    #: The base URL, e.g. ``http://127.0.0.1:41234``.
    url: str


@contextlib.asynccontextmanager
async def serve(app: ASGIApp, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[LocalServer]:
    """Serve ``app`` on ``host:port`` (0: a free port) while the block runs."""
    async with listening(app, Address(host=host, port=port)) as url:
        yield LocalServer(url=url)


def catch_all(endpoint: Endpoint, *, max_body: int = MAX_BODY) -> ASGIApp:
    """An app sending every request, whatever its method and path, to ``endpoint``.

    A body over ``max_body`` bytes is answered 413 before ``endpoint`` reads it all.
    """

    async def answer(request: Request) -> Response:
        return await endpoint(request)

    app = Starlette(routes=[Route("/{path:path}", answer, methods=list(METHODS))])
    return BoundedBody(app, max_body)


class BoundedBody:
    """ASGI middleware: a request body over ``limit`` bytes is refused with 413."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, refusing a declared or streamed body over the limit."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            too_large = PlainTextResponse(f"the body is larger than {self.limit} bytes", 413)
            await too_large(scope, receive, send)
            return
        received = 0

        async def bounded() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise HTTPException(413, f"the body is larger than {self.limit} bytes")
            return message

        await self.app(scope, bounded, send)


class DroppedAnswer(Response):
    """Starts an answer and hangs up before its body: the client sees the connection drop.

    uvicorn closes a connection whose app returns mid-answer (and logs that it did), so the
    client gets no complete answer, as from a peer that crashed or a proxy that cut it off.
    """

    def __init__(self) -> None:
        super().__init__(status_code=200)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the head only; no body, no end."""
        await send({"type": "http.response.start", "status": 200, "headers": []})
