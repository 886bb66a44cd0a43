"""The database: tables, migrations and the store, one repository per concern."""

from tracker.store.db import (
    connect,
    describe,
    describe_failure,
    export_rows,
    is_busy,
    listener_store,
    open_store,
    unreachable,
    upgrade,
)
from tracker.store.events import Alert, Stay
from tracker.store.fleet import Joined, Taken
from tracker.store.outbox import Attempt
from tracker.store.polls import PollOutcome
from tracker.store.reports import Board, History, Overview
from tracker.store.store import Store

__all__ = [
    "Alert",
    "Attempt",
    "Board",
    "History",
    "Joined",
    "Overview",
    "PollOutcome",
    "Stay",
    "Store",
    "Taken",
    "connect",
    "describe",
    "describe_failure",
    "export_rows",
    "is_busy",
    "listener_store",
    "open_store",
    "unreachable",
    "upgrade",
]
