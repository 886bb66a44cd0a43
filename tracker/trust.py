"""Whether change sweeps can be trusted: the state the organisation's sweeps keep, and its rules.

A change sweep (``filter[updated_at][gte]``) shows only the orders whose ``updated_at`` moved.
The upstream documents that it may not move when only the status changes, and it ignores a
filter it does not honour, silently. So change sweeps start untrusted, and every order is
polled at its per-status interval (full passes). A pass is a span in which every active order
was polled at least once; after ``trust_after`` passes in a row that found nothing the change
sweeps missed, they are trusted, and full passes slow down to ``[polling] reconcile``. A change
they should have shown, found any other way, or an ignored filter, makes them untrusted again,
and trust is tried again after :data:`RETRY_TRUST`.

Pure: standard library only, no I/O (times are passed in).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

#: What change sweeps ask for before their cursor: an allowance for the upstream's clock and
#: for changes that commit a moment after the time they carry. Orders seen twice are unchanged.
OVERLAP = timedelta(minutes=2)
#: After change sweeps were found unreliable, passes are counted again after this long.
RETRY_TRUST = timedelta(days=1)
#: Orders remembered as seen by change sweeps (with what they showed), the newest kept.
SEEN_KEPT = 100_000

Mode = Literal["trusted", "untrusted", "off"]


@dataclass(slots=True, kw_only=True)
class SweepState:
    """What the organisation's sweeps keep between runs (one row in the database, as JSON)."""

    #: The newest ``updated_at`` change sweeps have shown (the upstream's clock); ``None``
    #: until the first full read of the list sets it.
    changes_cursor: datetime | None = None
    #: The newest ``created_at`` seen in the list: creation sweeps ask from there.
    created_cursor: datetime | None = None
    #: When the last change sweep that read all its pages began (this process's clock).
    swept_at: datetime | None = None
    #: While the first read of the whole list goes on: the cursor of its next page, when it
    #: began, and the newest ``created_at`` it has seen.
    reading: str | None = None
    read_started: datetime | None = None
    newest_created: datetime | None = None
    trusted: bool = False
    reason: str = "not verified yet"
    #: When the current pass began; ``None`` while passes are not counted.
    pass_started: datetime | None = None
    #: Passes in a row that found nothing the change sweeps missed.
    clean_passes: int = 0
    #: Passes are not counted before this (a day after trust was lost).
    retry_at: datetime | None = None

    def dumps(self) -> str:
        """The state as stored."""
        return json.dumps(
            {
                name: value.isoformat() if isinstance(value, datetime) else value
                for name, value in asdict(self).items()
            }
        )

    @classmethod
    def loads(cls, text: str | None) -> SweepState:
        """The stored state; a fresh one when nothing is stored yet."""
        if not text:
            return cls()
        raw: dict[str, Any] = json.loads(text)
        dates = {
            "changes_cursor",
            "created_cursor",
            "swept_at",
            "read_started",
            "newest_created",
            "pass_started",
            "retry_at",
        }
        fields: dict[str, Any] = {}
        for name, value in raw.items():
            if name in cls.__dataclass_fields__:
                fields[name] = datetime.fromisoformat(value) if name in dates and value else value
        return cls(**fields)


def sweep_mode(
    *, rules: bool, changes_every: timedelta, state: SweepState | None
) -> tuple[Mode, str | None]:
    """What ``tracker status`` says of change sweeps: the mode, and why."""
    if not rules:
        return "off", "no [watch] rule (all, customers, subscriptions or products)"
    if changes_every <= timedelta(0):
        return "off", "[polling] changes_every is 0"
    state = state or SweepState()
    return ("trusted" if state.trusted else "untrusted"), state.reason


@dataclass(frozen=True, slots=True, kw_only=True)
class Missed:
    """A change found another way that change sweeps should have shown."""

    order_id: str
    #: The order's ``updated_at`` as that change showed it.
    updated_at: datetime
    #: Up to when change sweeps had covered the list.
    covered: datetime

    @property
    def reason(self) -> str:
        """Why change sweeps are untrusted now, in a sentence."""
        return (
            f"a change of {self.order_id} (updated_at {self.updated_at.isoformat()}) was not in "
            f"the change sweeps, which had covered up to {self.covered.isoformat()}"
        )


@dataclass(slots=True)
class Trust:
    """The rules over :class:`SweepState`: what a sweep, a pass or a change found means."""

    state: SweepState
    #: Passes in a row without a missed change that earn trust.
    trust_after: int = 2
    #: Orders change sweeps showed, with the fingerprint of what they showed (newest last).
    seen: OrderedDict[str, int] = field(default_factory=OrderedDict)

    @property
    def mode(self) -> Mode:
        """``trusted`` or ``untrusted``."""
        return "trusted" if self.state.trusted else "untrusted"

    def covered(self) -> datetime | None:
        """Up to when change sweeps have shown every change, as far as this process knows."""
        state = self.state
        if state.changes_cursor is None or state.swept_at is None:
            return None
        return max(state.changes_cursor, state.swept_at - OVERLAP)

    def saw(self, order_id: str, fingerprint: int) -> None:
        """A change sweep showed ``order_id`` in the state of ``fingerprint``."""
        self.seen[order_id] = fingerprint
        self.seen.move_to_end(order_id)
        while len(self.seen) > SEEN_KEPT:
            self.seen.popitem(last=False)

    def swept(self, *, started: datetime, newest: datetime | None) -> None:
        """A change sweep that began at ``started`` read all its pages; the newest
        ``updated_at`` they held was ``newest``."""
        state = self.state
        if newest is not None and (state.changes_cursor is None or newest > state.changes_cursor):
            state.changes_cursor = newest
        state.swept_at = started

    def judge(self, *, order_id: str, updated_at: datetime, fingerprint: int) -> Missed | None:
        """A change of ``order_id`` was stored by a poll, a full pass or a hint: the miss, if
        change sweeps should have shown it (they had covered its ``updated_at``, and did not
        show the order as it is now)."""
        covered = self.covered()
        if covered is None or updated_at >= covered or self.seen.get(order_id) == fingerprint:
            return None
        return Missed(order_id=order_id, updated_at=updated_at, covered=covered)

    def distrust(self, reason: str, *, now: datetime) -> bool:
        """Change sweeps are unreliable; whether they were trusted (or passes were counted)
        until now: then passes are counted again :data:`RETRY_TRUST` later."""
        state = self.state
        was = state.trusted or state.retry_at is None or state.retry_at <= now
        state.trusted = False
        state.reason = reason
        state.clean_passes = 0
        state.pass_started = None
        if was:  # a miss while passes wait to be counted again does not put them off
            state.retry_at = now + RETRY_TRUST
        return was

    def start_pass(self, now: datetime) -> bool:
        """Begin counting a pass now, if passes are counted; whether one began."""
        state = self.state
        if state.trusted or state.pass_started is not None:
            return False
        if state.retry_at is not None and now < state.retry_at:
            return False
        state.pass_started = now
        return True

    def pass_ended(self, now: datetime) -> bool:
        """Every active order was polled since the pass began, and nothing was missed: count
        it; whether change sweeps are trusted by it."""
        state = self.state
        state.clean_passes += 1
        state.pass_started = now
        if state.clean_passes < self.trust_after:
            state.reason = (
                f"{state.clean_passes} of {self.trust_after} full passes found nothing missed"
            )
            return False
        state.trusted = True
        state.pass_started = None
        state.reason = (
            f"{state.clean_passes} full passes in a row found nothing the change sweeps missed"
        )
        return True
