"""Reports over HTTP: ``/api/v1/reports/…`` (JSON) and the page ``/reports`` (read role).

Both read through :mod:`tracker.insight`, the layer ``tracker report`` uses, so the API, the
page and the CLI show the same numbers. The page draws its charts as SVG on the server (no
script, nothing from outside: the pages' Content-Security-Policy allows neither), each with its
numbers in a table beside it and a link to them as CSV (``/reports/NAME.csv``).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import math
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from tracker.clock import utc_now
from tracker.errors import ConfigError
from tracker.insight import (
    COLUMNS,
    LEAD_BIN,
    LEAD_BINS,
    Duration,
    LeadTime,
    OverTarget,
    Period,
    Week,
    by_provider,
    csv_text,
    durations_of,
    finished,
    flow_of,
    lead_times_of,
    leads,
    over_target,
    over_target_of,
    report_items,
    utc_day,
    weekly,
)
from tracker.store import Store
from tracker.text import Message, human, week_label
from tracker.web.auth import Users, authenticate
from tracker.web.flow_chart import flow_chart
from tracker.web.pages import PageRoute, Visitor, render

PREFIX = "/api/v1/reports"
#: What a report's query may hold.
PARAMETERS = ("since", "until", "by")
#: Characters a query value may have (a date with time and offset fits).
MAX_TEXT = 64
#: The reports the API serves by name, and those the page links as CSV.
API_REPORTS = ("durations", "lead-time", "flow", "weekly", "over-target")
CSS_PATH = "/static/reports.css"
#: ``[alerts.stuck]``: the longest normal stay per status, read at each request (a reload shows).
Targets = Callable[[], Mapping[str, timedelta]]
#: The pages' authentication (``tracker.web.pages.page_guard``).
Guard = Callable[
    [Callable[[Request, Visitor], Awaitable[Response]]], Callable[[Request], Awaitable[Response]]
]


def report_routes(
    *, store: Store, users: Users, guard: Guard, targets: Targets = dict
) -> list[BaseRoute]:
    """The reports' API routes (bearer token) and the page with its CSV links (session)."""
    reports = _Reports(store=store, users=users, targets=targets)
    return [
        *(
            Route(f"{PREFIX}/{name}", functools.partial(reports.api, name), methods=["GET"])
            for name in API_REPORTS
        ),
        PageRoute("/reports", guard(reports.page), methods=["GET"]),
        PageRoute("/reports/{name}.csv", guard(reports.csv), methods=["GET"]),
        Route(CSS_PATH, stylesheet, methods=["GET"]),
    ]


@functools.cache
def _stylesheet() -> tuple[bytes, str]:
    css = importlib.resources.files("tracker.web").joinpath("static/reports.css").read_bytes()
    return css, hashlib.sha256(css).hexdigest()[:12]


async def stylesheet(_request: Request) -> Response:
    """The report page's own styles (the charts' layout), cached by its version."""
    css, _version = _stylesheet()
    return Response(css, media_type="text/css", headers={"Cache-Control": "max-age=86400"})


def _period(request: Request) -> tuple[Period, bool]:
    """The request's period and grouping; 422 for anything else or anything malformed."""
    params = request.query_params
    unknown = sorted(set(params) - set(PARAMETERS))
    if unknown:
        raise HTTPException(
            422,
            Message("unknown query parameter %(name)r: use since, until, by", name=unknown[0]),
        )
    values = {}
    for name in PARAMETERS:
        value = params.get(name) or None
        if value is not None and len(value) > MAX_TEXT:
            raise HTTPException(
                422, Message("%(name)s: at most %(n)s characters", name=name, n=MAX_TEXT)
            )
        values[name] = value
    try:
        period = Period.parse(values["since"], values["until"], now=utc_now())
        grouped = by_provider(values["by"])
    except ConfigError as exc:
        raise HTTPException(422, str(exc).replace("--", "")) from None
    return period, grouped


class _Reports:
    """The endpoints: each authenticates, parses, reads through ``tracker.insight``, serves."""

    def __init__(self, *, store: Store, users: Users, targets: Targets) -> None:
        self._store = store
        self._users = users
        self._targets = targets

    async def _items(self, name: str, period: Period, grouped: bool) -> list[dict[str, Any]]:
        if name == "weekly":
            return [week.json() for week in await weekly(self._store, period)]
        if name == "over-target":
            found = await over_target(self._store, period, self._targets())
            return [row.json() for row in found if grouped or row.provider is None]
        return await report_items(self._store, name, period, by=grouped)

    async def api(self, name: str, request: Request) -> Response:
        """``GET /api/v1/reports/NAME``: ``{"since", "until", "items"}``."""
        authenticate(request, self._users)
        period, grouped = _period(request)
        items = await self._items(name, period, grouped)
        return JSONResponse(
            {"since": _iso(period.since), "until": _iso(period.until), "items": items}
        )

    async def csv(self, request: Request, _visitor: Visitor) -> Response:
        """``/reports/NAME.csv``: the numbers of one chart, as CSV."""
        name = request.path_params["name"]
        if name not in API_REPORTS:
            raise HTTPException(
                404,
                Message(
                    "no report %(name)r; reports: %(known)s",
                    name=name,
                    known=", ".join(API_REPORTS),
                ),
            )
        period, grouped = _period(request)
        items = await self._items(name, period, grouped)
        filename = f"{name}_{utc_day(period.since)}_{utc_day(period.until)}.csv".replace(":", "")
        return Response(
            csv_text(COLUMNS[name], items),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="{filename}"',
                "Cache-Control": "no-store",
            },
        )

    async def page(self, request: Request, visitor: Visitor) -> Response:
        """The report page: every chart of the period, with its table and CSV link."""
        period, _grouped = _period(request)
        stays = await finished(self._store, period)  # one scan for four of the charts
        overall = durations_of(stays, by=False)
        per_provider = durations_of(stays, by=True)
        activated = await leads(self._store, period)
        lead_overall = lead_times_of(activated, by=False)
        leads_by = lead_times_of(activated, by=True)
        moves = flow_of(stays, by=False)
        weeks = await weekly(self._store, period)
        targets = self._targets()
        sla = over_target_of(stays, targets)
        query = {"since": _iso(period.since), "until": _iso(period.until)}
        return render(
            "reports.html",
            visitor=visitor,
            report_css=f"{CSS_PATH}?v={_stylesheet()[1]}",
            since=utc_day(period.since),
            until=utc_day(period.until),
            since_value=period.since.date().isoformat(),
            until_value=period.until.date().isoformat(),
            csv=lambda name, by=False: (
                f"/reports/{name}.csv?"
                + urllib.parse.urlencode({**query, **({"by": "provider"} if by else {})})
            ),
            human=human,
            durations=overall,
            durations_by=per_provider,
            durations_chart=_durations_chart(overall),
            leads=lead_overall,
            leads_by=leads_by,
            lead_chart=_lead_chart(lead_overall[0] if lead_overall else None),
            moves=moves,
            flow_chart=flow_chart(moves),
            weeks=weeks,
            week_label=week_label,
            weekly_chart=_weekly_chart(weeks),
            targets=targets,
            sla=sla,
            sla_chart=_sla_chart([row for row in sla if row.provider is None]),
        )


def _iso(moment: Any) -> str:
    return str(moment.isoformat().replace("+00:00", "Z"))


# -- the charts: geometry computed here, drawn by the template as SVG ------------------------

#: The charts' drawing width (SVG user units): they scale to the width they are given.
WIDTH = 640
BAR = 22
LABEL = 170


def _ticks(top: float, count: int = 4) -> list[float]:
    """``count`` round values from 0 up to at least ``top``."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [step * i for i in range(count + 1) if step * (i - 1) < top]


def _durations_chart(rows: Sequence[Duration]) -> dict[str, Any]:
    """Horizontal bars: each status's median, a tick at its p90."""
    days = [row.p90_seconds / 86_400 for row in rows]
    ticks = _ticks(max(days, default=0))
    scale = (WIDTH - LABEL - 20) / (ticks[-1] or 1)
    bars = [
        {
            "y": 10 + i * (BAR + 8),
            "label": row.status,
            "median": row.median_seconds / 86_400 * scale,
            "p90": row.p90_seconds / 86_400 * scale,
            "title": Message(
                "%(status)s: median %(median)s, p90 %(p90)s, %(n)s stays",
                status=row.status,
                median=human(row.median_seconds),
                p90=human(row.p90_seconds),
                n=row.count,
            ),
        }
        for i, row in enumerate(rows)
    ]
    height = 30 + len(rows) * (BAR + 8)
    axis = [{"x": LABEL + t * scale, "label": f"{t:g}d"} for t in ticks]
    return {"bars": bars, "height": height, "axis": axis, "left": LABEL, "bar": BAR}


def _lead_chart(lead: LeadTime | None) -> dict[str, Any]:
    """A histogram of lead times in two-week bins."""
    counts = list(lead.bins) if lead else [0] * LEAD_BINS
    top = max(counts, default=0) or 1
    width = (WIDTH - 40) / LEAD_BINS
    weeks = LEAD_BIN.days // 7
    bars = [
        {
            "x": 30 + i * width,
            "w": width - 4,
            "h": count / top * 160,
            "y": 180 - count / top * 160,
            "count": count,
            "label": f"{i * weeks}+" if i == LEAD_BINS - 1 else f"{i * weeks}-{(i + 1) * weeks}",
        }
        for i, count in enumerate(counts)
    ]
    return {"bars": bars, "height": 215}


def _weekly_chart(weeks: Sequence[Week]) -> dict[str, Any]:
    """Three lines over the weeks: activations, cancellations, blocks. At most eight week
    labels, and of those at most four marked ``narrow``: the ones a phone shows (larger)."""
    top = max((max(w.activated, w.cancelled, w.blocked) for w in weeks), default=0) or 1
    # Inset so that a label centred on the first or last week stays inside the drawing.
    left, span = 48, WIDTH - 96
    step = span / max(len(weeks) - 1, 1)

    def line(values: Sequence[int]) -> str:
        return " ".join(
            f"{left + i * step:.1f},{170 - v / top * 150:.1f}" for i, v in enumerate(values)
        )

    every = max(1, math.ceil(len(weeks) / 8))
    sparse = every * max(1, math.ceil(math.ceil(len(weeks) / every) / 4))
    return {
        "height": 204,
        "series": [
            ("activated", "#1c6b3c", line([w.activated for w in weeks])),
            ("cancelled", "#a12a2a", line([w.cancelled for w in weeks])),
            ("blocked", "#8a5a00", line([w.blocked for w in weeks])),
        ],
        "labels": [
            {"x": left + i * step, "label": week_label(w.week), "narrow": i % sparse == 0}
            for i, w in enumerate(weeks)
            if i % every == 0
        ],
        "top": top,
    }


def _sla_chart(rows: Sequence[OverTarget]) -> dict[str, Any]:
    """Horizontal bars: the share of each status's stays over its target."""
    scale = WIDTH - LABEL - 60
    bars = [
        {
            "y": 10 + i * (BAR + 8),
            "label": row.status,
            "w": row.share * scale,
            "share": f"{row.share:.0%}",
            "title": Message(
                "%(status)s: %(over)s of %(n)s stays over %(target)s",
                status=row.status,
                over=row.over,
                n=row.count,
                target=human(row.target_seconds),
            ),
        }
        for i, row in enumerate(rows)
    ]
    return {"bars": bars, "height": 30 + len(rows) * (BAR + 8), "left": LABEL, "scale": scale,
            "bar": BAR}  # fmt: skip
