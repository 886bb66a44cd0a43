"""The database: tables, migrations and the repository that speaks domain words."""

from tracker.store.db import connect, describe, is_busy, listener_store, open_store, upgrade
from tracker.store.repo import Attempt, History, Joined, Overview, PollOutcome, Store, Taken

__all__ = [
    "Attempt",
    "History",
    "Joined",
    "Overview",
    "PollOutcome",
    "Store",
    "Taken",
    "connect",
    "describe",
    "is_busy",
    "listener_store",
    "open_store",
    "upgrade",
]
