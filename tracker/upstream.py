"""The Nomos API client: version pin, authentication, pacing, and errors as typed exceptions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import structlog

from tracker.config import UpstreamSettings
from tracker.errors import (
    AuthFailed,
    ConfigError,
    MalformedAnswer,
    OrderNotFound,
    RateLimited,
    RequestRejected,
    TransientError,
    UpstreamError,
)
from tracker.model import MeterOrder, parse_json, validate_order_id
from tracker.pacing import Pacer
from tracker.telemetry import SILENT, Telemetry
from tracker.text import one_line, retry_after

log = structlog.get_logger("tracker.upstream")

DEFAULT_RETRY_AFTER = 30.0
#: Renew an OAuth token this long before it expires.
RENEW_MARGIN = 120.0
#: After credentials are refused, every request waits this long (doubling up to the cap).
AUTH_PAUSE, AUTH_PAUSE_CAP = 60.0, 3600.0
#: Orders per list page: the most the upstream answers with.
PAGE_SIZE = 100
#: The longest wait a ``ratelimit-reset`` answer may set (a larger one is read as this).
MAX_RESET = 60.0
#: A ``ratelimit-reset`` above this is a Unix time rather than seconds from now.
EPOCH_SECONDS = 1e9
#: Bytes of an error answer read for its code and message; the rest is not read.
ERROR_BODY_LIMIT = 64 * 1024


class Exchange:
    """One request and its answer, bounded in time and size.

    httpx's timeout bounds each read, so a peer that drips its answer a byte at a time keeps
    a request alive indefinitely; here the whole exchange (connect, send, every read) ends
    within ``deadline`` seconds. A body longer than ``max_body`` is not read: ``body`` is
    then ``None``. Transport failures and the deadline become :class:`TransientError`.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        deadline: float,
        max_body: int,
        telemetry: Telemetry = SILENT,
    ) -> None:
        self._http = http
        self._deadline = deadline
        #: Bytes a successful answer may have.
        self.max_body = max_body
        self._telemetry = telemetry

    async def __call__(
        self, method: str, path: str, *, answered: Callable[[], None], **kwargs: Any
    ) -> tuple[httpx.Response, bytes | None]:
        """Send the request and read the answer's body (``None`` when over the limit).

        ``answered`` is called when the answer's head has arrived (see :meth:`Pacer.slot`).
        The exchange is reported to telemetry with its status (none without an answer) and
        its whole duration, body included.
        """
        started = time.perf_counter()
        code: int | None = None
        try:
            async with (
                asyncio.timeout(self._deadline),
                self._http.stream(method, path, **kwargs) as response,
            ):
                answered()
                limit = self.max_body if response.is_success else ERROR_BODY_LIMIT
                body = await _read(response, limit)
                code = response.status_code
                return response, body
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise TransientError(f"timed out after {self._deadline:g} s") from exc
        except httpx.TransportError as exc:
            raise TransientError(f"connection failed: {_describe(exc)}") from exc
        finally:
            self._telemetry.requested(code, time.perf_counter() - started)


async def _read(response: httpx.Response, limit: int) -> bytes | None:
    """The body if it has at most ``limit`` bytes; ``None`` (and the rest unread) if not.

    The body is read as it came, never inflated: requests ask for ``identity``, and an answer
    compressed anyway fails to parse, where inflating it could turn 50 KB into 50 MB.
    """
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_raw():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


class Credentials(Protocol):
    """Something that yields the ``Authorization`` header value for a request."""

    async def header(self) -> str:
        """The current header value, renewing the token first when it is due."""
        ...

    async def renew(self, refused: str) -> None:
        """The upstream refused ``refused``: get a new token unless that already happened."""
        ...


class StaticToken:
    """A long-lived bearer token from the configuration; it cannot be renewed."""

    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    async def header(self) -> str:
        """The configured token."""
        return self._header

    async def renew(self, refused: str) -> None:
        """Nothing to renew: a static token stays what it is."""


class ClientCredentials:
    """OAuth2 client credentials: ``POST /oauth/token`` with Basic auth, renewed before expiry."""

    def __init__(
        self, *, exchange: Exchange, pacer: Pacer, client_id: str, client_secret: str
    ) -> None:
        self._exchange = exchange
        self._pacer = pacer
        self._auth = httpx.BasicAuth(client_id, client_secret)
        self._header: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    async def header(self) -> str:
        """The current access token, fetched or renewed when missing or about to expire."""
        if self._header is None or time.monotonic() >= self._expires:
            async with self._lock:
                if self._header is None or time.monotonic() >= self._expires:
                    await self._fetch()
        assert self._header is not None  # noqa: S101 - _fetch sets it or raises
        return self._header

    async def renew(self, refused: str) -> None:
        """Fetch a new token unless another request already replaced the refused one."""
        async with self._lock:
            if self._header == refused:
                await self._fetch()

    async def _fetch(self) -> None:
        async with self._pacer.slot() as answered:
            try:
                response, body = await self._exchange(
                    "POST",
                    "/oauth/token",
                    answered=answered,
                    auth=self._auth,
                    data={"grant_type": "client_credentials"},
                )
            except TransientError as exc:
                raise TransientError(f"token request failed: {exc.reason}") from exc
        if response.status_code in {401, 403}:
            raise AuthFailed(
                f"token request refused with {response.status_code}: check client_id and "
                "client_secret",
                request_id=_request_id(response, _error_body(body)),
            )
        _raise_for_status(response, body)
        try:
            answer = parse_json(body or b"")
            token, lifetime = answer["access_token"], float(answer.get("expires_in", 3600))
        except (MalformedAnswer, ValueError, KeyError, TypeError) as exc:
            raise MalformedAnswer("token answer lacks access_token") from exc
        self._header = f"Bearer {token}"
        self._expires = time.monotonic() + max(lifetime - RENEW_MARGIN, lifetime / 2)
        log.info("upstream_token_renewed", expires_in=lifetime)


@dataclass(frozen=True, slots=True, kw_only=True)
class ListPage:
    """One page of ``GET /meter-orders``: its orders, and the cursor of the next one."""

    items: tuple[MeterOrder, ...]
    #: Pass back as ``cursor`` for the next page; ``None`` on the last page.
    next_page: str | None
    request_id: str | None = None
    #: Items that are meter orders, but malformed ones (a field missing, too long, holding a
    #: control character): the order's id and why. They are not in ``items``.
    refused: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, body: bytes, *, request_id: str | None = None) -> ListPage:
        """A list answer, strictly, or :class:`MalformedAnswer` saying what is wrong.

        A page whose shape is wrong, or that holds an item which is not a meter order with a
        valid id, is refused whole; a meter order item whose fields are malformed goes to
        ``refused`` alone, so that one order's bad answer cannot hide the others'.
        """
        data = parse_json(body)
        if not isinstance(data, dict) or data.get("object") != "list":
            kind = data.get("object") if isinstance(data, dict) else type(data).__name__
            raise MalformedAnswer(f"a list page is {kind!r}, not a 'list' object")
        items, has_more, next_page = data.get("items"), data.get("has_more"), data.get("next_page")
        if not isinstance(items, list):
            raise MalformedAnswer("a list page has no 'items' array")
        if not isinstance(has_more, bool):
            raise MalformedAnswer("a list page lacks 'has_more' (true or false)")
        if has_more and (not isinstance(next_page, str) or not next_page):
            raise MalformedAnswer("a list page says has_more but gives no 'next_page' cursor")
        if len(items) > PAGE_SIZE:
            raise MalformedAnswer(f"a list page holds {len(items)} items, more than {PAGE_SIZE}")
        orders: list[MeterOrder] = []
        refused: dict[str, str] = {}
        for item in items:
            order_id = MeterOrder.item_id(item)
            try:
                orders.append(MeterOrder.from_item(item))
            except MalformedAnswer as exc:
                refused[order_id] = exc.reason
        return cls(
            items=tuple(orders),
            next_page=next_page if has_more else None,
            request_id=request_id,
            refused=refused,
        )


class NomosClient:
    """``GET /meter-orders/{id}`` with the version pinned, paced and parsed strictly."""

    def __init__(self, *, exchange: Exchange, pacer: Pacer, credentials: Credentials) -> None:
        self._exchange = exchange
        self._pacer = pacer
        self._credentials = credentials
        self._auth_pause = AUTH_PAUSE

    @property
    def pacer(self) -> Pacer:
        """The pace every request keeps: shared budget, pauses."""
        return self._pacer

    async def fetch(
        self, order_id: str, *, started: Callable[[], None] | None = None
    ) -> MeterOrder:
        """Fetch and parse one meter order, or raise an :class:`UpstreamError` subclass.

        ``started`` is called when the pace admits the request (how late a poll began).
        """
        path = f"/meter-orders/{validate_order_id(order_id)}"
        response, body = await self._call(path, started=started)
        try:
            return MeterOrder.from_json(body, expected_id=order_id)
        except MalformedAnswer as exc:
            exc.request_id = _request_id(response, _error_body(body))
            raise

    async def list_page(self, filters: Mapping[str, str], cursor: str | None = None) -> ListPage:
        """One page (``PAGE_SIZE`` orders at most) of ``GET /meter-orders`` with ``filters``
        (e.g. ``{"filter[customer][in]": "cus_a,cus_b"}``), after ``cursor``.

        Raises :class:`MalformedAnswer` (with the ``requestId``) for a page that is not a list
        object, lacks ``has_more``, or holds an item that is not a meter order: nothing of such
        a page may be used. A meter order item with malformed fields is in ``refused`` alone.
        Whether the upstream applied the filters is the caller's to check.
        """
        params = {"limit": str(PAGE_SIZE), **filters}
        if cursor is not None:
            params["cursor"] = cursor
        # A refusal of the list alone (a token allowed orders by id, not lists) must not pause
        # the polls by id: the caller turns to them instead.
        response, body = await self._call("/meter-orders", params=params, pause_refused=False)
        try:
            return ListPage.parse(body, request_id=_request_id(response, {}))
        except MalformedAnswer as exc:
            exc.request_id = _request_id(response, _error_body(body))
            raise

    async def _call(
        self,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        started: Callable[[], None] | None = None,
        pause_refused: bool = True,
    ) -> tuple[httpx.Response, bytes]:
        """GET ``path`` within the pace, renewing the token once on a 401; a successful answer
        and its body, or an :class:`UpstreamError` (a 429 pauses every request; so do refused
        credentials, with ``pause_refused``)."""
        try:
            header = await self._credentials.header()
            response, body = await self._get(path, header, started, params)
            if response.status_code == 401:
                await self._credentials.renew(header)
                header = await self._credentials.header()
                response, body = await self._get(path, header, None, params)
            _raise_for_status(response, body)
        except RateLimited as exc:
            self._pacer.pause(exc.retry_after)
            raise
        except AuthFailed:
            if pause_refused:
                self._pacer.pause(self._auth_pause)
                self._auth_pause = min(self._auth_pause * 2, AUTH_PAUSE_CAP)
            raise
        self._auth_pause = AUTH_PAUSE
        if body is None:
            raise MalformedAnswer(
                f"answer larger than {self._exchange.max_body} bytes; not read, not stored",
                request_id=_request_id(response, {}),
            )
        return response, body

    async def _get(
        self,
        path: str,
        authorization: str,
        started: Callable[[], None] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> tuple[httpx.Response, bytes | None]:
        async with self._pacer.slot() as answered:
            if started is not None:
                started()
            response, body = await self._exchange(
                "GET",
                path,
                answered=answered,
                headers={"Authorization": authorization},
                params=params,
            )
            self._heed(response)  # before the slot is free: the next request sees the pause
        return response, body

    def _heed(self, response: httpx.Response) -> None:
        """Slow down before a 429: when the upstream says the budget of its current window is
        spent (``ratelimit-remaining`` no more than the requests this pacer has in flight),
        hold every request until the window resets (``ratelimit-reset``)."""
        remaining = _number(response.headers.get("ratelimit-remaining"))
        if remaining is None or response.status_code == 429:
            return
        if remaining <= self._pacer.in_flight:
            reset = _number(response.headers.get("ratelimit-reset"))
            if reset is not None and reset > EPOCH_SECONDS:  # a moment, not a delay
                reset = max(reset - time.time(), 0.0)
            wait = min(reset, MAX_RESET) if reset is not None else 1.0
            if wait > 0 and self._pacer.paused_for() < wait:
                log.info("upstream_budget_spent", remaining=int(remaining), pause=wait)
                self._pacer.pause(wait)


def build_client(
    settings: UpstreamSettings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    patience: float | None = None,
    telemetry: Telemetry = SILENT,
) -> tuple[NomosClient, httpx.AsyncClient]:
    """Wire a :class:`NomosClient` from settings; the caller closes the returned httpx client.

    ``patience``: the longest pause (429, refused credentials) a request waits out; ``None``
    waits any pause (the daemon).
    """
    timeout = settings.timeout.total_seconds()
    http = httpx.AsyncClient(
        base_url=settings.base_url,
        headers={
            "X-API-Version": settings.api_version,
            "Accept": "application/json",
            "Accept-Encoding": "identity",
        },
        timeout=httpx.Timeout(timeout),
        limits=httpx.Limits(
            max_connections=settings.max_concurrency,
            max_keepalive_connections=settings.max_concurrency,
        ),
        transport=transport,
        trust_env=False,
    )
    pacer = Pacer(settings.requests_per_second, settings.max_concurrency, patience=patience)
    exchange = Exchange(http, deadline=timeout, max_body=settings.max_body, telemetry=telemetry)
    credentials: Credentials
    if settings.token is not None:
        credentials = StaticToken(settings.token.get_secret_value())
    elif settings.client_id is not None and settings.client_secret is not None:
        credentials = ClientCredentials(
            exchange=exchange,
            pacer=pacer,
            client_id=settings.client_id,
            client_secret=settings.client_secret.get_secret_value(),
        )
    else:
        raise ConfigError(
            "upstream.token: no credentials; set token, or client_id and client_secret"
        )
    return NomosClient(exchange=exchange, pacer=pacer, credentials=credentials), http


def _raise_for_status(response: httpx.Response, raw: bytes | None) -> None:
    status = response.status_code
    if 200 <= status < 300:
        return
    body = _error_body(raw)
    request_id = _request_id(response, body)
    message = body.get("message")
    detail = f"HTTP {status}"
    if isinstance(message, str):
        detail += " " + one_line(f"{body.get('code', '')}: {message}", limit=200)
    if status == 429:
        raise RateLimited(detail, retry_after=_retry_after(response), request_id=request_id)
    if status >= 500:
        raise TransientError(detail, request_id=request_id)
    if status in {401, 403}:
        raise AuthFailed(f"{detail}: the upstream refused the credentials", request_id=request_id)
    if status == 404:
        raise OrderNotFound(
            f"{detail}: the upstream does not know this order", request_id=request_id
        )
    raise RequestRejected(detail, request_id=request_id)


def _error_body(raw: bytes | None) -> dict[str, Any]:
    """The provider's error object (``code``, ``message``, ``requestId``), or ``{}``."""
    try:
        body = parse_json(raw or b"")
    except MalformedAnswer:
        return {}
    return body if isinstance(body, dict) else {}


def _request_id(response: httpx.Response, body: dict[str, Any]) -> str | None:
    value = body.get("requestId")
    found = value if isinstance(value, str) else response.headers.get("x-request-id")
    return one_line(found, limit=100) if found else None


def _retry_after(response: httpx.Response) -> float:
    seconds = retry_after(response.headers.get("retry-after"))
    return DEFAULT_RETRY_AFTER if seconds is None else seconds


def _number(value: str | None) -> float | None:
    """A header's non-negative number, or ``None`` when absent or not one."""
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and 0 <= number < 1e12 else None


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}".rstrip(": ")


__all__ = ["ClientCredentials", "NomosClient", "StaticToken", "UpstreamError", "build_client"]
