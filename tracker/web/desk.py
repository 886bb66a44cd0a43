"""The support desk's pages: what changed in a period, and the dead letters with their retries.

``/changes`` lists the transitions of a day (or a range), latest first, a page at a time, with
a CSV link serving exactly ``tracker export``'s rows for the same period and status. The dead
letters' page retries one event, or every dead letter (of one sink, of one order) after a
confirmation naming how many; ``POST /api/v1/deliveries/retry`` does the same for scripts. All
of them retry through :mod:`tracker.retries`, as ``tracker deliveries retry`` does.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Collection, Mapping
from datetime import date, datetime, timedelta
from typing import Any

import structlog
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from tracker import retries
from tracker.clock import utc_now
from tracker.errors import ConfigError
from tracker.export import ExportRequest, day_bounds, day_of, parse_moment, streamed
from tracker.lifecycle import Status, is_known
from tracker.model import ORDER_ID, DeliveryState
from tracker.store import Store
from tracker.text import Message
from tracker.views import orphaned
from tracker.web.api import PREFIX, retry_event
from tracker.web.auth import Users, authenticate
from tracker.web.bodies import bounded_body, parse_json
from tracker.web.pages import (
    MAX_STATUS,
    PAGE_SIZE,
    Guard,
    PageRoute,
    Sinks,
    Visitor,
    _cursor,
    _form,
    _uncursor,
    render,
)
from tracker.web.watch_page import watch_routes

log = structlog.get_logger("tracker.web")

#: Characters a date or a moment in the query may have (ISO 8601 with offset fits).
MAX_MOMENT = 40
#: Bytes of the API's bulk retry body: three short fields.
MAX_RETRY_BODY = 4 * 1024


def desk_routes(*, store: Store, users: Users, guard: Guard, sinks: Sinks) -> list[BaseRoute]:
    """``/changes`` (and its CSV), the dead letters and their retries, the watch pages, and
    the API's bulk retry."""
    desk = _Desk(store=store, users=users, sinks=sinks)
    return [
        PageRoute("/changes", guard(desk.changes), methods=["GET"]),
        PageRoute("/changes.csv", guard(desk.changes_csv), methods=["GET"]),
        PageRoute("/dead-letters", guard(desk.dead_letters), methods=["GET"]),
        PageRoute(
            "/dead-letters/retry-all",
            guard(desk.retry_all, form=kept_form),
            methods=["GET", "POST"],
        ),
        PageRoute("/dead-letters/{event_id}/retry", guard(desk.retry), methods=["POST"]),
        Route(f"{PREFIX}/deliveries/retry", desk.api_retry, methods=["POST"]),
        *watch_routes(store=store, guard=guard),
    ]


async def kept_form(request: Request) -> Mapping[str, str]:
    """The pages' small urlencoded form, kept on the request for the handler to read."""
    fields = await _form(request)
    request.state.form = fields
    return fields


# -- the period of /changes ------------------------------------------------------------------


class Period:
    """What ``/changes`` shows: ``[since, until)``, the day it is (if it is one), the status."""

    def __init__(
        self, since: datetime, until: datetime | None, day: date | None, status: str | None
    ) -> None:
        self.since, self.until, self.day, self.status = since, until, day, status

    def query(self, **more: str) -> str:
        """The query string naming this period and status (and ``more``)."""
        kept: dict[str, str] = {}
        if self.day is not None:
            kept["day"] = self.day.isoformat()
        else:
            kept["since"] = _iso(self.since)
            if self.until is not None:
                kept["until"] = _iso(self.until)
        if self.status:
            kept["status"] = self.status
        return urllib.parse.urlencode({**kept, **more})

    def export(self) -> ExportRequest:
        """The ``tracker export`` request for this period and status, as CSV."""
        return ExportRequest(since=self.since, until=self.until, status=self.status)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def period_of(params: Mapping[str, str], now: datetime) -> Period:
    """The period and status a query names (default: today); 400 naming what is wrong."""
    day_text, since_text, until_text = (
        params.get(k, "").strip() for k in ("day", "since", "until")
    )
    status = params.get("status", "").strip() or None
    for name, text in (("day", day_text), ("since", since_text), ("until", until_text)):
        if len(text) > MAX_MOMENT:
            raise HTTPException(
                400, Message("%(name)s: at most %(n)s characters", name=name, n=MAX_MOMENT)
            )
    if status is not None and (len(status) > MAX_STATUS or not is_known(status)):
        shown = status[:MAX_STATUS]
        raise HTTPException(
            400,
            Message(
                "status %(status)r is not a known status; use one of: %(known)s",
                status=shown,
                known=", ".join(Status),
            ),
        )
    if day_text and (since_text or until_text):
        raise HTTPException(400, Message("give a day, or since and until, not both"))
    if since_text or until_text:
        if not since_text:
            raise HTTPException(400, Message("since: required with until; a date YYYY-MM-DD"))
        try:
            since = parse_moment(since_text, "since")
            until = parse_moment(until_text, "until") if until_text else None
        except ConfigError as exc:
            raise HTTPException(400, str(exc)) from None
        if until is not None and since >= until:
            raise HTTPException(400, Message("since is not before until, so nothing can match"))
        return Period(since, until, None, status)
    try:
        day = date.fromisoformat(day_text) if day_text else day_of(now)
    except ValueError:
        raise HTTPException(
            400, Message("day %(day)r is not a date; use YYYY-MM-DD", day=day_text)
        ) from None
    since, until = day_bounds(day)
    return Period(since, until, day, status)


def _position(value: str) -> tuple[datetime, int] | None:
    """A ``/changes`` cursor's key: a detection time and a row id; ``None`` if malformed."""
    found = _uncursor("c", value)
    moment, _, row_id = (found or "").partition("|")
    if not (row_id.isdigit() and len(row_id) <= 18):
        return None
    try:
        at = datetime.fromisoformat(moment)
    except ValueError:
        return None
    return (at, int(row_id)) if at.tzinfo is not None else None


# -- the handlers ----------------------------------------------------------------------------


class _Desk:
    """The desk's endpoints: each parses, calls the store or :mod:`tracker.retries`, renders."""

    def __init__(self, *, store: Store, users: Users, sinks: Sinks) -> None:
        self._store = store
        self._users = users
        self._sinks = sinks

    async def changes(self, request: Request, visitor: Visitor) -> Response:
        """The transitions of the period, latest first, a page at a time."""
        params = request.query_params
        period = period_of(params, utc_now())
        before = None
        if params.get("cursor"):
            before = _position(params["cursor"])
            if before is None:
                raise HTTPException(400, Message("that page link is not one this site made"))
        rows = await self._store.reports.changes(
            since=period.since,
            until=period.until,
            status=period.status,
            before=before,
            limit=PAGE_SIZE + 1,
        )
        next_url = None
        if len(rows) > PAGE_SIZE:
            rows = rows[:PAGE_SIZE]
            row_id, last = rows[-1]
            key = f"{last.detected_at.isoformat()}|{row_id}"
            next_url = "/changes?" + period.query(cursor=_cursor("c", key))
        day = period.day
        return render(
            "changes.html",
            visitor=visitor,
            period=period,
            rows=[move for _id, move in rows],
            next_url=next_url,
            csv_url="/changes.csv?" + period.query(),
            previous_url=_day_url(day - timedelta(days=1), period) if day else None,
            next_day_url=_day_url(day + timedelta(days=1), period) if day else None,
            statuses=list(Status),
            until_shown=period.until - timedelta(microseconds=1) if period.until else None,
        )

    async def changes_csv(self, request: Request, _visitor: Visitor) -> Response:
        """The period's transitions as ``tracker export`` writes them (oldest first)."""
        period = period_of(request.query_params, utc_now())
        until = period.until.date().isoformat() if period.until else "now"
        filename = f"changes_{period.since.date().isoformat()}_{until}.csv"
        return StreamingResponse(
            streamed(self._store.reading, period.export()),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="{filename}"',
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
            },
        )

    async def dead_letters(self, request: Request, visitor: Visitor) -> Response:
        """Deliveries that gave up, a page at a time, each with its event's kind and, for
        write users, a retry; and the bulk retries."""
        params = request.query_params
        after = None
        if params.get("cursor"):
            position = _uncursor("d", params["cursor"])
            if position is None or not (position.isdigit() and len(position) <= 18):
                raise HTTPException(400, Message("that page link is not one this site made"))
            after = int(position)
        rows = await self._store.outbox.page(
            state=DeliveryState.DEAD.value, after_id=after, limit=PAGE_SIZE + 1
        )
        next_url = None
        if len(rows) > PAGE_SIZE:
            rows = rows[:PAGE_SIZE]
            next_url = "/dead-letters?" + urllib.parse.urlencode(
                {"cursor": _cursor("d", str(rows[-1][0]))}
            )
        sinks = set(self._sinks())
        kinds = await self._store.reports.event_kinds([d.event_id for _id, d in rows])
        return render(
            "dead_letters.html",
            visitor=visitor,
            rows=[
                (d, orphaned(d, sinks), retries.kind_label(kinds.get(d.event_id)))
                for _id, d in rows
            ],
            next_url=next_url,
            sinks=sorted(sinks),
            total=await retries.count_dead(self._store),
            notice=_notice(params),
        )

    async def retry(self, request: Request, visitor: Visitor) -> Response:
        """Make an event's undelivered deliveries pending again, as the API's retry does."""
        _writer(visitor)
        event_id = request.path_params["event_id"]
        count = await retry_event(
            self._store, event_id, user=visitor.name, logged="page_write", invalid=400
        )
        said = {"retried": event_id, "pending": str(count)} if count else {"missing": event_id}
        return RedirectResponse("/dead-letters?" + urllib.parse.urlencode(said), status_code=303)

    async def retry_all(self, request: Request, visitor: Visitor) -> Response:
        """GET: how many dead letters a bulk retry would queue, and a button to do it;
        POST: queue them, then back to the dead letters saying how many were queued."""
        _writer(visitor)
        fields = request.state.form if request.method == "POST" else request.query_params
        sink = fields.get("sink", "").strip() or None
        order_id = fields.get("order", "").strip() or None
        problem = await retries.filter_problem(
            self._store, sink=sink, order_id=order_id, configured=set(self._sinks())
        )
        if problem is not None:
            raise HTTPException(400, Message("%(problem)s; nothing was retried", problem=problem))
        if request.method != "POST":
            count = await retries.count_dead(self._store, sink=sink, order_id=order_id)
            return render(
                "retry_confirm.html",
                visitor=visitor,
                count=count,
                sink=sink or "",
                order=order_id or "",
            )
        queued = await retries.retry_dead(self._store, sink=sink, order_id=order_id, now=utc_now())
        _logged(visitor.name, "page_write", queued, sink=sink, order_id=order_id)
        said = {"queued": str(len(queued))}
        said |= {k: v for k, v in (("sink", sink), ("order", order_id)) if v}
        return RedirectResponse("/dead-letters?" + urllib.parse.urlencode(said), status_code=303)

    async def api_retry(self, request: Request) -> Response:
        """``POST /api/v1/deliveries/retry`` ``{"state": "dead", "sink"?, "order_id"?}``:
        every dead delivery that matches made pending again; 202 ``{"retried": N}``."""
        caller = authenticate(request, self._users, write=True)
        too_large = HTTPException(413, f"the body is larger than {MAX_RETRY_BODY} bytes")
        data: Any = parse_json(
            await bounded_body(request, MAX_RETRY_BODY, too_large), HTTPException, invalid=422
        )
        if not isinstance(data, dict) or data.get("state") != "dead":
            raise HTTPException(422, 'the body must be {"state": "dead"} (sink, order_id optional)')
        extra = sorted(set(data) - {"state", "sink", "order_id"})
        if extra:
            raise HTTPException(422, f"unknown field {extra[0]!r}: use state, sink, order_id")
        sink, order_id = data.get("sink"), data.get("order_id")
        if not all(v is None or isinstance(v, str) for v in (sink, order_id)):
            raise HTTPException(422, "sink and order_id are strings")
        problem = await retries.filter_problem(
            self._store, sink=sink, order_id=order_id, configured=set(self._sinks())
        )
        if problem is not None:
            raise HTTPException(422, problem)
        queued = await retries.retry_dead(self._store, sink=sink, order_id=order_id, now=utc_now())
        _logged(caller.name, "api_write", queued, sink=sink, order_id=order_id)
        return JSONResponse({"retried": len(queued)}, status_code=202)


def _writer(visitor: Visitor) -> None:
    if not visitor.writes:
        raise HTTPException(
            403,
            Message("user %(name)r has the read role; this needs write", name=visitor.name),
        )


def _logged(
    user: str, event: str, queued: Collection[Any], *, sink: str | None, order_id: str | None
) -> None:
    if queued:
        ids = sorted({d.event_id for d in queued})
        log.info(
            event,
            user=user,
            action="retry",
            ids=ids,
            pending=len(queued),
            sink=sink,
            order_id=order_id,
        )


def _day_url(day: date, period: Period) -> str:
    kept = {"day": day.isoformat(), **({"status": period.status} if period.status else {})}
    return "/changes?" + urllib.parse.urlencode(kept)


def _notice(params: Mapping[str, str]) -> dict[str, Any] | None:
    """The notice a retry left in the query string, if it is one a retry leaves: its ``kind``
    (``retried``, ``missing``, ``queued``) and values, worded by the template."""
    retried, pending, missing = params.get("retried"), params.get("pending"), params.get("missing")
    if retried and retries.EVENT_ID.fullmatch(retried) and pending and pending.isdigit():
        return {"kind": "retried", "event": retried, "count": int(pending)}
    if missing and retries.EVENT_ID.fullmatch(missing):
        return {"kind": "missing", "event": missing}
    queued = params.get("queued", "")
    if queued.isdigit() and len(queued) <= 12:
        sink, order_id = params.get("sink"), params.get("order")
        if sink and not retries.SINK_NAME.fullmatch(sink):
            return None
        if order_id and not ORDER_ID.fullmatch(order_id):
            return None
        return {"kind": "queued", "count": int(queued), "sink": sink, "order": order_id}
    return None
