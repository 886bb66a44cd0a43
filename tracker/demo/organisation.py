"""The simulated upstream's orders: scripted ones, and a whole organisation of up to a million.

A :class:`Script` is one order's lifecycle on the clock; :class:`ScriptedOrders` lists them.
In an :class:`Organisation`, each order's id, provider, first status and creation time are
derived from its index, so only the ids (and an index of them) take memory per order; what
changes (a status, an ``updated_at``) is stored for the changed orders only. Status changes
and new orders happen at deterministic moments on the simulator's clock, worked out lazily
when somebody looks, so a test that holds the clock decides what has happened. Pure: no I/O.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from tracker.demo.listing import Key, descending
from tracker.errors import ConfigError
from tracker.lifecycle import FINAL, MAIN_PATH, Status

_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
#: Byte → id character, as ``_ALPHABET[b % 36]``: the id is the digest translated by it.
_ID_TABLE = bytes(ord(_ALPHABET[b % len(_ALPHABET)]) for b in range(256))
_DAY = 86_400
_HOUR = 3_600
#: Orders were created over the ~six months before the day the simulator starts.
_CREATION_SPAN = 180 * _DAY
PROVIDERS = ("energy-metering", "metrify", "inexogy")
#: The statuses an organisation's orders start in: every one that is not final.
_OPEN = tuple(status.value for status in Status if status not in FINAL)
#: One step along the main path; a blocked order goes back to where such blocks happen.
_NEXT = {
    **{before.value: after.value for before, after in itertools.pairwise(MAIN_PATH)},
    Status.BLOCKED.value: Status.ORDERED.value,
    Status.BLOCKED_WIM.value: Status.INSTALLATION_SCHEDULED.value,
}
#: How often a scheduled change draws another order when the drawn one is final.
_DRAWS = 16


def order_id(seed: str) -> str:
    """A stable, valid order id derived from ``seed``."""
    digest = hashlib.sha256(seed.encode()).digest()
    return "prdo_" + digest[:24].translate(_ID_TABLE).decode()


class Change(NamedTuple):
    """One status change: which order, its new status, and when (two clocks).

    A tuple, so ``for order, status, monotonic, wall in simulator.changes`` reads it too.
    """

    order_id: str
    status: str
    #: The simulator's clock (``time.monotonic`` unless given another) at the change.
    monotonic: float
    #: Wall-clock seconds (Unix time) at the change.
    wall: float


def next_status(status: str) -> str | None:
    """The status one step along the main path from ``status`` (None for a final one)."""
    return _NEXT.get(status)


def creation_times(order_ids: Iterable[str], anchor: datetime) -> dict[str, datetime]:
    """For each order, a distinct creation second over the months before ``anchor``.

    Each is derived from the order's id; two ids drawing the same second are moved apart,
    the larger id one second earlier, so the result depends on the set of ids only.
    """
    taken: set[int] = set()
    created: dict[str, datetime] = {}
    for order in sorted(order_ids):
        digest = hashlib.sha256(order.encode()).digest()
        back = _DAY + int.from_bytes(digest[:8], "big") % _CREATION_SPAN
        while back in taken:
            back += 1
        taken.add(back)
        created[order] = anchor - timedelta(seconds=back)
    return created


def midnight(wall: float) -> datetime:
    """The UTC midnight that begins the day of ``wall`` (Unix seconds)."""
    moment = datetime.fromtimestamp(wall, UTC)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def timestamp(seconds: float) -> str:
    """Unix seconds as the API writes a timestamp: RFC 3339, UTC, whole seconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(math.floor(seconds)))


@dataclass(frozen=True, slots=True, kw_only=True)
class Script:
    """One order's lifecycle: each status with how long it lasts (the last one lasts forever)."""

    order_id: str
    provider: str
    steps: tuple[tuple[str, float], ...]

    def at(self, elapsed: float) -> tuple[int, float]:
        """The step index at ``elapsed`` seconds and when that step began."""
        began = 0.0
        for index, (_status, dwell) in enumerate(self.steps[:-1]):
            if elapsed < began + dwell:
                return index, began
            began += dwell
        return len(self.steps) - 1, began

    def changes(self) -> list[tuple[float, str]]:
        """Each moment (seconds after the start) the status changes, with the new status."""
        found = []
        began = 0.0
        for (before, dwell), (after, _next) in itertools.pairwise(self.steps):
            began += dwell
            if after != before:
                found.append((began, after))
        return found


class ScriptedOrders:
    """The scripted orders as a source of the list endpoint (see :class:`listing.Source`).

    ``elapsed`` is the moment (seconds after the start) its answers describe. An order's
    ``updated_at`` is when its current step began, or the start with ``stale_updated_at``.
    """

    def __init__(self, scripts: Iterable[Script], wall_started: float, *, stale: bool) -> None:
        self.scripts = {script.order_id: script for script in scripts}
        self.elapsed = 0.0
        self._wall_started = wall_started
        self._stale = stale
        created = creation_times(self.scripts, midnight(wall_started))
        self._created = {order: int(moment.timestamp()) for order, moment in created.items()}
        self._keys = sorted((second, order) for order, second in self._created.items())
        #: Every status change (seconds after the start), for ``updated_at`` filters.
        self._moments = sorted(
            (moment, order) for order in self.scripts for moment, _ in self.scripts[order].changes()
        )

    def created(self, order: str) -> int | None:
        """The creation second of ``order``, or None if it is not scripted."""
        return self._created.get(order)

    def body(self, order: str) -> dict[str, str]:
        """The meter order as the API shows it at :attr:`elapsed`."""
        script = self.scripts[order]
        index, began = script.at(self.elapsed)
        return {
            "object": "meter_order",
            "id": order,
            "subscription": "sub_" + order[5:],
            "customer": "cus_" + order[5:],
            "provider": script.provider,
            "status": script.steps[index][0],
            "created_at": timestamp(self._created[order]),
            "updated_at": timestamp(self._wall_started + (0.0 if self._stale else began)),
        }

    def keys(self, below: Key, since: int) -> Iterator[Key]:
        """Every order's key from ``below`` (inclusive) down to creation second ``since``."""
        return descending(self._keys, below, since)

    def updated_since(self, moment: int, below: Key, since: int) -> Iterator[Key]:
        """The keys from ``below`` down of the orders updated at or after ``moment``."""
        if moment <= self._wall_started:
            return self.keys(below, since)
        if self._stale:
            return iter(())
        first = bisect.bisect_left(self._moments, (moment - self._wall_started, ""))
        changed = {order for at, order in self._moments[first:] if at <= self.elapsed}
        keys = ((self._created[order], order) for order in changed)
        return iter(sorted((k for k in keys if since <= k[0] and k <= below), reverse=True))


class Organisation:
    """``size`` orders of one organisation, listed beside the simulator's scripted orders.

    Order ``i`` has id ``order_id(f"{seed}-{i}")``, provider ``PROVIDERS[i % 3]``, a status
    among the non-final ones, and a creation second over the months before the start, later
    for a larger ``i``; its ``updated_at`` is its ``created_at`` until it changes. Each hour,
    ``change_share_per_hour * size`` status changes happen (change ``k`` at ``k / rate``
    seconds after the start, to an order drawn by a hash of ``k``; a final order is passed
    over), each one step along the main path; each moves ``updated_at`` to its moment unless
    ``stale_updated_at``. ``new_per_hour`` new orders appear per hour (new order ``j`` at
    ``j / rate`` seconds, in ``waiting``). :meth:`create` and :meth:`change` do the same now.
    """

    def __init__(
        self,
        size: int,
        *,
        change_share_per_hour: float = 0.001,
        new_per_hour: float = 0.0,
        stale_updated_at: bool = False,
        seed: str = "org",
    ) -> None:
        if size < 0 or change_share_per_hour < 0 or new_per_hour < 0:
            raise ConfigError(
                "organisation: size, change share and new orders per hour must not be negative"
            )
        self._size = size
        self._seed = seed
        self._stale = stale_updated_at
        self._change_every = _every(size * change_share_per_hour)
        self._new_every = _every(new_per_hour)
        self._ids = [order_id(f"{seed}-{i}") for i in range(size)]
        self._index = {order: i for i, order in enumerate(self._ids)}
        #: Statuses and ``updated_at`` (wall seconds) of the orders that changed.
        self._status: dict[int, str] = {}
        self._updated: dict[int, float] = {}
        #: Creation seconds of the orders created after the start (index ``size`` on).
        self._fresh_created: list[int] = []
        #: Their keys, oldest first: the front of the listing.
        self._fresh: list[Key] = []
        self._log: list[Change] = []
        self._creations: list[Change] = []
        self._scheduled_changes = 0
        self._scheduled_orders = 0
        self._clock: Callable[[], float] = time.monotonic
        self._started = 0.0
        self._wall_started = 0.0
        self._elapsed = 0.0
        self._oldest = 0
        self._span = max(_CREATION_SPAN, size)

    def attach(self, clock: Callable[[], float], started: float, wall_started: float) -> None:
        """Run on the simulator's clock, which started at ``started`` (``wall_started``)."""
        self._clock = clock
        self._started = started
        self._wall_started = wall_started
        self._oldest = int(midnight(wall_started).timestamp()) - _DAY - self._span

    @property
    def size(self) -> int:
        """How many orders the organisation has now (the new ones included)."""
        return len(self._ids)

    def order_ids(self, limit: int | None = None) -> list[str]:
        """The ids of the orders, the steady ones first, then the new ones (the first ``limit``)."""
        return self._ids[:limit]

    @property
    def changes(self) -> list[Change]:
        """Every status change up to now, oldest first."""
        self.advance(self._clock() - self._started)
        return list(self._log)

    @property
    def creations(self) -> list[Change]:
        """Every order created since the start (with its first status), oldest first."""
        self.advance(self._clock() - self._started)
        return list(self._creations)

    def create(self, count: int = 1) -> list[str]:
        """``count`` new orders now, in ``waiting``; their ids."""
        self.advance(self._clock() - self._started)
        return [self._new_order(self._elapsed) for _ in range(count)]

    def change(self, order: str, status: str | None = None) -> Change:
        """Move ``order`` now to ``status``, or else one step along the main path."""
        self.advance(self._clock() - self._started)
        index = self._index.get(order)
        if index is None:
            raise KeyError(f"{order} is not an order of this organisation")
        status = status or next_status(self._status_at(index))
        if status is None:
            raise ValueError(f"{order} is {self._status_at(index)}, final: give the status")
        return self._apply(index, status, self._elapsed)

    def status_of(self, order: str) -> str | None:
        """The status ``order`` has now, or None if it is not one of the organisation's."""
        index = self._index.get(order)
        if index is None:
            return None
        self.advance(self._clock() - self._started)
        return self._status_at(index)

    def advance(self, elapsed: float) -> None:
        """Let every scheduled change and new order up to ``elapsed`` seconds happen."""
        while True:
            change_at = (self._scheduled_changes + 1) * self._change_every
            create_at = (self._scheduled_orders + 1) * self._new_every
            if min(change_at, create_at) > elapsed:
                break
            if create_at <= change_at:
                self._scheduled_orders += 1
                self._new_order(create_at)
            else:
                self._scheduled_changes += 1
                self._scheduled_change(self._scheduled_changes, change_at)
        self._elapsed = max(self._elapsed, elapsed)

    # The organisation as a source of the list endpoint (see tracker.demo.listing.Source).

    def created(self, order: str) -> int | None:
        """The creation second of ``order``, or None if it is not one of the organisation's."""
        index = self._index.get(order)
        return None if index is None else self._created(index)

    def body(self, order: str) -> dict[str, str]:
        """The order as the API shows it now."""
        index = self._index[order]
        created = self._created(index)
        return {
            "object": "meter_order",
            "id": order,
            "subscription": "sub_" + order[5:],
            "customer": "cus_" + order[5:],
            "provider": PROVIDERS[index % len(PROVIDERS)],
            "status": self._status_at(index),
            "created_at": timestamp(created),
            "updated_at": timestamp(self._updated.get(index, created)),
        }

    def keys(self, below: Key, since: int) -> Iterator[Key]:
        """Every order's key from ``below`` (inclusive) down to creation second ``since``."""
        yield from descending(self._fresh, below, since)
        index = bisect.bisect_right(range(self._size), below[0], key=self._created) - 1
        if index >= 0 and self._created(index) == below[0] and self._ids[index] > below[1]:
            index -= 1
        while index >= 0 and (created := self._created(index)) >= since:
            yield created, self._ids[index]
            index -= 1

    def updated_since(self, moment: int, below: Key, since: int) -> Iterator[Key]:
        """The keys from ``below`` down of every order updated at or after ``moment`` (Unix
        seconds), and a few more: created then or later, or changed then or later."""
        # updated_at is never before created_at: every order created since ``moment`` counts.
        yield from self.keys(below, max(since, moment))
        if self._stale:
            return
        first = bisect.bisect_left(self._log, float(moment), key=lambda change: change.wall)
        changed = {self._index[change.order_id] for change in self._log[first:]}
        older = ((self._created(i), self._ids[i]) for i in changed)
        yield from sorted(
            (key for key in older if since <= key[0] < moment and key <= below), reverse=True
        )

    def _created(self, index: int) -> int:
        if index < self._size:
            return self._oldest + index * self._span // self._size
        return self._fresh_created[index - self._size]

    def _status_at(self, index: int) -> str:
        found = self._status.get(index)
        if found is not None:
            return found
        return _OPEN[index % len(_OPEN)] if index < self._size else Status.WAITING.value

    def _new_order(self, elapsed: float) -> str:
        index = len(self._ids)
        order = order_id(f"{self._seed}-{index}")
        created = math.floor(self._wall_started + elapsed)
        self._ids.append(order)
        self._index[order] = index
        self._fresh_created.append(created)
        bisect.insort(self._fresh, (created, order))
        self._creations.append(self._stamp(order, Status.WAITING.value, elapsed))
        return order

    def _scheduled_change(self, k: int, elapsed: float) -> None:
        """Change ``k``: one step for an order drawn by a hash of ``k`` (redrawn if final)."""
        for draw in range(_DRAWS):
            digest = hashlib.blake2b(f"{self._seed}:{k}:{draw}".encode(), digest_size=8)
            index = int.from_bytes(digest.digest(), "big") % len(self._ids)
            status = next_status(self._status_at(index))
            if status is not None:
                self._apply(index, status, elapsed)
                return

    def _apply(self, index: int, status: str, elapsed: float) -> Change:
        change = self._stamp(self._ids[index], status, elapsed)
        self._status[index] = status
        if not self._stale:
            self._updated[index] = change.wall
        self._log.append(change)
        return change

    def _stamp(self, order: str, status: str, elapsed: float) -> Change:
        return Change(order, status, self._started + elapsed, self._wall_started + elapsed)


def _every(per_hour: float) -> float:
    """Seconds between two events at ``per_hour`` events an hour (infinite for none)."""
    return _HOUR / per_hour if per_hour > 0 else math.inf
