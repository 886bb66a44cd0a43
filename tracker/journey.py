"""One order's journey through the lifecycle: the steps passed, the current one, the detours
taken and the time spent in each, from its stays (``tracker.store.stays``).

The same definitions as the reports (``tracker.insight``): a stay runs from the transition into
a status to the transition out of it; the first status an order is seen in began before watching
did, so its length is unknown (never zero); the current stay runs to ``now``.

Pure: standard library only, no I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from tracker.lifecycle import MAIN_PATH

ZERO = timedelta(0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Visit:
    """One stay of an order in a status, as stored."""

    status: str
    #: When the transition into the status was detected; ``None`` before watching began.
    started_at: datetime | None
    #: When the tracker first saw the order in this status.
    seen_at: datetime
    #: When the transition out of it was detected; ``None`` while it lasts.
    ended_at: datetime | None


class Place(enum.StrEnum):
    """Where a main-path step stands in one order's journey."""

    #: The order was in this status and left it.
    PASSED = "passed"
    #: The order is in this status now.
    CURRENT = "current"
    #: Before the first status the tracker saw: passed, presumably, before watching began.
    BEFORE_WATCHING = "before_watching"
    #: Jumped over: the order moved past it without ever being seen in it.
    SKIPPED = "skipped"
    #: Not reached (yet).
    AHEAD = "ahead"


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One status of the journey and the time the order spent in it, all its visits together."""

    status: str
    place: Place
    #: How many times the order entered (or was first seen in) this status.
    visits: int
    #: The stays of known length added up (the current one up to ``now``).
    known: timedelta
    #: Whether one of its stays began before watching did: its length is unknown.
    unknown: bool

    @property
    def timed(self) -> bool:
        """Whether any time is known for this step (a visit of known start)."""
        return self.visits > (1 if self.unknown else 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Leg:
    """One visit in the order the order made them: the route."""

    status: str
    started_at: datetime | None
    ended_at: datetime | None
    #: ``None`` when the stay began before watching did.
    length: timedelta | None
    #: Whether the stay lasts still (its length runs to ``now``).
    running: bool
    #: Whether the status is off the main path (blocked, cancelled, pre-installed, unknown).
    detour: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Journey:
    """The main path step by step, the detours taken, and the route visit by visit."""

    main: tuple[Step, ...]
    #: Statuses off the main path the order was in, in the order it first entered them.
    detours: tuple[Step, ...]
    route: tuple[Leg, ...]
    #: The status the order is in now (its open stay), if any.
    current: str | None


def journey(visits: Sequence[Visit], now: datetime) -> Journey:
    """The journey of an order whose stays are ``visits`` (oldest first), as of ``now``."""
    route = tuple(_leg(visit, now) for visit in visits)
    current = route[-1].status if route and route[-1].running else None
    totals: dict[str, tuple[int, timedelta, bool]] = {}
    for leg in route:
        count, known, unknown = totals.get(leg.status, (0, ZERO, False))
        totals[leg.status] = (
            count + 1,
            known + (leg.length or ZERO),
            unknown or leg.length is None,
        )
    places = _places([leg.status for leg in route], current)
    main = tuple(
        _step(status.value, places[index], totals) for index, status in enumerate(MAIN_PATH)
    )
    detours = tuple(
        _step(status, Place.CURRENT if status == current else Place.PASSED, totals)
        for status in dict.fromkeys(leg.status for leg in route if leg.detour)
    )
    return Journey(main=main, detours=detours, route=route, current=current)


_INDEX = {status.value: index for index, status in enumerate(MAIN_PATH)}


def _leg(visit: Visit, now: datetime) -> Leg:
    end = visit.ended_at
    length = None if visit.started_at is None else (end or now) - visit.started_at
    return Leg(
        status=visit.status,
        started_at=visit.started_at,
        ended_at=end,
        length=length,
        running=end is None,
        detour=visit.status not in _INDEX,
    )


def _places(route: Sequence[str], current: str | None) -> list[Place]:
    """Each main-path step's place, given the statuses visited in order."""
    reached = [_INDEX[status] for status in route if status in _INDEX]
    first = reached[0] if reached else None
    furthest = max(reached, default=None)
    places = []
    for index, status in enumerate(MAIN_PATH):
        if status.value == current:
            places.append(Place.CURRENT)
        elif index in reached:
            places.append(Place.PASSED)
        elif first is not None and index < first:
            places.append(Place.BEFORE_WATCHING)
        elif furthest is not None and index < furthest:
            places.append(Place.SKIPPED)
        else:
            places.append(Place.AHEAD)
    return places


def _step(status: str, place: Place, totals: dict[str, tuple[int, timedelta, bool]]) -> Step:
    count, known, unknown = totals.get(status, (0, ZERO, False))
    return Step(
        status=status,
        place=place,
        visits=count,
        known=known,
        unknown=unknown or place is Place.BEFORE_WATCHING,
    )
