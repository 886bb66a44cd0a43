"""The list endpoint's rules, as the provider documents them: page sizes, cursors and filters.

Pure: it knows meter orders as the JSON objects the API serves, nothing of HTTP. The orders
come from :class:`Source` objects (the scripted orders, an organisation), merged newest first
by ``created_at`` (ties: id descending); each source answers from its own indexes, so a page
costs about the items it returns, whatever the size of the organisation.
"""

from __future__ import annotations

import base64
import bisect
import heapq
import math
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from tracker.errors import BadRequest

#: Fields the list endpoint filters on, by kind; ``product`` is documented, but meter orders
#: have none, so a filter on it is accepted and changes nothing.
_TEXT_FIELDS = frozenset({"status", "customer", "subscription"})
_DATE_FIELDS = frozenset({"created_at", "updated_at"})
_IGNORED_FIELDS = frozenset({"product"})
_TEXT_OPERATORS = frozenset({"eq", "ne", "in", "is_null"})
_DATE_OPERATORS = _TEXT_OPERATORS | {"gte", "lte"}
_FILTER_KEY = re.compile(r"filter\[([^\[\]]+)\]\[([^\[\]]+)\]")
#: The documented page sizes and the default one.
MIN_LIMIT, MAX_LIMIT, DEFAULT_LIMIT = 1, 100, 10
#: Where an order stands in the listing: its creation second (Unix) and its id.
Key = tuple[int, str]
#: Above every order's key: where a listing without a cursor starts.
TOP: Key = (2**63, "")
#: Above every order id (ids are ``prdo_`` and lower-case letters and digits).
_ABOVE_IDS = "~"


@dataclass(frozen=True, slots=True, kw_only=True)
class Filter:
    """One ``filter[FIELD][OP]=VALUE`` the simulator applies to the items it lists."""

    field: str
    operator: str
    value: str

    def matches(self, item: dict[str, str]) -> bool:
        """Whether ``item`` (a meter order as served) passes this filter."""
        have = item.get(self.field)
        if self.operator == "is_null":
            return (have is None) == (self.value.lower() == "true")
        if have is None:
            return self.operator == "ne"
        if self.field in _DATE_FIELDS:
            return _compare(self.operator, _moment(have), self.moments())
        if self.operator == "in":
            return have in self.value.split(",")
        return (have == self.value) == (self.operator == "eq")

    def check(self) -> None:
        """Raise :class:`BadRequest` for a value the operator cannot take."""
        if self.operator == "is_null" and self.value.lower() not in {"true", "false"}:
            raise BadRequest(f"filter[{self.field}][is_null]: expected true or false")
        if self.field in _DATE_FIELDS and self.operator != "is_null":
            self.moments()

    def moments(self) -> list[datetime]:
        """The filter's dates (several for ``in``), or :class:`BadRequest`."""
        values = self.value.split(",") if self.operator == "in" else [self.value]
        try:
            return [_moment(value) for value in values]
        except ValueError:
            raise BadRequest(
                f"filter[{self.field}][{self.operator}]: {self.value[:40]!r} is not RFC 3339"
            ) from None


def _compare(operator: str, have: datetime, wanted: list[datetime]) -> bool:
    if operator == "gte":
        return have >= wanted[0]
    if operator == "lte":
        return have <= wanted[0]
    if operator == "in":
        return have in wanted
    return (have == wanted[0]) == (operator == "eq")


def _moment(text: str) -> datetime:
    """An RFC 3339 timestamp as an aware datetime (``ValueError`` if it is not one)."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError("no UTC offset")
    return moment


def parse_filters(params: Sequence[tuple[str, str]], ignored: Collection[str] = ()) -> list[Filter]:
    """The filters of a list request that this API knows, as the provider reads them.

    An unknown field or operator, a filter on ``product`` and one on an ``ignored`` field are
    left out without a word (the real API ignores what it does not know); a known filter with
    a value it cannot take is a :class:`BadRequest`.
    """
    filters = []
    for key, value in params:
        found = _FILTER_KEY.fullmatch(key)
        if found is None:
            continue
        name, operator = found[1], found[2]
        known = (name in _TEXT_FIELDS and operator in _TEXT_OPERATORS) or (
            name in _DATE_FIELDS and operator in _DATE_OPERATORS
        )
        if not known or name in ignored or name in _IGNORED_FIELDS:
            continue
        wanted = Filter(field=name, operator=operator, value=value)
        wanted.check()
        filters.append(wanted)
    return filters


def parse_limit(text: str | None) -> int:
    """The page size asked for: :data:`DEFAULT_LIMIT` if absent, else an integer 1..100."""
    if text is None:
        return DEFAULT_LIMIT
    if not text.isdigit() or not MIN_LIMIT <= int(text) <= MAX_LIMIT:
        raise BadRequest(f"limit: expected an integer from {MIN_LIMIT} to {MAX_LIMIT}")
    return int(text)


def encode_cursor(key: Key) -> str:
    """An opaque cursor: the key of the order the next page starts with.

    A key, not a position, so orders created during a sweep (at the front) move nothing.
    """
    raw = f"{key[0]}:{key[1]}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, created: Callable[[str], int | None]) -> Key:
    """The key a cursor from :func:`encode_cursor` names, or :class:`BadRequest`.

    ``created`` gives an order's creation second (None for an unknown order): the cursor
    must name an order that exists, with its creation second.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_text, _, order = raw.partition(":")
        second = int(created_text)
    except ValueError:
        raise BadRequest("cursor: not a cursor this API returned") from None
    if created(order) != second:
        raise BadRequest("cursor: not a cursor this API returned")
    return second, order


class Source(Protocol):
    """Orders the list endpoint serves, with the indexes that find them cheaply."""

    def created(self, order: str) -> int | None:
        """The creation second of ``order``, or None if it is not one of this source's."""

    def body(self, order: str) -> dict[str, str]:
        """The order as the API shows it now."""

    def keys(self, below: Key, since: int) -> Iterator[Key]:
        """Every order's key from ``below`` (inclusive) down to creation second ``since``."""

    def updated_since(self, moment: int, below: Key, since: int) -> Iterator[Key]:
        """Like :meth:`keys`, but only (at least) the orders updated at or after ``moment``."""


def descending(keys: Sequence[Key], below: Key, since: int) -> Iterator[Key]:
    """From ``keys`` (sorted, oldest first), those from ``below`` down to creation ``since``."""
    for position in range(bisect.bisect_right(keys, below) - 1, -1, -1):
        key = keys[position]
        if key[0] < since:
            return
        yield key


def find_created(sources: Iterable[Source], order: str) -> int | None:
    """The creation second of ``order`` in whichever source has it, or None."""
    for source in sources:
        created = source.created(order)
        if created is not None:
            return created
    return None


def list_page(
    sources: Sequence[Source], filters: Sequence[Filter], limit: int, start: Key = TOP
) -> tuple[list[dict[str, str]], Key | None]:
    """Up to ``limit`` matching orders from ``start`` on, and the key of the next match.

    The scan stops at the first match past the page, so a whole sweep reads each candidate
    once however selective the filters are; which orders are candidates depends on the
    filters, as a database's index would: a customer or subscription (``eq``, ``in``), else
    ``updated_at`` (``gte``, ``eq``), else every order, within the ``created_at`` bounds.
    """
    below, since = _bounds(filters, start)
    streams = [_tagged(source, _candidates(source, filters, below, since)) for source in sources]
    items: list[dict[str, str]] = []
    for key, source in heapq.merge(*streams, key=_key_of, reverse=True):
        body = source.body(key[1])
        if all(wanted.matches(body) for wanted in filters):
            if len(items) == limit:
                return items, key
            items.append(body)
    return items, None


def _key_of(pair: tuple[Key, Source]) -> Key:
    return pair[0]


def _tagged(source: Source, keys: Iterator[Key]) -> Iterator[tuple[Key, Source]]:
    for key in keys:
        yield key, source


def _bounds(filters: Sequence[Filter], start: Key) -> tuple[Key, int]:
    """The highest key and the lowest creation second that ``created_at`` filters allow."""
    below, since = start, -(2**63)
    for wanted in filters:
        if wanted.field == "created_at" and wanted.operator in {"gte", "lte", "eq"}:
            second = math.floor(wanted.moments()[0].timestamp())
            if wanted.operator != "lte":
                since = max(since, second)
            if wanted.operator != "gte":
                below = min(below, (second, _ABOVE_IDS))
    return below, since


def _candidates(source: Source, filters: Sequence[Filter], below: Key, since: int) -> Iterator[Key]:
    owned = _owned(filters)
    if owned is not None:
        found = [(source.created(order), order) for order in owned]
        keys = ((created, order) for created, order in found if created is not None)
        return iter(sorted((key for key in keys if since <= key[0] and key <= below), reverse=True))
    for wanted in filters:
        if wanted.field == "updated_at" and wanted.operator in {"gte", "eq"}:
            moment = math.floor(wanted.moments()[0].timestamp())
            return source.updated_since(moment, below, since)
    return source.keys(below, since)


def _owned(filters: Sequence[Filter]) -> set[str] | None:
    """The orders a customer or subscription filter (``eq``, ``in``) allows, if there is one
    (each order has its own customer and subscription, derived from its id)."""
    for wanted in filters:
        prefix = {"customer": "cus_", "subscription": "sub_"}.get(wanted.field)
        if prefix is not None and wanted.operator in {"eq", "in"}:
            values = wanted.value.split(",") if wanted.operator == "in" else [wanted.value]
            return {
                "prdo_" + value.removeprefix(prefix) for value in values if value.startswith(prefix)
            }
    return None
