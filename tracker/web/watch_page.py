"""Watching from the pages (write role): one order from its page, many from ``/watch``.

``/watch`` takes pasted ids (one a line) or an uploaded CSV file with an id column (found by
its header, ``id`` or ``meter_order_id``, or without a header the first column). Each line whose
id is malformed is reported with its number; the good ids are watched as ``tracker watch add``
watches them (``Orders.watch``), and the page says how many were new and how many already
watched, in the command's words.
"""

from __future__ import annotations

import csv
import email.parser
import email.policy
import io
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field

import structlog
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute

from tracker.clock import utc_now
from tracker.errors import InvalidOrderId
from tracker.model import ORDER_ID, validate_order_id
from tracker.store import Store
from tracker.web.bodies import bounded_body
from tracker.web.pages import MAX_FIELDS, Guard, PageRoute, Visitor, _form, render

log = structlog.get_logger("tracker.web")

#: Bytes one paste or upload may have: ten thousand ids with a few columns beside each.
MAX_UPLOAD = 1024 * 1024
#: Ids one paste or upload may watch: as many as one ``POST /api/v1/orders``.
MAX_IDS = 10_000
#: Lines the page lists as refused (the count says how many more there were).
BAD_SHOWN = 100
#: Header names of the id column.
ID_HEADERS = ("id", "meter_order_id")
#: Characters of a refused line the page shows.
SHOWN_CHARS = 80


@dataclass(slots=True)
class IdList:
    """The ids read from a paste or an upload: the good ones, and each refused line."""

    ids: list[str] = field(default_factory=list)
    #: (line number, the line's value, why it was refused)
    bad: list[tuple[int, str, str]] = field(default_factory=list)


def pasted_ids(text: str) -> IdList:
    """One id a line; blank lines and ``#`` comments are skipped."""
    found = IdList()
    for number, line in enumerate(text.splitlines(), start=1):
        value = line.strip()
        if value and not value.startswith("#"):
            _take(found, number, value)
    return found


def csv_ids(text: str) -> IdList:
    """The id column of a CSV file: named ``id`` or ``meter_order_id`` in a header row, or
    without one (a first row whose first cell is an order id) the first column."""
    found = IdList()
    reader = csv.reader(io.StringIO(text))
    column = 0
    try:
        for number, row in enumerate(reader, start=1):
            cells = [cell.strip() for cell in row]
            if number == 1 and not (cells and ORDER_ID.fullmatch(cells[0])):
                names = [cell.lower() for cell in cells]
                header = next((names.index(n) for n in ID_HEADERS if n in names), None)
                if header is not None:
                    column = header
                    continue
            if not any(cells):
                continue
            value = cells[column] if column < len(cells) else ""
            _take(found, reader.line_num, value)
    except csv.Error as exc:
        found.bad.append((reader.line_num, "", f"not CSV: {exc}"))
    return found


def _take(found: IdList, number: int, value: str) -> None:
    try:
        found.ids.append(validate_order_id(value))
    except InvalidOrderId:
        why = "no id in the id column" if not value else "not an order id (prdo_ and a-z, 0-9)"
        found.bad.append((number, value[:SHOWN_CHARS], why))


def watch_routes(*, store: Store, guard: Guard) -> list[BaseRoute]:
    """``/watch`` (a page and its form) and watching or not one order from its page."""
    pages = _Watching(store)
    return [
        PageRoute("/watch", guard(pages.watch, form=upload_form), methods=["GET", "POST"]),
        PageRoute("/orders/{order_id}/watch", guard(pages.one), methods=["POST"]),
        PageRoute("/orders/{order_id}/unwatch", guard(pages.one), methods=["POST"]),
    ]


async def upload_form(request: Request) -> Mapping[str, str]:
    """The fields of ``/watch``'s form, urlencoded or ``multipart/form-data`` (a file's text
    among them, under its field's name), at most :data:`MAX_UPLOAD` bytes (413 past it); kept
    on the request for the handler to read."""
    kind = request.headers.get("content-type", "")
    if not kind.lower().startswith("multipart/form-data"):
        fields = await _form(request)
    else:
        too_large = HTTPException(
            413, f"the upload is larger than {MAX_UPLOAD // 1024} KiB; split it into smaller files"
        )
        body = await bounded_body(request, MAX_UPLOAD, too_large)
        fields = _multipart(kind, body)
    request.state.form = fields
    return fields


def _multipart(kind: str, body: bytes) -> dict[str, str]:
    """A ``multipart/form-data`` body's fields as text (UTF-8); 400 when it is not one."""
    head = f"Content-Type: {kind}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1", "replace")
    parser = email.parser.BytesParser(policy=email.policy.HTTP)
    message = parser.parsebytes(head + body)
    if not message.is_multipart():
        raise HTTPException(400, "the form could not be read; send it from the /watch page")
    fields: dict[str, str] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str) or len(fields) >= MAX_FIELDS:
            raise HTTPException(400, "the form could not be read; send it from the /watch page")
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        try:
            fields[name] = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise HTTPException(
                400, f"the {name} field is not UTF-8 text; save the file as CSV (UTF-8)"
            ) from None
    return fields


class _Watching:
    """The watch pages' endpoints."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def watch(self, request: Request, visitor: Visitor) -> Response:
        """GET: the form; POST: the ids pasted or uploaded watched, refused lines listed."""
        if request.method != "POST":
            return render("watch.html", visitor=visitor, result=None, pasted="", error=None)
        if not visitor.writes:
            raise HTTPException(403, f"user {visitor.name!r} has the read role; this needs write")
        fields: Mapping[str, str] = request.state.form
        pasted, uploaded = fields.get("ids", ""), fields.get("file", "")
        if pasted.strip() and uploaded.strip():
            return _again(visitor, pasted, "Paste ids or upload a file, not both at once.")
        if not pasted.strip() and not uploaded.strip():
            return _again(visitor, pasted, "Paste at least one order id, or choose a CSV file.")
        found = csv_ids(uploaded) if uploaded.strip() else pasted_ids(pasted)
        if len(found.ids) > MAX_IDS:
            return _again(
                visitor, "", f"At most {MAX_IDS} ids at once ({len(found.ids)} given); split them."
            )
        added = await self._store.orders.watch(found.ids, source="page", now=utc_now())
        if found.ids:
            log.info("page_write", user=visitor.name, action="watch", ids=found.ids, added=added)
        result = {
            "new": len(added),
            "already": len(found.ids) - len(added),
            "bad": found.bad[:BAD_SHOWN],
            "bad_count": len(found.bad),
            "source": "the uploaded file" if uploaded.strip() else "the pasted lines",
        }
        status = 200 if not found.bad else 422
        return render(
            "watch.html", status=status, visitor=visitor, result=result, pasted="", error=None
        )

    async def one(self, request: Request, visitor: Visitor) -> Response:
        """Watch or stop watching the order of the path, then back to its page."""
        if not visitor.writes:
            raise HTTPException(403, f"user {visitor.name!r} has the read role; this needs write")
        raw = request.path_params["order_id"]
        try:
            order_id = validate_order_id(raw)
        except InvalidOrderId:
            raise HTTPException(400, f"invalid order id {raw[:SHOWN_CHARS]!r}") from None
        now = utc_now()
        if request.url.path.endswith("/unwatch"):
            if await self._store.orders.get(order_id) is None:
                raise HTTPException(404, f"order {order_id} is not watched and never was")
            done = await self._store.orders.unwatch([order_id], now=now)
            log.info(
                "page_write", user=visitor.name, action="unwatch", ids=[order_id], removed=done
            )
        else:
            done = await self._store.orders.watch([order_id], source="page", now=now)
            log.info("page_write", user=visitor.name, action="watch", ids=[order_id], added=done)
        return RedirectResponse(f"/orders/{urllib.parse.quote(order_id)}", status_code=303)


def _again(visitor: Visitor, pasted: str, error: str) -> Response:
    """The form again, with what was pasted and what is wrong (400)."""
    return render(
        "watch.html", status=400, visitor=visitor, result=None, pasted=pasted, error=error
    )
