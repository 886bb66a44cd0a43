"""The listener against clients that hold sockets: idle crowds, slowloris, stalled readers, floods.

Each test serves a small app on the real listener (uvicorn with the tracker's protocol) with
limits of its own, and judges by what happens to the sockets, never by how long it took.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import resource
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import httpx
import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tracker.config import Address
from tracker.web.server import (
    ACCEPT_BURST,
    BURSTS_IN_FLIGHT,
    FD_RESERVE,
    Limits,
    connection_cap,
    listening,
    raise_file_limit,
)

#: Seconds a test waits for what must happen at all (a socket closed, a request answered).
PATIENCE = 20.0


class _App:
    """A few routes whose behaviour the tests steer: probes, a held request, an endless stream."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.held = 0
        self._changed = asyncio.Event()
        self.stream_ended = asyncio.Event()

    async def holding(self, count: int) -> None:
        """Wait until ``count`` requests are held."""
        async with asyncio.timeout(PATIENCE):
            while self.held < count:
                self._changed.clear()
                await self._changed.wait()

    def build(self) -> Starlette:
        async def ok(_request: Request) -> Response:
            return JSONResponse({"status": "ok"})

        async def hold(_request: Request) -> Response:
            self.held += 1
            self._changed.set()
            await self.release.wait()
            return JSONResponse({"held": True})

        async def endless(_request: Request) -> Response:
            async def chunks() -> AsyncIterator[bytes]:
                try:
                    for _ in range(4_000):  # bounded: 256 MiB, far past any socket buffer
                        yield b"x" * 65_536
                finally:
                    self.stream_ended.set()

            return StreamingResponse(chunks(), media_type="application/octet-stream")

        return Starlette(
            routes=[
                Route("/healthz", ok),
                Route("/readyz", ok),
                Route("/hold", hold),
                Route("/endless", endless),
            ]
        )


@asynccontextmanager
async def served(limits: Limits) -> AsyncIterator[tuple[_App, str, int]]:
    """The app on a free loopback port with ``limits``: the app, its URL and its port."""
    app = _App()
    async with listening(app.build(), Address("127.0.0.1", 0), limits) as url:
        try:
            yield app, url, int(url.rsplit(":", 1)[1])
        finally:
            app.release.set()


@contextlib.contextmanager
def sockets(
    port: int, count: int, *, receive_buffer: int | None = None
) -> Iterator[list[socket.socket]]:
    """``count`` connected client sockets, closed afterwards."""
    opened: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if receive_buffer is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            sock.connect(("127.0.0.1", port))
            sock.setblocking(False)  # noqa: FBT003 - the socket module's own signature
            opened.append(sock)
        yield opened
    finally:
        for sock in opened:
            sock.close()


async def closed_by_server(sock: socket.socket) -> bool:
    """Wait until the server closes ``sock`` (reading and discarding what it sent)."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(PATIENCE):
        while True:
            try:
                data = await loop.sock_recv(sock, 1 << 20)
            except (ConnectionResetError, BrokenPipeError):
                return True
            if not data:
                return True


def closed_now(sock: socket.socket) -> bool:
    """Whether the server has closed ``sock`` (without waiting)."""
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


async def get(url: str, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=PATIENCE) as client:
        return await client.get(path)


class TestRequestHead:
    """A request head must arrive whole within the head timeout of the connection's start."""

    async def test_a_socket_that_sends_nothing_is_closed(self) -> None:
        """An idle socket that never sends a request is closed by the server."""
        async with served(Limits(head_timeout=0.2)) as (_app, _url, port):
            with sockets(port, 3) as idle:
                assert all([await closed_by_server(s) for s in idle])

    async def test_a_slowloris_is_closed_though_it_keeps_sending(self) -> None:
        """A client that sends a head a piece at a time, never finishing it, is closed."""
        async with served(Limits(head_timeout=0.3)) as (_app, _url, port):
            loop = asyncio.get_running_loop()
            with sockets(port, 1) as (slow,):
                await loop.sock_sendall(slow, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                closed = asyncio.create_task(closed_by_server(slow))
                sent = 0
                while not closed.done() and sent < 10_000:  # bounded
                    with contextlib.suppress(OSError):
                        await loop.sock_sendall(slow, b"X-a: b\r\n")
                    sent += 1
                    await asyncio.sleep(0.01)
                assert await closed

    async def test_a_keep_alive_connection_that_starts_a_head_and_stalls_is_closed(self) -> None:
        """After one answer, a second head that never ends is closed like a first one."""
        async with served(Limits(head_timeout=0.3)) as (_app, _url, port):
            loop = asyncio.get_running_loop()
            with sockets(port, 1) as (sock,):
                await loop.sock_sendall(sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                first = await loop.sock_recv(sock, 65_536)
                assert first.startswith(b"HTTP/1.1 200")
                await loop.sock_sendall(sock, b"GET /healthz HTTP/1.1\r\n")
                assert await closed_by_server(sock)

    async def test_a_prompt_request_is_served(self) -> None:
        """A client that sends its head at once is answered (the deadline does not cut it)."""
        async with served(Limits()) as (_app, url, _port):
            assert (await get(url, "/healthz")).status_code == 200


class TestConnectionCap:
    """Connections beyond the cap close the oldest idle one, so probes always get in."""

    async def test_probes_are_answered_while_idle_sockets_fill_the_cap(self) -> None:
        """With the cap full of silent sockets, /readyz and other routes still answer 200."""
        limits = Limits(head_timeout=60, connections=8)
        async with served(limits) as (_app, url, port):
            with sockets(port, 8) as idle:
                await asyncio.sleep(0)  # let the server accept them
                for path in ("/readyz", "/healthz", "/readyz"):
                    assert (await get(url, path)).status_code == 200
                # The oldest silent ones made room.
                assert await closed_by_server(idle[0])

    async def test_a_connection_serving_a_request_is_never_the_one_closed(self) -> None:
        """The oldest connection, busy with a request, stays; an idle one is closed instead."""
        limits = Limits(head_timeout=60, connections=8)
        async with (
            served(limits) as (app, url, port),
            httpx.AsyncClient(base_url=url, timeout=PATIENCE) as busy_client,
        ):
            held = asyncio.create_task(busy_client.get("/hold"))
            await app.holding(1)
            with sockets(port, 7) as idle:
                assert (await get(url, "/healthz")).status_code == 200
                assert await closed_by_server(idle[0])
                app.release.set()
                assert (await held).status_code == 200

    async def test_a_crowd_beyond_the_cap_is_cut_to_the_cap(self) -> None:
        """40 silent sockets on a cap of 8: 32 are closed (each newcomer closes another one)."""
        async with served(Limits(head_timeout=60, connections=8)) as (_app, url, port):
            with sockets(port, 40) as crowd:
                async with asyncio.timeout(PATIENCE):
                    while sum([closed_now(s) for s in crowd]) < 32:  # noqa: ASYNC110 - sockets
                        await asyncio.sleep(0.05)
                assert (await get(url, "/readyz")).status_code == 200

    def test_the_cap_leaves_files_for_the_upstream_and_the_database(self) -> None:
        """Under a file limit of 1,024, the cap keeps descriptors for the daemon and a burst."""
        assert connection_cap(Limits(), 1024) == 1024 - FD_RESERVE - ACCEPT_BURST * BURSTS_IN_FLIGHT
        assert connection_cap(Limits(connections=100), 1_048_576) == 100

    def test_the_soft_file_limit_is_raised_to_the_hard_one(self) -> None:
        """At start the listener raises the soft limit of open files to the hard limit."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
            assert raise_file_limit() == hard
            assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class TestRequestsAtOnce:
    """Requests served at once are capped with a 503; the probes are served whatever the load."""

    async def test_beyond_the_cap_a_request_is_503_but_probes_pass(self) -> None:
        """With every slot held, a request gets 503 with Retry-After and /readyz gets 200."""
        async with (
            served(Limits(in_flight=2)) as (app, url, _port),
            httpx.AsyncClient(base_url=url, timeout=PATIENCE) as client,
        ):
            holding = [asyncio.create_task(client.get("/hold")) for _ in range(2)]
            await app.holding(2)
            with structlog.testing.capture_logs() as logs:
                refused = await get(url, "/hold")
                refused_again = await get(url, "/hold")
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "1"
            assert refused.json()["error"]["code"] == "service_unavailable"
            assert refused_again.status_code == 503
            # A flood is one log line, its count logged when the interval ends.
            assert [line["event"] for line in logs] == ["http_busy"]
            assert (await get(url, "/readyz")).status_code == 200
            assert (await get(url, "/healthz")).status_code == 200
            app.release.set()
            assert [(await t).status_code for t in holding] == [200, 200]


class TestStalledReader:
    """An answer the client stops reading is dropped after the send timeout."""

    async def test_a_client_that_reads_nothing_is_dropped(self) -> None:
        """A streamed answer to a client that never reads ends, and its socket is closed."""
        async with served(Limits(send_timeout=0.3)) as (app, _url, port):
            loop = asyncio.get_running_loop()
            with sockets(port, 1, receive_buffer=4096) as (sock,):
                await loop.sock_sendall(sock, b"GET /endless HTTP/1.1\r\nHost: x\r\n\r\n")
                with structlog.testing.capture_logs() as logs:
                    async with asyncio.timeout(PATIENCE):
                        await app.stream_ended.wait()
                assert "http_client_stalled" in [line["event"] for line in logs]
                assert await closed_by_server(sock)


class TestResourceErrors:
    """Running out of descriptors is logged once per burst, not once per try."""

    async def test_a_burst_of_emfile_is_one_line(self) -> None:
        """While the listener serves, 50 EMFILE errors from the loop are one log line."""
        async with served(Limits()) as (_app, _url, _port):
            loop = asyncio.get_running_loop()
            handler = loop.get_exception_handler()
            assert handler is not None
            with structlog.testing.capture_logs() as logs:
                for _ in range(50):
                    error = OSError(errno.EMFILE, "Too many open files")
                    handler(
                        loop,
                        {"message": "socket.accept() out of system resource", "exception": error},
                    )
            assert [line["event"] for line in logs] == ["http_resources_exhausted"]
        assert loop.get_exception_handler() is not handler  # given back when it stops
