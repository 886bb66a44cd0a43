"""The list endpoint's rules, as the provider documents them: page sizes, cursors and filters.

Pure: it knows meter orders as the JSON objects the API serves, nothing of HTTP.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

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
            return _compare(self.operator, _moment(have), self._moments())
        if self.operator == "in":
            return have in self.value.split(",")
        return (have == self.value) == (self.operator == "eq")

    def check(self) -> None:
        """Raise :class:`BadRequest` for a value the operator cannot take."""
        if self.operator == "is_null" and self.value.lower() not in {"true", "false"}:
            raise BadRequest(f"filter[{self.field}][is_null]: expected true or false")
        if self.field in _DATE_FIELDS and self.operator != "is_null":
            self._moments()

    def _moments(self) -> list[datetime]:
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


def encode_cursor(position: int, first_id: str) -> str:
    """An opaque cursor: where the next page starts in the sorted orders, and who stands there."""
    raw = f"{position}:{first_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, order_ids: Sequence[str]) -> int:
    """The position a cursor from :func:`encode_cursor` points at, or :class:`BadRequest`."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        position_text, _, first_id = raw.partition(":")
        position = int(position_text)
    except ValueError:
        raise BadRequest("cursor: not a cursor this API returned") from None
    if not 0 <= position < len(order_ids) or order_ids[position] != first_id:
        raise BadRequest("cursor: not a cursor this API returned")
    return position
