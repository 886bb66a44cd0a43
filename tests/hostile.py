"""Misbehaving HTTP peers on loopback: answers that drip, answers too large to hold.

Each peer reads one request, answers it the way its behaviour says, and closes the connection.
Nothing large is ever held in memory: big bodies are written chunk by chunk as they go.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType

#: What a peer does with one request: gets the path and the writer, writes what it likes.
Behaviour = Callable[[str, asyncio.StreamWriter], Awaitable[None]]
CHUNK = 64 * 1024
#: Seconds a peer waits, when it closes, for its answers to notice a client that hung up (at
#: their next write): a bound on a hang, as a loaded machine may take a while to get there.
NOTICE = 30.0


def head(status: int, length: int | None, extra: dict[str, str] | None = None) -> bytes:
    """A response head; ``length`` ``None`` means chunked transfer encoding."""
    lines = [f"HTTP/1.1 {status} Status", "Content-Type: application/json", "Connection: close"]
    lines.append("Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}")
    lines += [f"{name}: {value}" for name, value in (extra or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def drip(body: bytes, every: float, status: int = 200) -> Behaviour:
    """Send the head at once, then the body one byte every ``every`` seconds."""

    async def behave(_path: str, writer: asyncio.StreamWriter) -> None:
        writer.write(head(status, len(body)))
        await writer.drain()
        for byte in body:
            await asyncio.sleep(every)
            writer.write(bytes([byte]))
            await writer.drain()

    return behave


def huge(
    size: int, status: int = 200, *, prefix: bytes = b'{"pad":"', chunked: bool = False
) -> Behaviour:
    """Answer ``size`` bytes (``prefix`` then padding), written chunk by chunk as they go."""

    async def behave(_path: str, writer: asyncio.StreamWriter) -> None:
        writer.write(head(status, None if chunked else size))
        sent = 0
        while sent < size:
            piece = (prefix if sent == 0 else b"") + b"x" * CHUNK
            piece = piece[: size - sent]
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            await writer.drain()
            sent += len(piece)
        if chunked:
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    return behave


def answer(status: int, body: bytes, headers: dict[str, str] | None = None) -> Behaviour:
    """A plain, well-formed answer."""

    async def behave(_path: str, writer: asyncio.StreamWriter) -> None:
        writer.write(head(status, len(body), headers) + body)
        await writer.drain()

    return behave


def serve_order(status: str) -> Behaviour:
    """Answer the meter order the path asks for, in ``status``."""

    async def behave(path: str, writer: asyncio.StreamWriter) -> None:
        await answer(200, order_json(path.rsplit("/", 1)[-1], status))(path, writer)

    return behave


def order_json(order_id: str, status: str) -> bytes:
    """A documented meter order in ``status``."""
    return json.dumps(
        {
            "object": "meter_order",
            "id": order_id,
            "subscription": "sub_vzyqxohw546im28zwyhn04ei",
            "customer": "cus_qacki3zcrkc9r41qt44ngl9d",
            "provider": "metrify",
            "status": status,
            "created_at": "2024-03-14T12:00:00Z",
            "updated_at": "2024-03-14T12:00:00Z",
        }
    ).encode()


@dataclass
class HostilePeer:
    """Serves ``behaviours`` by path (``default`` for the rest); counts what it saw and sent."""

    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    default: Behaviour | None = None
    #: Requests received, by path.
    requests: dict[str, int] = field(default_factory=dict)
    #: When each request's head arrived (``time.monotonic()``), in order.
    arrivals: list[float] = field(default_factory=list)
    #: Answers that ended before the behaviour finished (the client hung up).
    cut_off: int = 0
    #: When each answer's behaviour ran to its end (``time.monotonic()``), in order.
    finished: list[float] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    async def __aenter__(self) -> HostilePeer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        if self._tasks:  # a client that hung up is noticed by the peer's next write
            await asyncio.wait(self._tasks, timeout=NOTICE)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            lines = request.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1]
            length = next(
                (
                    int(line.split(":")[1])
                    for line in lines
                    if line.lower().startswith("content-length:")
                ),
                0,
            )
            if length:
                await reader.readexactly(length)
            self.requests[path] = self.requests.get(path, 0) + 1
            self.arrivals.append(time.monotonic())
            behaviour = self.behaviours.get(path, self.default)
            if behaviour is not None:
                await behaviour(path, writer)
            self.finished.append(time.monotonic())
        except (ConnectionError, asyncio.IncompleteReadError):
            self.cut_off += 1
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
