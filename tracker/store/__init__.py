"""The database: tables, migrations and the repository that speaks domain words."""

from tracker.store.db import connect, upgrade
from tracker.store.repo import PollOutcome, Store

__all__ = ["PollOutcome", "Store", "connect", "upgrade"]
