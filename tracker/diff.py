"""Compare an upstream answer with what was stored last: a new snapshot? a transition?

Pure: standard library only, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from tracker.lifecycle import classify
from tracker.model import MeterOrder, StatusChange


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """What one successful poll means for the store."""

    #: The parsed order differs from the last snapshot (or there is none): store a snapshot.
    store_snapshot: bool
    #: The status differs from the last snapshot's: store a transition with the snapshot.
    change: StatusChange | None


UNCHANGED = Decision(store_snapshot=False, change=None)


def decide(last_status: str | None, last_fingerprint: int | None, order: MeterOrder) -> Decision:
    """Decide from the last snapshot's status and fingerprint; a first snapshot is no transition."""
    if last_fingerprint == order.fingerprint:
        return UNCHANGED
    if last_status is None or last_status == order.status:
        return Decision(store_snapshot=True, change=None)
    change = StatusChange(
        from_status=last_status,
        to_status=order.status,
        classification=classify(last_status, order.status),
    )
    return Decision(store_snapshot=True, change=change)
