"""Shared fixtures: a scripted upstream on a real local port."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support import ScriptedUpstream
from tracker.httpserver import HttpServer


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[ScriptedUpstream, str]]:
    """A scripted Nomos upstream and its base URL."""
    scripted = ScriptedUpstream()
    async with HttpServer(scripted) as server:
        yield scripted, server.url
