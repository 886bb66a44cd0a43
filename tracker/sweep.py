"""List sweeps: learn many due orders from list pages instead of one request per order.

The upstream's list endpoint answers up to 100 orders per request and filters by customer or
subscription (``filter[customer][in]=cus_a,cus_b,…``). Due orders whose customer is known
(from their last snapshot) are grouped by customer, up to a page's worth of customers per
request: one page then refreshes up to a hundred orders, whatever the size of the
organisation. The upstream ignores a filter it does not know, silently, so every item is
checked against the filter sent; a filter found ignored is not sent again, and the orders a
sweep did not show are polled by id.

Pure: standard library only, no I/O (the clock is passed in).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from tracker.model import Claim, MeterOrder

#: How due orders are learned (``[polling] sweep``).
Mode = Literal["auto", "list", "ids"]
#: Fields a sweep narrows its pages by, the narrowest first.
Field = Literal["customer", "subscription"]
FIELDS: tuple[Field, ...] = ("customer", "subscription")
#: Orders per page: the most the upstream answers with.
PAGE_SIZE = 100
#: Values in one ``in`` filter: a page's worth, and a query string of a few KB.
MAX_VALUES = 100
#: Weight of the newest sweep in the learned orders per value.
LEARNING = 0.2
#: Seconds a refused list endpoint, or an ignored filter, is left alone before it is tried again.
RETRY_AFTER = 3600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Batch:
    """Claimed orders learned together from the pages of one filter."""

    field: Field
    #: The filter's values: the claims' customers (or subscriptions), sorted, each once.
    values: tuple[str, ...]
    claims: tuple[Claim, ...]

    def filters(self) -> dict[str, str]:
        """The query parameters narrowing the pages to these orders' customers."""
        return {f"filter[{self.field}][in]": ",".join(self.values)}

    def admits(self, order: MeterOrder) -> bool:
        """Whether ``order`` matches the filter (else the upstream ignored it)."""
        return _value(order, self.field) in self.values


@dataclass(slots=True)
class SweepPlanner:
    """Chooses, for each set of due orders, list pages or requests by id, and learns.

    ``auto`` sweeps a group of orders when its pages are expected to cost fewer requests
    than polling its orders one by one; the expectation uses the orders per filter value
    that earlier pages returned (a customer may have orders that are not watched). ``list``
    sweeps every order whose customer is known; ``ids`` never sweeps.
    """

    mode: Mode = "auto"
    #: Orders a page returned per value asked for, learned from the pages.
    per_value: float = 1.0
    #: Fields the upstream was found to ignore, each with when to try it again.
    ignored: dict[str, float] = field(default_factory=dict)
    #: When the list endpoint may be asked again after it refused a list (a 4xx).
    refused_until: float = -math.inf
    clock: Callable[[], float] = time.monotonic

    @property
    def listing(self) -> bool:
        """Whether the list endpoint may be asked now."""
        return self.clock() >= self.refused_until

    def ignores(self, name: str) -> bool:
        """Whether a filter on ``name`` is not to be sent now (the upstream ignored it)."""
        return self.ignored.get(name, -math.inf) > self.clock()

    @property
    def sweeps(self) -> bool:
        """Whether due orders may be swept at all now."""
        return self.mode != "ids" and self.listing and self.field is not None

    @property
    def field(self) -> Field | None:
        """The field sweeps filter by now; ``None`` when the upstream ignores them all."""
        return next((name for name in FIELDS if not self.ignores(name)), None)

    def plan(self, claims: Iterable[Claim]) -> tuple[list[Batch], list[Claim]]:
        """Split ``claims`` into batches to sweep and claims to poll by id."""
        by_field = self.field
        if self.mode == "ids" or by_field is None:
            return [], list(claims)
        groups: dict[str, list[Claim]] = {}
        by_id: list[Claim] = []
        for claim in claims:
            value = getattr(claim, by_field)
            if value and "," not in value:  # a comma would split it in an ``in`` filter
                groups.setdefault(value, []).append(claim)
            else:
                by_id.append(claim)  # never seen: its customer is not known yet
        batches: list[Batch] = []
        values = sorted(groups)
        step = self.values_per_page()
        for start in range(0, len(values), step):
            chunk = values[start : start + step]
            chosen = tuple(claim for value in chunk for claim in groups[value])
            if self.mode == "list" or self.pages_for(len(chunk)) < len(chosen):
                batches.append(Batch(field=by_field, values=tuple(chunk), claims=chosen))
            else:
                by_id.extend(chosen)
        return batches, by_id

    def values_per_page(self) -> int:
        """Values one request asks for, so that its answer is expected to fit one page."""
        return max(1, min(MAX_VALUES, math.floor(PAGE_SIZE / max(self.per_value, 1.0))))

    def pages_for(self, values: int) -> int:
        """Pages a sweep of ``values`` is expected to take."""
        return max(1, math.ceil(values * self.per_value / PAGE_SIZE))

    def learn(self, *, values: int, items: int) -> None:
        """A finished sweep asked for ``values`` and the pages held ``items`` orders."""
        if values > 0:
            seen = max(items / values, 1.0)
            self.per_value += LEARNING * (seen - self.per_value)

    def unavailable(self) -> None:
        """The upstream refused the list endpoint itself: poll by id for :data:`RETRY_AFTER`."""
        self.refused_until = self.clock() + RETRY_AFTER

    def ignore(self, name: str) -> None:
        """The upstream answered a filter on ``name`` with orders that do not match it: do not
        send it for :data:`RETRY_AFTER` (an upstream may learn it, a glitch may pass)."""
        self.ignored[name] = self.clock() + RETRY_AFTER


def strays(batch: Batch, orders: Sequence[MeterOrder]) -> list[MeterOrder]:
    """The orders of a page that its filter should have kept out."""
    return [order for order in orders if not batch.admits(order)]


def _value(order: MeterOrder, name: Field) -> str:
    return order.customer if name == "customer" else order.subscription
