"""Shared fixtures: a scripted upstream on a real local port, and the database on both backends."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests import support
from tests.postgres import Cluster, running_cluster
from tests.support import ScriptedUpstream
from tracker.demo.serving import catch_all, serve


@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    """One throwaway PostgreSQL cluster for the whole run; missing PostgreSQL fails the run."""
    with running_cluster() as cluster:
        yield cluster


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The test's database on each backend: a SQLite file, or a clone of the migrated template.

    The test's settings (``tests.support.settings_mapping``) point at it.
    """
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'tracker.db'}"
    else:
        url = request.getfixturevalue("postgres").clone()
    support.database_url = url
    try:
        yield url
    finally:
        support.database_url = None


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[ScriptedUpstream, str]]:
    """A scripted Nomos upstream and its base URL."""
    scripted = ScriptedUpstream()
    async with serve(catch_all(scripted)) as server:
        yield scripted, server.url


@pytest.fixture
def empty_database(request: pytest.FixtureRequest, database: str, tmp_path: Path) -> str:
    """Like ``database``, but with no schema yet: a new SQLite file, or a new empty database."""
    if database.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / 'empty.db'}"
    else:
        url = request.getfixturevalue("postgres").empty()
    support.database_url = url
    return url
