"""The support pages: server-rendered HTML over the store, thin like the API.

Each page authenticates (a session cookie set by ``/login``, or the API's bearer header),
parses, calls the same store methods as the API and renders a Jinja2 template with every value
escaped. A page POST is refused unless it comes from this host (``Origin``), carries the form's
CSRF token (an HMAC of the session) and fits in :data:`MAX_FORM`. No page needs JavaScript; the
Content-Security-Policy allows only the board's refresh script from this host
(``tracker.web.refresh``). Pages speak English or German in the configured zone
(``tracker.web.i18n``).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import importlib.resources
import urllib.parse
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from http import HTTPStatus
from typing import Any, Protocol

import jinja2
import structlog
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from tracker.clock import utc_now
from tracker.errors import InvalidOrderId
from tracker.lifecycle import BLOCKED, COMPLETE, MAIN_PATH, Status, is_known
from tracker.model import STALE_AFTER, validate_order_id
from tracker.store import History, Store
from tracker.text import Message
from tracker.views import history_json, span, state_of
from tracker.web import i18n
from tracker.web.api import (
    PREFIX,
    SEARCH_PATTERN,
    STATES,
    Thresholds,
    clip_id,
    stuck_position,
)
from tracker.web.auth import Users, client_of
from tracker.web.bodies import bounded_body
from tracker.web.journey import journey_context, timeline
from tracker.web.refresh import refresh_seconds, script_url
from tracker.web.sessions import COOKIE, SESSION_LIFETIME, Session

log = structlog.get_logger("tracker.web")

#: Sent with every page: no plugin, no frame, no inline script; styles, forms, the refresh
#: script and its fetches from this host only.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "script-src 'self'; connect-src 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    # Not "no-referrer": with it a browser sends "Origin: null" on a form POST, which the
    # cross-site check refuses. "same-origin" keeps order ids in URLs from leaving the site.
    "Referrer-Policy": "same-origin",
    # Pages show customers' data: never kept by a browser's or a proxy's cache.
    "Cache-Control": "no-store",
}
#: Rows on one page of a list: a screen or two, one bounded query.
PAGE_SIZE = 50
#: Transitions and failing orders the board lists (the rest are a search or a page away).
LATEST_SHOWN = 20
FAILING_SHOWN = 20
#: Stuck orders the board lists (all of them on ``/stuck``).
STUCK_SHOWN = 10
#: Fields one form may send: ours have three; more is not a form of ours.
MAX_FIELDS = 20
#: Bytes a form may have: ours hold a token, a CSRF token and a page to return to.
MAX_FORM = 8 * 1024
#: Characters a status filter may have: an undocumented status from the board's link fits.
MAX_STATUS = 64
#: Characters of the page a login returns to (a search with every filter fits).
MAX_NEXT = 2000
#: Path prefixes that are not pages: they keep their JSON or text answers.
NOT_PAGES = (f"{PREFIX}/", "/healthz", "/readyz", "/metrics", "/hooks/")
#: The stylesheet, from package data.
CSS_PATH = "/static/tracker.css"
#: The board's lifecycle strip: the main path in order, then the detours, set apart.
STRIP_MAIN: tuple[Status, ...] = MAIN_PATH
STRIP_DETOURS: tuple[Status, ...] = (
    Status.BLOCKED,
    Status.BLOCKED_WIM,
    Status.PRE_INSTALLED,
    Status.CANCELLED,
)


class PageRoute(Route):
    """A route of the pages: its errors are pages too."""


def wants_page(request: Request) -> bool:
    """Whether an error answers ``request`` as a page rather than as JSON.

    For a route of the pages (matched, the method perhaps not); for a path nothing serves, when
    a browser asks (``Accept: text/html``) outside the API, the probes and the hooks. Every
    other route, and a script asking for a path nothing serves, keeps its JSON error.
    """
    route = request.scope.get("route")
    if route is not None:
        return isinstance(route, PageRoute)
    if request.url.path.startswith(NOT_PAGES):
        return False
    return "text/html" in request.headers.get("accept", "")


@dataclass(frozen=True, slots=True, kw_only=True)
class Visitor:
    """Who looks at a page: a configured user, by session cookie or by bearer token."""

    name: str
    role: str
    #: ``None`` when authenticated by a bearer header (no cookie, no CSRF token needed).
    session: Session | None = None
    csrf: str | None = None

    @property
    def writes(self) -> bool:
        """Whether this visitor may retry deliveries."""
        return self.role == "write"


# -- rendering -------------------------------------------------------------------------------


@functools.cache
def _templates() -> jinja2.Environment:
    """The pages' templates, every one autoescaped, an unknown name an error; ``_`` translates
    into the language of the page being rendered (``tracker.web.i18n``)."""
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("tracker.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=["jinja2.ext.i18n"],
    )
    # {% trans %} blocks are one line of text however the template wraps them.
    environment.policies["ext.i18n.trimmed"] = True
    environment.install_gettext_callables(  # type: ignore[attr-defined]  # added by the extension
        i18n.gettext, i18n.ngettext, newstyle=True
    )
    environment.filters["utc"] = utc_text
    environment.filters["ago"] = ago
    environment.globals["tone"] = tone
    environment.globals["status_label"] = i18n.status_label
    # A handler's message: translated when the catalog knows it, escaped like any value.
    environment.globals["translated"] = i18n.gettext
    return environment


@functools.cache
def _stylesheet() -> tuple[bytes, str]:
    """The stylesheet and a version of it for its URL (a changed file is fetched anew)."""
    css = importlib.resources.files("tracker.web").joinpath("static/tracker.css").read_bytes()
    return css, hashlib.sha256(css).hexdigest()[:12]


def render(
    name: str,
    *,
    status: int = 200,
    visitor: Visitor | None = None,
    headers: Mapping[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    """The template ``name`` as a page, with the security headers, in the visitor's language
    and the configured zone."""
    with i18n.rendering(i18n.page_locale(visitor.name if visitor else None)) as page:
        html = (
            _templates()
            .get_template(name)
            .render(
                now=utc_now(),
                css=f"{CSS_PATH}?v={_stylesheet()[1]}",
                script=script_url(),
                refresh=refresh_seconds(name),
                language=page.language,
                zone=page.zone.key,
                visitor=visitor,
                **context,
            )
        )
    return HTMLResponse(html, status_code=status, headers={**SECURITY_HEADERS, **(headers or {})})


def error_page(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    """An error as a page: the status, its phrase and what to do."""
    phrase = HTTPStatus(status).phrase
    return render(
        "error.html", status=status, headers=headers, code=status, phrase=phrase, message=message
    )


def tone(status: str | None) -> str:
    """How a status reads at a glance: ``done``, ``stopped``, ``held``, ``unknown`` or ``on``."""
    if status is None:
        return "none"
    if not is_known(status):
        return "unknown"
    if status in COMPLETE:
        return "done"
    if status == Status.CANCELLED:
        return "stopped"
    if status in BLOCKED:
        return "held"
    return "on"


def _moment(value: datetime | str | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


def utc_text(value: datetime | str | None) -> str:
    """``2026-11-30 10:20:05 UTC`` (in the page's zone: ``11:20:05 CET``), or ``-``."""
    return i18n.local_text(_moment(value))


def ago(value: datetime | str | None, now: datetime) -> str:
    """How long before ``now``, in the page's language: ``5 min ago``, ``vor 5 Min.``."""
    return i18n.ago_text(_moment(value), now)


# -- the routes ------------------------------------------------------------------------------

Sinks = Callable[[], Collection[str]]
Handler = Callable[[Request, Visitor], Awaitable[Response]]
#: Reads a page POST's fields (the CSRF token among them).
FormReader = Callable[[Request], Awaitable[Mapping[str, str]]]
Endpoint = Callable[[Request], Awaitable[Response]]


class Guard(Protocol):
    """Puts a page's handler behind the pages' authentication and cross-site checks."""

    def __call__(self, handler: Handler, *, form: FormReader | None = None) -> Endpoint:
        """The endpoint serving ``handler``; ``form`` reads a POST's fields."""


def page_routes(
    *, store: Store, users: Users, sinks: Sinks, stuck: Thresholds = dict
) -> list[BaseRoute]:
    """The support pages over ``store`` for ``users``: login, board, search, order, stuck
    orders (``stuck`` reads ``[alerts.stuck]``), dead letters."""
    pages = _Pages(store=store, users=users, sinks=sinks, stuck=stuck)
    return [
        PageRoute("/login", pages.login_page, methods=["GET", "POST"]),
        PageRoute("/logout", pages.logout, methods=["POST"]),
        PageRoute("/", pages.page(pages.board), methods=["GET"]),
        PageRoute("/orders", pages.page(pages.search), methods=["GET"]),
        PageRoute("/orders/{order_id}", pages.page(pages.order), methods=["GET"]),
        PageRoute("/stuck", pages.page(pages.stuck), methods=["GET"]),
        PageRoute(CSS_PATH, stylesheet, methods=["GET"]),
    ]


def page_guard(*, store: Store, users: Users, sinks: Sinks) -> Guard:
    """The pages' authentication and cross-site checks, for pages registered beside these
    (``tracker.web.report_page``, ``tracker.web.desk``: the dead letters and the desk's
    pages)."""
    return _Pages(store=store, users=users, sinks=sinks).page


async def stylesheet(_request: Request) -> Response:
    """The one stylesheet, cacheable: its URL changes with its content."""
    css, _version = _stylesheet()
    headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "public, max-age=86400"}
    return Response(css, media_type="text/css; charset=utf-8", headers=headers)


class _Pages:
    """The pages: each authenticates, parses, calls the store and renders."""

    def __init__(
        self, *, store: Store, users: Users, sinks: Sinks, stuck: Thresholds = dict
    ) -> None:
        self._store = store
        self._users = users
        self._sinks = sinks
        self._stuck = stuck

    # -- who is asking ----------------------------------------------------------------------

    async def _visitor(self, request: Request) -> Visitor | None:
        """The visitor by bearer header (401 when wrong) or by session cookie, or ``None``.

        A cookie counts only if it is signed for a user in force and its session is still
        remembered (not logged out, not expired).
        """
        caller = self._users.bearer(request)
        if caller is not None:
            return Visitor(name=caller.name, role=caller.role)
        value = request.cookies.get(COOKIE)
        now = utc_now()
        sessions = self._users.sessions
        session = sessions.verify(value, now) if value else None
        if session is None or await self._store.logins.holder(session.digest, now) != session.name:
            return None
        return Visitor(
            name=session.name,
            role=session.role,
            session=session,
            csrf=sessions.csrf(session),
        )

    def page(
        self, handler: Handler, *, form: FormReader | None = None
    ) -> Callable[[Request], Awaitable[Response]]:
        """``handler`` behind authentication and, for a POST, the cross-site checks.

        A browser without a valid session is sent to ``/login`` (a GET) or refused (a POST).
        ``form`` reads a POST's fields (default: a small urlencoded form, :func:`_form`); a
        page taking an upload passes its own, bounded reader.
        """
        read = form or _form

        async def endpoint(request: Request) -> Response:
            visitor = await self._visitor(request)
            if visitor is None:
                if request.method in {"GET", "HEAD"}:
                    return _to_login(request)
                raise HTTPException(401, Message("your session has ended; log in again at /login"))
            if request.method == "POST":
                _same_origin(request)
                fields = await read(request)
                if visitor.session is not None and not self._users.sessions.csrf_matches(
                    visitor.session, fields.get("csrf", "")
                ):
                    log.warning(
                        "page_post_refused", user=visitor.name, reason="csrf", path=request.url.path
                    )
                    raise HTTPException(
                        403, Message("the form is stale or foreign; reload the page")
                    )
            return await handler(request, visitor)

        return endpoint

    # -- login and logout -------------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        """The login form (GET), or a login (POST)."""
        if request.method == "POST":
            return await self.login(request)
        return render("login.html", next=_local(request.query_params.get("next")), error=None)

    async def login(self, request: Request) -> Response:
        """A valid token sets the session cookie; a wrong one shows the form again (401), and
        too many wrong ones from one address are refused for a while (429)."""
        _same_origin(request)
        self._users.admit(request)
        form = await _form(request)
        target = _local(form.get("next"))
        token = form.get("token", "").strip()
        caller = self._users.tokens.check(token) if token else None
        if caller is None:
            self._users.failed(request, "login")
            return render(
                "login.html",
                status=401,
                next=target,
                error="That token is not one of the configured [[http.users]].",
            )
        now = utc_now()
        session = self._users.sessions.issue(caller.name, now)
        await self._store.logins.open(
            digest=session.digest, user=caller.name, expires=session.expires, now=now
        )
        log.info("page_login", user=caller.name, role=caller.role, client=client_of(request))
        response = RedirectResponse(target, status_code=303)
        response.headers.append("set-cookie", _cookie(session.value, request))
        return response

    async def logout(self, request: Request) -> Response:
        """End the session (every copy of its cookie) and go back to the login form."""
        _same_origin(request)
        form = await _form(request)
        visitor = await self._visitor(request)
        if visitor is not None and visitor.session is not None:
            if not self._users.sessions.csrf_matches(visitor.session, form.get("csrf", "")):
                raise HTTPException(403, Message("the form is stale or foreign; reload the page"))
            await self._store.logins.end(visitor.session.digest)
            log.info("page_logout", user=visitor.name)
        response = RedirectResponse("/login", status_code=303)
        response.headers.append("set-cookie", _cookie("", request))
        return response

    # -- the pages --------------------------------------------------------------------------

    async def board(self, _request: Request, visitor: Visitor) -> Response:
        """Active orders per status, unknown and failing ones, the latest transitions."""
        now = utc_now()
        board = await self._store.reports.board(stale_before=now - STALE_AFTER)
        counts = dict(board.active)
        failing_count, failing = await self._store.reports.failing_now(
            at_least=1, limit=FAILING_SHOWN
        )
        stuck_count, stuck = await self._store.reports.stuck_now(limit=STUCK_SHOWN)
        return render(
            "board.html",
            visitor=visitor,
            main=[(s.value, counts.get(s.value, 0)) for s in STRIP_MAIN],
            detours=[(s.value, counts.get(s.value, 0)) for s in STRIP_DETOURS],
            unknown=sorted((s, n) for s, n in counts.items() if s is not None and not is_known(s)),
            unpolled=counts.get(None, 0),
            active=sum(counts.values()),
            failing_count=failing_count,
            failing=failing,
            stuck_count=stuck_count,
            stuck=[(stay, span(now - stay.since)) for stay in stuck],
            latest=await self._store.reports.latest_transitions(limit=LATEST_SHOWN),
            dead=board.dead,
            pending=board.pending,
            daemons=board.daemons,
            last_success_at=board.last_success_at,
        )

    async def search(self, request: Request, visitor: Visitor) -> Response:
        """Watched orders by id, customer or subscription, status and state, a page at a time."""
        params = request.query_params
        q = params.get("q", "").strip()
        status = params.get("status", "").strip()
        state = params.get("state", "").strip()
        shown = {"q": q, "status": status, "state": state}
        problem = _search_problem(q, status, state)
        after = None
        if problem is None and params.get("cursor"):
            after = _uncursor("o", params["cursor"])
            if after is None:
                problem = Message(
                    "That page link is not one this site made; start the search again."
                )
        if problem is not None:
            return render(
                "orders.html",
                status=400,
                visitor=visitor,
                shown=shown,
                statuses=list(Status),
                states=STATES,
                error=problem,
                rows=[],
                next_url=None,
            )
        rows = await self._store.orders.page(
            status=status or None,
            state=state or None,
            q=q or None,
            after=after,
            limit=PAGE_SIZE + 1,
        )
        next_url = None
        if len(rows) > PAGE_SIZE:
            rows = rows[:PAGE_SIZE]
            kept = {k: v for k, v in shown.items() if v}
            next_url = "/orders?" + urllib.parse.urlencode(
                {**kept, "cursor": _cursor("o", rows[-1].order_id)}
            )
        return render(
            "orders.html",
            visitor=visitor,
            shown=shown,
            statuses=list(Status),
            states=STATES,
            error=None,
            rows=[(o, state_of(o)) for o in rows],
            next_url=next_url,
        )

    async def order(self, request: Request, visitor: Visitor) -> Response:
        """One order: its status since when, its timeline and each transition's deliveries."""
        raw = request.path_params["order_id"]
        try:
            order_id = validate_order_id(raw)
        except InvalidOrderId as exc:
            text = (
                str(exc) if len(raw) <= 80 else Message("invalid order id %(id)r", id=clip_id(raw))
            )
            raise HTTPException(400, text) from exc
        history = await self._store.reports.history(order_id)
        if history is None:
            raise HTTPException(
                404, Message("order %(id)s is not watched and never was", id=order_id)
            )
        data = history_json(history)
        latest = data["snapshots"][-1]["order"] if data["snapshots"] else {}
        visits = await self._store.stays.of_order(order_id)
        return render(
            "order.html",
            visitor=visitor,
            order=data,
            watched=history.order,
            since=_since(history),
            customer=latest.get("customer"),
            subscription=latest.get("subscription"),
            provider=latest.get("provider"),
            journey=journey_context(visits, utc_now()),
            timeline=timeline(history, data),
        )

    async def stuck(self, request: Request, visitor: Visitor) -> Response:
        """The orders stuck now, longest stay first: status, since when, for how long."""
        after = None
        if request.query_params.get("cursor"):
            position = _uncursor("s", request.query_params["cursor"])
            after = stuck_position(position) if position is not None else None
            if after is None:
                raise HTTPException(400, Message("that page link is not one this site made"))
        rows = await self._store.reports.stuck_orders(limit=PAGE_SIZE + 1, after=after)
        next_url = None
        if len(rows) > PAGE_SIZE:
            rows = rows[:PAGE_SIZE]
            last, since = rows[-1]
            next_url = "/stuck?" + urllib.parse.urlencode(
                {"cursor": _cursor("s", f"{since.isoformat()}|{last.order_id}")}
            )
        now = utc_now()
        thresholds = self._stuck()
        return render(
            "stuck.html",
            visitor=visitor,
            rows=[
                (order, since, span(now - since), span(thresholds.get(order.status or "")))
                for order, since in rows
            ],
            next_url=next_url,
        )


# -- helpers ---------------------------------------------------------------------------------


def _search_problem(q: str, status: str, state: str) -> str | None:
    """What is wrong with a search's fields, in words; ``None`` when nothing is."""
    if q and not SEARCH_PATTERN.fullmatch(q):
        return Message(
            "Search by the start of an order id, or a whole customer or subscription id: "
            "lower-case letters, digits and _ only (e.g. prdo_x83b, or a cus_… in full)."
        )
    if len(status) > MAX_STATUS:
        return Message("A status has at most %(n)s characters.", n=MAX_STATUS)
    if state and state not in STATES:
        return Message("The state is one of %(states)s.", states=", ".join(STATES))
    return None


def _since(history: History) -> datetime | None:
    """Since when the order has its status: the first of the latest run of equal snapshots."""
    since = None
    for snapshot in reversed(history.snapshots):
        if snapshot.status != history.order.status:
            break
        since = snapshot.observed_at
    return since


def _cursor(kind: str, position: str) -> str:
    """A cursor as the API makes them: the page's last key, which the next page starts after."""
    return base64.urlsafe_b64encode(f"{kind}:{position}".encode()).decode().rstrip("=")


def _uncursor(kind: str, value: str) -> str | None:
    """The position a cursor of ``kind`` holds, or ``None`` for one not made here."""
    try:
        text = base64.urlsafe_b64decode(value.encode("ascii") + b"==").decode("ascii")
    except (UnicodeError, binascii.Error, ValueError):
        return None
    found, _, position = text.partition(":")
    if found != kind or not position:
        return None
    if kind == "o":
        try:
            return validate_order_id(position)
        except InvalidOrderId:
            return None
    return position


def _local(target: str | None) -> str:
    """``target`` if it is a path on this site; else ``/`` (a login never sends you away)."""
    if not target or len(target) > MAX_NEXT or not target.startswith("/"):
        return "/"
    if target.startswith(("//", "/\\")) or not all("\x21" <= c <= "\x7e" for c in target):
        return "/"
    parts = urllib.parse.urlsplit(target)
    if parts.scheme or parts.netloc or "\\" in target:
        return "/"
    return target


def _to_login(request: Request) -> Response:
    """303 to ``/login``, coming back here after; a cookie that was refused is cleared."""
    here = request.scope.get("raw_path") or request.url.path.encode()
    query = request.scope.get("query_string", b"")
    target = here.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")
    response = RedirectResponse(
        "/login?" + urllib.parse.urlencode({"next": _local(target)}), status_code=303
    )
    if COOKIE in request.cookies:
        response.headers.append("set-cookie", _cookie("", request))
    return response


def _cookie(value: str, request: Request) -> str:
    """The session's Set-Cookie value; an empty ``value`` clears it."""
    age = int(SESSION_LIFETIME.total_seconds()) if value else 0
    parts = [f"{COOKIE}={value}", f"Max-Age={age}", "Path=/", "HttpOnly", "SameSite=Strict"]
    # Behind a TLS proxy the scheme is the proxy's word: believing it can only make the
    # cookie stricter (never sent over plain HTTP), never weaker.
    forwarded = request.headers.get("x-forwarded-proto", "").lower()
    if request.url.scheme == "https" or forwarded == "https":
        parts.append("Secure")
    return "; ".join(parts)


def _same_origin(request: Request) -> None:
    """403 unless a POST comes from a page of this host (or from no page at all: a script).

    ``Origin`` must name this host (the ``Host`` header, or the proxy's ``X-Forwarded-Host``:
    a cross-site form cannot set either); ``Sec-Fetch-Site`` must not say another site.
    """
    refused = HTTPException(403, Message("a request from another site is refused"))
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in {"same-origin", "none"}:
        log.warning("page_post_refused", reason="sec-fetch-site", path=request.url.path)
        raise refused
    origin = request.headers.get("origin")
    if origin is None:
        return
    hosts = {
        h.strip().lower()
        for h in (request.headers.get("host"), request.headers.get("x-forwarded-host"))
        if h
    }
    parts = urllib.parse.urlsplit(origin)
    if parts.scheme not in {"http", "https"} or parts.netloc.lower() not in hosts:
        log.warning("page_post_refused", reason="origin", path=request.url.path)
        raise refused


async def _form(request: Request) -> dict[str, str]:
    """The request's urlencoded form, at most :data:`MAX_FORM` bytes (413 past it)."""
    too_large = HTTPException(413, f"the form is larger than {MAX_FORM} bytes")
    body = await bounded_body(request, MAX_FORM, too_large)
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if body and kind != "application/x-www-form-urlencoded":
        raise HTTPException(415, "send the form as application/x-www-form-urlencoded")
    try:
        pairs = urllib.parse.parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FIELDS
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise HTTPException(400, "the form could not be read") from exc
    return dict(pairs)
