"""uvicorn on the caller's event loop: beside the daemon (``tracker run``) or alone (``serve``).

The socket is bound here, before uvicorn starts, so that an address in use is one line naming
``http.listen`` rather than uvicorn's own exit. uvicorn installs no signal handlers: the daemon
(or :func:`serve_until_signalled`) owns SIGTERM and SIGINT, and stops the server itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import socket
from collections.abc import AsyncIterator, Iterator

import structlog
import uvicorn
from starlette.types import ASGIApp

from tracker.config import Address
from tracker.errors import ConfigError

log = structlog.get_logger("tracker.web")

#: Seconds requests in flight may take to finish once the server is asked to stop; a slow
#: browser never holds up the daemon's stop for longer.
STOP_GRACE = 2
#: Connections served at once; more are refused with 503. Health checks, a scraper and a
#: support team need a handful; this bounds what a flood of clients can hold.
MAX_CONNECTIONS = 256
#: Seconds an idle keep-alive connection is kept.
KEEP_ALIVE = 5
#: Seconds to wait for uvicorn to start serving the bound socket.
START_LIMIT = 10.0


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


async def bind(address: Address) -> socket.socket:
    """A socket bound to ``address``, or :class:`ConfigError` naming ``http.listen``."""
    loop = asyncio.get_running_loop()
    try:
        found = await loop.getaddrinfo(
            address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, kind, proto, _name, where = found[0]
        sock = socket.socket(family, kind, proto)
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
async def listening(app: ASGIApp, address: Address) -> AsyncIterator[str]:
    """Serve ``app`` on ``address`` while the block runs; yields the base URL.

    Logs ``http_listening`` with the bound address (a port 0 becomes the one chosen) and
    ``http_stopped`` once requests in flight have finished, within :data:`STOP_GRACE`.
    """
    sock = await bind(address)
    host, port = sock.getsockname()[:2]
    bound = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    config = uvicorn.Config(
        app,
        http="h11",
        ws="none",
        lifespan="off",
        log_config=None,  # the tracker's structlog speaks for it
        access_log=False,
        proxy_headers=False,  # behind a proxy, the proxy logs the client
        server_header=False,
        limit_concurrency=MAX_CONNECTIONS,
        timeout_keep_alive=KEEP_ALIVE,
        timeout_graceful_shutdown=STOP_GRACE,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="http")
    try:
        await _started(server, task, bound)
    except BaseException:
        server.should_exit = True
        await asyncio.gather(task, return_exceptions=True)
        sock.close()
        raise
    url = f"http://{bound}"
    log.info("http_listening", address=bound, url=url)
    try:
        yield url
    finally:
        server.should_exit = True
        await asyncio.gather(task, return_exceptions=True)
        sock.close()
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
