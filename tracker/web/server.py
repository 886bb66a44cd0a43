"""uvicorn on the caller's event loop: beside the daemon (``tracker run``) or alone (``serve``).

The socket is bound here, before uvicorn starts, so that an address in use is one line naming
``http.listen`` rather than uvicorn's own exit. uvicorn installs no signal handlers: the daemon
(or :func:`serve_until_signalled`) owns SIGTERM and SIGINT, and stops the server itself.

Nobody on the other side of a socket can stop the watching (see :class:`Limits`): a request head
must arrive whole within seconds of connecting (no idle crowd, no slowloris), an answer the
client stops reading is dropped, open connections are capped below what the file limit leaves
for the upstream and the database (the oldest idle one makes room for a new one), and requests
served at once are capped with a 503, the probes ``/healthz`` and ``/readyz`` excepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import json
import resource
import signal
import socket
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, cast

import h11
import structlog
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from tracker.config import Address
from tracker.errors import ConfigError
from tracker.web.bodies import error_body
from tracker.web.throttle import Tally

log = structlog.get_logger("tracker.web")

#: Seconds requests in flight may take to finish once the server is asked to stop; a slow
#: browser never holds up the daemon's stop for longer.
STOP_GRACE = 2
#: Seconds an idle keep-alive connection is kept.
KEEP_ALIVE = 5
#: Seconds to wait for uvicorn to start serving the bound socket.
START_LIMIT = 10.0
#: File descriptors kept out of the listener's reach: the upstream's and the sinks' connections,
#: the database pool, SQLite's files, the log. Connections beyond the rest are not accepted.
FD_RESERVE = 256
#: Connections accepted in one go when the socket is ready. Each takes a descriptor a few loop
#: turns before the cap can see it, and bursts follow each other meanwhile, so the cap leaves
#: room for :data:`BURSTS_IN_FLIGHT` of them.
ACCEPT_BURST = 32
BURSTS_IN_FLIGHT = 4
#: Connections the kernel holds for the listener until it accepts them: a crowd connecting at
#: once waits there (no descriptor of ours) rather than having its SYNs, and a probe's, dropped.
LISTEN_BACKLOG = 2048
#: Paths served whatever the load: an orchestrator's probes must never see a 503 of ours.
PROBES = frozenset({"/healthz", "/readyz"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """What one client can hold of the listener; the defaults are for production."""

    #: Seconds a request head may take to arrive whole, from the connection's start or the end
    #: of its previous answer: an idle socket or a slowloris is closed after this.
    head_timeout: float = 5.0
    #: Seconds an answer may wait on a client that reads none of it before it is dropped.
    send_timeout: float = 30.0
    #: Connections open at once, at most; fewer when the file limit leaves less (see
    #: :data:`FD_RESERVE`). Health checks, a scraper and a support team need a handful.
    connections: int = 1024
    #: Requests served at once; more are answered 503 with ``Retry-After`` (probes excepted).
    in_flight: int = 64


def raise_file_limit() -> int:
    """Raise this process's soft limit of open files to its hard one; the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


def connection_cap(limits: Limits, open_files: int) -> int:
    """Connections the listener may hold: the configured cap, within what the files allow."""
    spare = FD_RESERVE + ACCEPT_BURST * BURSTS_IN_FLIGHT
    return max(8, min(limits.connections, open_files - spare))


class _Gate:
    """The open connections, oldest first: a new one beyond the cap closes the oldest idle one
    (or itself, when every one is serving a request)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._open: OrderedDict[_Protocol, None] = OrderedDict()
        self.dropped = Tally("http_connections_dropped")

    def admit(self, connection: _Protocol) -> None:
        self._open[connection] = None
        if len(self._open) <= self.cap:
            return
        victim = next((c for c in self._open if c is not connection and c.idle), connection)
        self.dropped.add(reason="too many connections", cap=self.cap)
        # Gone from the count at once: its descriptor is closed at the loop's next turn, and
        # the next connection past the cap must close another one, not this one again.
        self._open.pop(victim, None)
        victim.drop()

    def leave(self, connection: _Protocol) -> None:
        self._open.pop(connection, None)


class _Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with deadlines for the request head and for a stalled send,
    and a place among the gate's connections."""

    def __init__(self, *args: Any, gate: _Gate, limits: Limits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._gate = gate
        self._limits = limits
        self._head_timer: asyncio.TimerHandle | None = None
        self._stall_timer: asyncio.TimerHandle | None = None

    @property
    def idle(self) -> bool:
        """Whether no request is being served (waiting for one, or kept alive between two)."""
        return self.cycle is None or self.cycle.response_complete

    def drop(self) -> None:
        """Close now, whatever is buffered."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head()
        self._gate.admit(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head()
        self._cancel_stall()
        self._gate.leave(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the head arrived whole
            self._cancel_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm_head()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stall_timer is None:
            self._stall_timer = self.loop.call_later(self._limits.send_timeout, self._stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._cancel_stall()

    def _arm_head(self) -> None:
        self._cancel_head()
        self._head_timer = self.loop.call_later(self._limits.head_timeout, self._head_late)

    def _cancel_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _cancel_stall(self) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE:
            self.drop()

    def _stalled(self) -> None:
        self._stall_timer = None
        path = self.scope.get("path") if self.scope is not None else None
        log.info("http_client_stalled", path=path, timeout_s=self._limits.send_timeout)
        self.drop()


#: What the system says when it runs out of descriptors, buffers or memory for a socket.
RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class _ResourceErrors:
    """The event loop's error handler while the listener serves: running out of descriptors
    (asyncio then pauses accepting for a second, and says so at every try) is logged once per
    burst with its count; anything else goes to the handler there was before."""

    def __init__(self, previous: Any) -> None:
        self._previous = previous
        self._tally = Tally("http_resources_exhausted")

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in RESOURCE_ERRORS:
            self._tally.add(error=exc.strerror or str(exc))
        elif self._previous is not None:
            self._previous(loop, context)
        else:
            loop.default_exception_handler(context)


class _Admission:
    """Requests served at once, at most :attr:`Limits.in_flight`; the probes always pass."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self._app = app
        self._limit = limit
        self._busy = 0
        self._refused = Tally("http_busy")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PROBES:
            await self._app(scope, receive, send)
            return
        if self._busy >= self._limit:
            self._refused.add(limit=self._limit)
            await _busy(send)
            return
        self._busy += 1
        try:
            await self._app(scope, receive, send)
        finally:
            self._busy -= 1


async def _busy(send: Send) -> None:
    """503 with the contract's error body."""
    body = json.dumps(error_body(503, "too many requests at once; retry")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", b"1"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _Server(uvicorn.Server):
    """uvicorn's server without its signal handlers (the process has its own), which says
    when it serves."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.serving = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start serving, then say so."""
        await super().startup(sockets=sockets)
        self.serving.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Install nothing."""
        yield


class _ListeningSocket(socket.socket):
    """A socket whose listen queue is :data:`LISTEN_BACKLOG` long, whatever the server asks:
    asyncio accepts as many at once as the queue it asks for, so the server asks for
    :data:`ACCEPT_BURST` and the kernel still queues a crowd."""

    def listen(self, backlog: int = LISTEN_BACKLOG) -> None:
        """Listen with the longer of ``backlog`` and :data:`LISTEN_BACKLOG`."""
        super().listen(max(backlog, LISTEN_BACKLOG))


async def bind(address: Address) -> socket.socket:
    """A socket bound to ``address``, or :class:`ConfigError` naming ``http.listen``."""
    loop = asyncio.get_running_loop()
    try:
        found = await loop.getaddrinfo(
            address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, kind, proto, _name, where = found[0]
        sock = _ListeningSocket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(where)
            sock.setblocking(False)  # noqa: FBT003 - the socket module's own signature
        except OSError:
            sock.close()
            raise
    except OSError as exc:
        raise ConfigError(
            f"http.listen: cannot listen on {address}: {exc.strerror or exc}"
        ) from exc
    return sock


@contextlib.asynccontextmanager
async def listening(
    app: ASGIApp, address: Address, limits: Limits | None = None
) -> AsyncIterator[str]:
    """Serve ``app`` on ``address`` while the block runs; yields the base URL.

    Logs ``http_listening`` with the bound address (a port 0 becomes the one chosen) and
    ``http_stopped`` once requests in flight have finished, within :data:`STOP_GRACE`.
    """
    limits = limits or Limits()
    sock = await bind(address)
    host, port = sock.getsockname()[:2]
    bound = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    gate = _Gate(connection_cap(limits, raise_file_limit()))
    protocol = functools.partial(_Protocol, gate=gate, limits=limits)
    config = uvicorn.Config(
        _Admission(app, limits.in_flight),
        http=cast("type[asyncio.Protocol]", protocol),
        ws="none",
        lifespan="off",
        log_config=None,  # the tracker's structlog speaks for it
        access_log=False,
        proxy_headers=False,  # behind a proxy, the proxy logs the client
        server_header=False,
        timeout_keep_alive=KEEP_ALIVE,
        backlog=ACCEPT_BURST,
        timeout_graceful_shutdown=STOP_GRACE,
    )
    server = _Server(config)
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(_ResourceErrors(previous))
    task = asyncio.create_task(server.serve(sockets=[sock]), name="http")
    try:
        await _started(server, task, bound)
    except BaseException:
        server.should_exit = True
        await asyncio.gather(task, return_exceptions=True)
        sock.close()
        loop.set_exception_handler(previous)
        raise
    url = f"http://{bound}"
    log.info("http_listening", address=bound, url=url, max_connections=gate.cap)
    try:
        yield url
    finally:
        server.should_exit = True
        await asyncio.gather(task, return_exceptions=True)
        sock.close()
        loop.set_exception_handler(previous)
        log.info("http_stopped", address=bound)


async def _started(server: _Server, task: asyncio.Task[None], bound: str) -> None:
    """Wait until ``server`` serves; raise what stopped it, if it stopped."""
    serving = asyncio.create_task(server.serving.wait())
    try:
        await asyncio.wait(
            {serving, task}, timeout=START_LIMIT, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        serving.cancel()
    if server.serving.is_set():
        return
    if task.done():
        task.result()  # raises what stopped it, if anything did
    raise ConfigError(f"http.listen: the server on {bound} did not start")


async def serve_until_signalled(app: ASGIApp, address: Address) -> None:
    """Serve ``app`` on ``address`` until SIGTERM or SIGINT (``tracker serve``).

    SIGHUP (a log rotation, an operator used to ``tracker run``) does not end it: it reads its
    configuration at start only, and says so.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    for sig in handled[:2]:
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(
        signal.SIGHUP,
        functools.partial(
            log.warning,
            "config_reload_unsupported",
            hint="tracker serve reads its configuration at start; restart it to apply changes",
        ),
    )
    try:
        async with listening(app, address):
            await stop.wait()
    finally:
        for sig in handled:
            with contextlib.suppress(RuntimeError):
                loop.remove_signal_handler(sig)
