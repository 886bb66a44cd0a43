"""The database: tables, migrations and the repository that speaks domain words."""

from tracker.store.db import connect, describe, open_store, upgrade
from tracker.store.repo import Attempt, History, Joined, Overview, PollOutcome, Store

__all__ = [
    "Attempt",
    "History",
    "Joined",
    "Overview",
    "PollOutcome",
    "Store",
    "connect",
    "describe",
    "open_store",
    "upgrade",
]
