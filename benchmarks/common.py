"""What several benchmarks share: the steady simulator, the installed CLI, a sync engine.

A benchmark runs as a file (``make bench``); it puts the repository's root on ``sys.path``
before importing this module (see :data:`ROOT`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url

#: The repository's root: benchmarks import ``benchmarks.common`` and ``tests.postgres`` from it.
ROOT = Path(__file__).resolve().parent.parent


def steady_simulator(
    orders: int, token: str, *extra: str
) -> tuple[subprocess.Popen[str], str, list[str]]:
    """The simulated upstream in its own process (so that its CPU is never counted), with
    ``orders`` orders that never change; returns the process, its URL and the order ids."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tracker.demo.simulator",
            "--steady",
            "--orders",
            str(orders),
            "--port",
            "0",
            "--token",
            token,
            *extra,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    if process.stdout is None:
        raise RuntimeError("the simulator has no stdout")
    announced = json.loads(process.stdout.readline())
    return process, announced["url"], announced["orders"]


def tracker_executable() -> str:
    """The ``tracker`` script next to this interpreter (the project's virtualenv), else on PATH."""
    beside = Path(sys.executable).parent / "tracker"
    if beside.exists():
        return str(beside)
    found = shutil.which("tracker")
    if found is None:
        raise SystemExit("tracker is not installed; run with the project's .venv/bin/python")
    return found


@contextmanager
def sync_engine(database_url: str) -> Iterator[Engine]:
    """A synchronous engine on the tracker's database (psycopg on PostgreSQL), disposed after."""
    url = make_url(database_url)
    if url.get_backend_name() == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    engine = create_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


#: The path of a poll by id, ``GET /meter-orders/ID``.
ORDER_PATH = "/meter-orders/"


@dataclass(frozen=True, slots=True)
class Request:
    """One request as the simulator saw it: monotonic seconds, answer status, method, path."""

    at: float
    status: int
    method: str
    path: str

    @property
    def order_id(self) -> str | None:
        """The order of a ``GET /meter-orders/ID`` (a poll), else ``None``."""
        if self.method == "GET" and self.path.startswith(ORDER_PATH):
            return self.path.removeprefix(ORDER_PATH)
        return None


def new_lines(path: Path, offset: int) -> tuple[list[str], int]:
    """The complete lines a growing file gained after ``offset``, and where they end (a
    partial last line waits for the next read)."""
    with path.open("rb") as file:
        file.seek(offset)
        chunk = file.read()
    complete = chunk[: chunk.rfind(b"\n") + 1]
    return complete.decode(errors="replace").splitlines(), offset + len(complete)


@dataclass(slots=True)
class RequestLog:
    """The simulator's ``--request-log`` file, read as it grows."""

    path: Path
    requests: list[Request] = field(default_factory=list)
    _offset: int = 0

    def refresh(self) -> None:
        """Read the lines written since the last refresh (a partial last line waits)."""
        lines, self._offset = new_lines(self.path, self._offset)
        for line in lines:
            at, status, method, path = line.split(" ", 3)
            self.requests.append(Request(float(at), int(status), method, path))

    def between(self, start: float, end: float) -> list[Request]:
        """Requests that arrived in ``[start, end)``."""
        return [r for r in self.requests if start <= r.at < end]

    def first_poll_after(self, moment: float, order_ids: set[str]) -> dict[str, float]:
        """For each of ``order_ids`` requested after ``moment``: when it first was."""
        found: dict[str, float] = {}
        for request in self.requests:
            order_id = request.order_id
            if request.at > moment and order_id in order_ids and order_id not in found:
                found[order_id] = request.at
        return found


@dataclass(slots=True)
class SteadySimulator:
    """The steady simulator in its own process (its CPU is never counted), with its log."""

    process: subprocess.Popen[str]
    url: str
    ids: list[str]
    log: RequestLog

    @classmethod
    def start(cls, orders: int, token: str, request_log: Path, *extra: str) -> SteadySimulator:
        """Start it with ``orders`` orders that never change (``extra``: more of its options,
        e.g. ``--unwatched M``) and read its announcement."""
        request_log.touch()
        process, url, ids = steady_simulator(
            orders, token, "--request-log", str(request_log), *extra
        )
        return cls(process, url, ids, RequestLog(request_log))

    def stats(self) -> dict[str, int]:
        """Its ``/_stats``."""
        with urllib.request.urlopen(f"{self.url}/_stats", timeout=60) as answer:  # noqa: S310
            return dict(json.load(answer))

    def stop(self) -> None:
        """Terminate it, wait, and read the rest of its request log."""
        self.process.terminate()
        self.process.wait()
        self.log.refresh()
