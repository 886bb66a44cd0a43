"""The JSON API under ``/api/v1``: thin like the CLI (parse, call the store, serialise).

The objects are the ones the CLI's ``--json`` prints (:mod:`tracker.views`), so the two never
disagree. Every error is the contract's ``{"error": {"code", "message"}}`` (raised as Starlette's
``HTTPException`` and rendered by the app's handler).
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import structlog
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from tracker import retries
from tracker.clock import utc_now
from tracker.errors import ConfigError, InvalidOrderId
from tracker.export import FORMATS, ExportRequest, parse_moment, streamed
from tracker.lifecycle import Status
from tracker.model import DeliveryState, validate_order_id
from tracker.store import Store
from tracker.views import StuckOrder, delivery_dict, history_json, stuck_dict, watched_dict
from tracker.web.auth import Users, authenticate
from tracker.web.bodies import bounded_body, parse_json
from tracker.web.openapi import document

log = structlog.get_logger("tracker.web")

PREFIX = "/api/v1"
#: Bytes a request body may hold: a list of a few thousand order ids fits many times over,
#: and nothing a client sends can hold more of the server's memory than this.
MAX_BODY = 1024 * 1024
#: Exports one user may stream at once; more are answered 429.
MAX_EXPORTS = 2
#: Order ids one ``POST /orders`` may watch: one transaction, a bounded write.
MAX_IDS = 10_000
#: Page sizes: the default, and the cap a larger ``limit`` is cut to (a page stays one query
#: of bounded size however a client asks).
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
#: Digits a delivery id in a cursor may have: any id the database holds (a 64-bit integer).
MAX_ID_DIGITS = 18
#: Watched order states, as :func:`tracker.views.state_of` names them.
STATES = ("active", "retired", "removed")
#: What ``q`` may hold: the characters of the ids it matches (an order id's prefix, a whole
#: ``cus_…`` or ``sub_…``), at most as many as their columns hold; anything else is refused
#: before it reaches a query.
SEARCH_PATTERN = re.compile(r"[a-z0-9_]{1,80}")
#: An event id (``evt_…`` for transitions; other events use the same alphabet).
EVENT_ID = re.compile(r"[A-Za-z0-9_.:-]{1,40}")
#: A sink name as a filter: the characters sink names are made of.
SINK = re.compile(r"[A-Za-z0-9_.-]{1,64}")

Sinks = Callable[[], Collection[str]]
#: ``[alerts.stuck]``: the longest normal stay per status.
Thresholds = Callable[[], Mapping[str, timedelta]]
#: Characters a free-text query value may have (a date with time and offset fits).
MAX_TEXT = 64


def api_routes(
    *, store: Store, users: Users, sinks: Sinks, stuck: Thresholds = dict
) -> list[BaseRoute]:
    """The ``/api/v1`` routes over ``store`` for ``users``; ``stuck`` reads ``[alerts.stuck]``
    (at each request, so a reload shows)."""
    api = _Api(store=store, users=users, sinks=sinks, stuck=stuck)
    spec = document()

    async def openapi(_request: Request) -> Response:
        return JSONResponse(spec)

    return [
        Route(f"{PREFIX}/openapi.json", openapi, methods=["GET"]),
        _route(f"{PREFIX}/orders", GET=api.list_orders, POST=api.watch_orders),
        _route(f"{PREFIX}/orders/{{order_id}}", GET=api.get_order, DELETE=api.unwatch_order),
        _route(f"{PREFIX}/deliveries", GET=api.list_deliveries),
        _route(f"{PREFIX}/transitions", GET=api.list_transitions),
        _route(f"{PREFIX}/deliveries/{{event_id}}/retry", POST=api.retry_delivery),
    ]


class _Api:
    """The endpoints: each authenticates, parses, calls the store and serialises."""

    def __init__(self, *, store: Store, users: Users, sinks: Sinks, stuck: Thresholds) -> None:
        self._store = store
        self._users = users
        self._sinks = sinks
        self._stuck = stuck
        #: Exports streaming now, per user (at most :data:`MAX_EXPORTS` each).
        self._exporting: dict[str, int] = {}

    async def list_orders(self, request: Request) -> Response:
        authenticate(request, self._users)
        query = _Query(request, ("status", "state", "q", "stuck", "limit", "cursor"))
        if query.choice("stuck", ("true", "false")) == "true":
            return await self._stuck_orders(query)
        limit = query.limit()
        after = query.cursor("o")
        if after is not None:
            after = _order_id(after, "cursor")
        rows = await self._store.orders.page(
            status=query.choice("status", [s.value for s in Status]),
            state=query.choice("state", STATES),
            q=query.matching("q", SEARCH_PATTERN),
            after=after,
            limit=limit + 1,
        )
        more = len(rows) > limit
        rows = rows[:limit]
        cursor = _cursor("o", rows[-1].order_id) if more else None
        return JSONResponse({"items": [watched_dict(o) for o in rows], "next_cursor": cursor})

    async def _stuck_orders(self, query: _Query) -> Response:
        """``?stuck=true``: the orders stuck now, longest stay first, each with ``stuck``."""
        for name in ("status", "state", "q"):
            if query.text(name) is not None:
                raise HTTPException(422, f"{name}: not with stuck=true (only limit and cursor)")
        limit = query.limit()
        after = None
        position = query.cursor("s")
        if position is not None:
            after = stuck_position(position)
            if after is None:
                raise HTTPException(422, "cursor: not one this API issued; start without it")
        rows = await self._store.reports.stuck_orders(limit=limit + 1, after=after)
        more = len(rows) > limit
        rows = rows[:limit]
        thresholds = self._stuck()
        items = [
            stuck_dict(StuckOrder(order=o, since=since, threshold=thresholds.get(o.status or "")))
            for o, since in rows
        ]
        cursor = None
        if more:
            last, since = rows[-1]
            cursor = _cursor("s", f"{since.isoformat()}|{last.order_id}")
        return JSONResponse({"items": items, "next_cursor": cursor})

    async def get_order(self, request: Request) -> Response:
        authenticate(request, self._users)
        order_id = _order_id(request.path_params["order_id"], "order id")
        history = await self._store.reports.history(order_id)
        if history is None:
            raise HTTPException(404, f"order {order_id} is not watched and never was")
        return JSONResponse(history_json(history))

    async def watch_orders(self, request: Request) -> Response:
        caller = authenticate(request, self._users, write=True)
        ids = _order_ids(await _json_body(request))
        added = await self._store.orders.watch(ids, source="api", now=utc_now())
        log.info("api_write", user=caller.name, action="watch", ids=ids, added=added)
        return JSONResponse({"added": added}, status_code=201)

    async def unwatch_order(self, request: Request) -> Response:
        caller = authenticate(request, self._users, write=True)
        order_id = _order_id(request.path_params["order_id"], "order id")
        if await self._store.orders.get(order_id) is None:
            raise HTTPException(404, f"order {order_id} is not watched and never was")
        removed = await self._store.orders.unwatch([order_id], now=utc_now())
        log.info("api_write", user=caller.name, action="unwatch", ids=[order_id], removed=removed)
        return Response(status_code=204)

    async def list_deliveries(self, request: Request) -> Response:
        authenticate(request, self._users)
        query = _Query(request, ("state", "sink", "limit", "cursor"))
        limit = query.limit()
        after = query.cursor("d")
        if after is not None and not (after.isdigit() and len(after) <= MAX_ID_DIGITS):
            raise HTTPException(422, "cursor: not one this API issued; start without it")
        rows = await self._store.outbox.page(
            state=query.choice("state", [s.value for s in DeliveryState]),
            sink=query.matching("sink", SINK),
            after_id=int(after) if after is not None else None,
            limit=limit + 1,
        )
        more = len(rows) > limit
        rows = rows[:limit]
        as_dict = functools.partial(delivery_dict, sinks=set(self._sinks()))
        return JSONResponse(
            {
                "items": [as_dict(d) for _id, d in rows],
                "next_cursor": _cursor("d", str(rows[-1][0])) if more else None,
            }
        )

    async def list_transitions(self, request: Request) -> Response:
        """``tracker export`` over HTTP: the period's transitions, streamed in constant memory.

        The rows are read a chunk at a time, each chunk on a connection given back before it is
        sent, so a client that reads slowly (or not at all) holds no connection; the listener
        drops one that stops reading. A user may stream :data:`MAX_EXPORTS` exports at once.
        """
        caller = authenticate(request, self._users)
        query = _Query(request, ("since", "until", "status", "format"))
        since, until = query.text("since"), query.text("until")
        if since is None:
            raise HTTPException(422, "since: required; a date YYYY-MM-DD or ISO 8601 with offset")
        try:
            wanted = ExportRequest(
                since=parse_moment(since, "since"),
                until=parse_moment(until, "until") if until is not None else None,
                status=query.choice("status", [s.value for s in Status]),
                format="csv" if query.choice("format", FORMATS) == "csv" else "ndjson",
            )
        except ConfigError as exc:
            raise HTTPException(422, str(exc)) from None
        if wanted.until is not None and wanted.since >= wanted.until:
            raise HTTPException(422, "since is not before until, so nothing can match")
        if self._exporting.get(caller.name, 0) >= MAX_EXPORTS:
            raise HTTPException(
                429,
                f"user {caller.name!r} streams {MAX_EXPORTS} exports already; retry when one ends",
                headers={"Retry-After": "5"},
            )
        media = "text/csv; charset=utf-8" if wanted.format == "csv" else "application/x-ndjson"
        self._exporting[caller.name] = self._exporting.get(caller.name, 0) + 1
        return _Streaming(
            streamed(self._store.reading, wanted),
            media_type=media,
            done=functools.partial(self._exported, caller.name),
        )

    def _exported(self, name: str) -> None:
        left = self._exporting.pop(name, 1) - 1
        if left:
            self._exporting[name] = left

    async def retry_delivery(self, request: Request) -> Response:
        caller = authenticate(request, self._users, write=True)
        event_id = request.path_params["event_id"]
        count = await retry_event(self._store, event_id, user=caller.name, logged="api_write")
        if count == 0:
            raise HTTPException(
                404, f"event {event_id} has no undelivered delivery (none exists, or all arrived)"
            )
        return JSONResponse({"event_id": event_id, "pending": count}, status_code=202)


async def retry_event(
    store: Store, event_id: str, *, user: str, logged: str, invalid: int = 422
) -> int:
    """Make an event's undelivered deliveries pending again, for the API and the pages alike:
    how many there were. A malformed id is refused with ``invalid`` before any query; a retry
    that found something is logged as ``logged`` with the user's name."""
    if not EVENT_ID.fullmatch(event_id):
        raise HTTPException(invalid, f"invalid event id {clip_id(event_id)!r}: expected e.g. evt_…")
    count = len(await retries.retry_events(store, [event_id], now=utc_now()))
    if count:
        log.info(logged, user=user, action="retry", ids=[event_id], pending=count)
    return count


Endpoint = Callable[[Request], Awaitable[Response]]


class _Streaming(StreamingResponse):
    """A streamed answer that calls ``done`` once it has ended, however it ended."""

    def __init__(
        self, content: AsyncIterator[str], *, media_type: str, done: Callable[[], None]
    ) -> None:
        super().__init__(content, media_type=media_type)
        self._done = done

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._done()


def _route(path: str, **by_method: Endpoint) -> Route:
    """One route per path, whatever its methods, so a 405 lists every method it has."""

    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await by_method[method](request)

    return Route(path, endpoint, methods=list(by_method))


class _Query:
    """A request's query parameters, each checked against what the route accepts."""

    def __init__(self, request: Request, known: Sequence[str]) -> None:
        self._params = request.query_params
        unknown = sorted(set(self._params) - set(known))
        if unknown:
            raise HTTPException(
                422, f"unknown query parameter {unknown[0]!r}: use {', '.join(known)}"
            )

    def text(self, name: str) -> str | None:
        """A free-text value, bounded in length (dates are parsed by the caller)."""
        value = self._get(name)
        if value is not None and not 1 <= len(value) <= MAX_TEXT:
            raise HTTPException(422, f"{name}: between 1 and {MAX_TEXT} characters")
        return value

    def _get(self, name: str) -> str | None:
        # An empty value is a value: refused below like any other that does not fit.
        return self._params.get(name)

    def choice(self, name: str, allowed: Sequence[str]) -> str | None:
        """The value of ``name`` if it is one of ``allowed``; else 422."""
        value = self._get(name)
        if value is not None and value not in allowed:
            raise HTTPException(
                422, f"{name}: {clip_id(value)!r} is not one of {', '.join(allowed)}"
            )
        return value

    def matching(self, name: str, pattern: re.Pattern[str]) -> str | None:
        """The value of ``name`` if it matches ``pattern``; else 422."""
        value = self._get(name)
        if value is not None and not pattern.fullmatch(value):
            raise HTTPException(422, f"{name}: {clip_id(value)!r} must match {pattern.pattern}")
        return value

    def limit(self) -> int:
        """The page size: :data:`DEFAULT_LIMIT` if absent, cut to :data:`MAX_LIMIT`."""
        value = self._get("limit")
        if value is None:
            return DEFAULT_LIMIT
        digits = value.lstrip("0")
        if not (value.isascii() and value.isdigit()) or not digits:
            raise HTTPException(422, f"limit: {clip_id(value)!r} is not a positive integer")
        # Past a few digits it is cut to the cap anyway: never parse a thousand-digit number.
        return MAX_LIMIT if len(digits) > len(str(MAX_LIMIT)) else min(int(digits), MAX_LIMIT)

    def cursor(self, kind: str) -> str | None:
        """The position a cursor of ``kind`` holds, or 422 for one this API did not issue."""
        value = self._get("cursor")
        if value is None:
            return None
        try:
            text = base64.urlsafe_b64decode(value.encode("ascii") + b"==").decode("ascii")
        except (UnicodeError, binascii.Error, ValueError):
            text = ""
        found, _, position = text.partition(":")
        if found != kind or not position:
            raise HTTPException(422, "cursor: not one this API issued; start without it")
        return position


def _cursor(kind: str, position: str) -> str:
    """An opaque cursor: the page's last key, which the next page starts after."""
    return base64.urlsafe_b64encode(f"{kind}:{position}".encode()).decode().rstrip("=")


def stuck_position(position: str) -> tuple[datetime, str] | None:
    """The (stay start, order id) a stuck list's cursor holds, or ``None`` for one not made
    here (the API's and the pages' alike)."""
    moment, _, order_id = position.partition("|")
    try:
        since = datetime.fromisoformat(moment)
        return (since, validate_order_id(order_id)) if since.tzinfo is not None else None
    except (ValueError, InvalidOrderId):
        return None


def _order_id(value: str, what: str) -> str:
    """``value`` if it is an order id; else 422 naming it."""
    try:
        return validate_order_id(value)
    except InvalidOrderId as exc:
        text = str(exc) if len(value) <= 80 else f"invalid order id {clip_id(value)!r}"
        raise HTTPException(422, f"{what}: {text}") from exc


def clip_id(value: str) -> str:
    """``value`` cut short for a message: an error never echoes a megabyte back."""
    return value if len(value) <= 80 else value[:77] + "..."


async def _json_body(request: Request) -> Any:
    """The request's JSON body, at most :data:`MAX_BODY` bytes (413 past it)."""
    too_large = HTTPException(413, f"the body is larger than {MAX_BODY} bytes")
    body = await bounded_body(request, MAX_BODY, too_large)
    return parse_json(body, HTTPException, invalid=422)


def _order_ids(data: Any) -> list[str]:
    """The ``order_ids`` of a ``POST /orders`` body, each validated; else 422 naming one."""
    ids = data.get("order_ids") if isinstance(data, dict) else None
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise HTTPException(422, 'the body must be {"order_ids": ["prdo_…", …]} (at least one)')
    if len(ids) > MAX_IDS:
        raise HTTPException(422, f"order_ids: at most {MAX_IDS} per request")
    return [_order_id(i, "order_ids") for i in ids]
