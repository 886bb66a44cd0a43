"""A throwaway PostgreSQL cluster for the tests: Debian's server, a temporary folder, loopback.

The server refuses to run as root, so as root every server command runs as the ``postgres`` user
(``runuser``). The migrated schema is built once, in a template database that each test clones.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from tracker.store import upgrade

TEMPLATE = "tracker_template"
MISSING = (
    "PostgreSQL's server is not installed (no initdb on PATH or in /usr/lib/postgresql/*/bin); "
    "install Debian's package: apt-get install -y postgresql (.ci/run does)"
)


def server_binaries() -> Path:
    """The folder holding ``initdb`` and ``pg_ctl``, newest version first; fails when missing."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda path: int(path.parts[-3]),
        reverse=True,
    )
    if not versions:
        raise RuntimeError(MISSING)
    return Path(versions[0]).parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Cluster:
    """A running server on 127.0.0.1:``port``, trusting local connections as ``postgres``."""

    def __init__(self, folder: Path, port: int, pg_ctl: list[str], settings: str) -> None:
        self.folder = folder
        self.port = port
        self._pg_ctl = pg_ctl
        self._settings = settings
        self._numbers = itertools.count(1)

    def stop(self, *, keep_commits: bool = False) -> None:
        """Stop the server as an outage would: every connection is cut at once.

        The cluster runs without ``fsync`` and ``synchronous_commit``, so the commits of the
        last moments may be lost, as in a crash; with ``keep_commits`` they are written first,
        as a server that syncs its commits would have them.
        """
        mode = "fast" if keep_commits else "immediate"
        _as_server_user([*self._pg_ctl, "-w", "-m", mode, "stop"])

    def start(self) -> None:
        """Start the server again on the same port, with the same data."""
        _as_server_user([*self._pg_ctl, "-w", "-o", self._settings, "start"])

    def url(self, database: str) -> str:
        """The tracker's ``database.url`` for one database of this cluster."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        """A connection to the ``postgres`` database, in autocommit (CREATE DATABASE needs it)."""
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True
        )

    def clone(self) -> str:
        """A fresh database cloned from the migrated template; returns its URL."""
        name = f"test_{os.getpid()}_{next(self._numbers)}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE {TEMPLATE}')
        return self.url(name)

    def empty(self) -> str:
        """A fresh database with no schema at all; returns its URL."""
        name = f"empty_{os.getpid()}_{next(self._numbers)}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)


def _as_server_user(argv: list[str], *, check: bool = True) -> None:
    """Run a server command (as ``postgres`` when we are root); its stderr names a failure."""
    command = ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip() or done.stdout}")


@contextmanager
def running_cluster() -> Iterator[Cluster]:
    """Start a cluster in a temporary folder with the template migrated; remove it afterwards."""
    binaries = server_binaries()
    folder = Path(tempfile.mkdtemp(prefix="tracker-pg-"))
    if os.geteuid() == 0:
        try:
            shutil.chown(folder, "postgres")
        except LookupError as exc:
            raise RuntimeError(
                "no 'postgres' user to run the server as root; install Debian's package: "
                "apt-get install -y postgresql (.ci/run does)"
            ) from exc
    data, port = folder / "data", _free_port()
    settings = (
        f"-p {port} -c listen_addresses=127.0.0.1 -k {folder} -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    initdb = [str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]
    pg_ctl = [str(binaries / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log")]
    try:
        # A collation other than C, whatever the environment's locale (a fresh container has
        # none, which would give C): production databases have one, and the order id prefix
        # search needs its pattern index only then (tests/integration/test_search.py).
        _as_server_user([*initdb, "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"])
        cluster = Cluster(folder, port, pg_ctl, settings)
        cluster.start()
        with cluster.admin() as conn:
            conn.execute(f"CREATE DATABASE {TEMPLATE}")
        upgrade(cluster.url(TEMPLATE))
        yield cluster
    finally:
        _as_server_user([*pg_ctl, "-m", "immediate", "stop"], check=False)
        shutil.rmtree(folder, ignore_errors=True)
