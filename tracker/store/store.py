"""The store: one engine, and a repository per concern speaking domain words over it."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from sqlalchemy import literal, select

from tracker.store.events import Events
from tracker.store.fleet import Fleet
from tracker.store.hints import Hints
from tracker.store.logins import Logins
from tracker.store.orders import Orders
from tracker.store.outbox import Outbox
from tracker.store.polls import Polls
from tracker.store.reports import Reports
from tracker.store.sql import Owner, where
from tracker.store.stays import Stays
from tracker.store.sweeps import Sweeps
from tracker.store.tally import Tally

if TYPE_CHECKING:
    from tracker.store.sql import Conn, Database


class Store:
    """Every read and write the tracker makes, over one async engine, by concern:

    ``orders`` (watching), ``polls`` (claims and outcomes), ``outbox`` (deliveries),
    ``events`` (alerts, digests, stuck stays), ``hints`` (push hints), ``fleet`` (daemons),
    ``reports`` (read models), ``logins`` (the pages' sessions), ``stays`` (durations),
    ``sweeps`` (the organisation's sweeps) and ``tally`` (active orders per status).
    """

    def __init__(self, engine: Database) -> None:
        self._engine = engine
        self._owner = Owner("own_" + base64.b32encode(os.urandom(10)).decode().lower())
        #: Which orders are watched (``tracker.store.orders``).
        self.orders = Orders(engine, self._owner)
        #: Claims on due orders and the polls' outcomes (``tracker.store.polls``).
        self.polls = Polls(engine, self._owner)
        #: The deliveries of events to sinks (``tracker.store.outbox``).
        self.outbox = Outbox(engine, self._owner)
        #: Alerts, digests and stuck stays (``tracker.store.events``).
        self.events = Events(engine, self._owner)
        #: The provider's push hints (``tracker.store.hints``).
        self.hints = Hints(engine, self._owner)
        #: The daemons on this database (``tracker.store.fleet``).
        self.fleet = Fleet(engine, self._owner)
        #: What the CLI, pages, API, export and digests read (``tracker.store.reports``).
        self.reports = Reports(engine, self._owner)
        #: The support pages' logins (``tracker.store.logins``).
        self.logins = Logins(engine)
        #: Stays in each status: the reports' durations (``tracker.store.stays``).
        self.stays = Stays(engine, self._owner)
        #: The organisation's sweeps: their state, orders found by rule (``tracker.store.sweeps``).
        self.sweeps = Sweeps(engine, self._owner)
        #: The active orders per status, kept by the database (``tracker.store.tally``).
        self.tally = Tally(engine, self._owner)

    @property
    def owner(self) -> str:
        """Whose claims this store takes: every claim carries it, and only a claim that still
        does is renewed, released or recorded (``tracker.store.sql.Owner``)."""
        return self._owner.name

    @owner.setter
    def owner(self, name: str) -> None:
        # A daemon takes its own id as owner, so that a takeover releases its claims by it.
        self._owner.name = name

    @property
    def where(self) -> str:
        """Where the database is, for messages: never with its password."""
        return where(self._engine.url)

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[Conn]:
        """A connection of its own for one read, given back at the block's end (each chunk of
        ``GET /api/v1/transitions`` takes one)."""
        async with self._engine.connect() as conn:
            yield conn

    async def ping(self) -> None:
        """Ask the database the most trivial question; raises when it does not answer."""
        async with self._engine.connect() as conn:
            await conn.execute(select(literal(1)))

    async def close(self) -> None:
        """Release the engine's connections."""
        await self._engine.dispose()
