"""What several benchmarks share: the steady simulator, the installed CLI, a sync engine.

A benchmark runs as a file (``make bench``); it puts the repository's root on ``sys.path``
before importing this module (see :data:`ROOT`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
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
            "tracker.simulator",
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
