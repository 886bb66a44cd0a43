"""The support pages in English or German, their times in the configured zone.

The language of a page is, first to last: the visitor's own ``language`` in
``[[http.users]]``, ``[http] language`` unless it is ``auto``, the browser's
``Accept-Language`` (q-values weighed), English. The catalogs are gettext ``.po`` files under
``locale/`` beside this module, read once at start (no compiled ``.mo`` to keep in step).

Templates translate with ``{{ _("Text") }}``, ``{{ _("%(n)s orders", n=count) }}`` or
``{% trans %}…{% endtrans %}`` (Jinja2's ``i18n`` extension, new-style: values are escaped,
``%`` is written ``%%``). What a page needs to know of its visitor's language and zone travels
in a context variable: :class:`LocaleMiddleware` records the request's ``Accept-Language``,
:func:`rendering` holds the chosen :class:`PageLocale` while one template renders.
"""

from __future__ import annotations

import contextlib
import functools
import gettext as gettext_module
import importlib.resources
import io
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations
from starlette.types import ASGIApp, Receive, Scope, Send

from tracker.config import HttpSettings
from tracker.lifecycle import Status

#: The languages the pages are written in; the first is the fallback.
LANGUAGES = ("en", "de")
DEFAULT_LANGUAGE = LANGUAGES[0]
#: The gettext domain: ``locale/<language>/LC_MESSAGES/tracker.po``.
DOMAIN = "tracker"
#: Characters of ``Accept-Language`` read, and ranges weighed: browsers send a few dozen
#: characters; a longer header is someone else's, and costs no more than this to refuse.
MAX_ACCEPT = 512
MAX_RANGES = 32
#: The statuses' labels beside their API spelling (msgids of the catalogs).
STATUS_LABELS = {status.value: status.value.replace("_", " ") for status in Status}


def negotiate(header: str | None, available: tuple[str, ...] = LANGUAGES) -> str | None:
    """The language of ``available`` that ``header`` (``Accept-Language``) likes best.

    Ranges are weighed by their ``q`` (default 1; 0 refuses), the earlier first among equals; a
    range matches by its primary subtag (``de-AT`` is ``de``); ``*`` stands for any language not
    named. ``None`` when nothing offered is acceptable.
    """
    if not header:
        return None
    weighed: list[tuple[float, int, str]] = []
    for index, part in enumerate(header[:MAX_ACCEPT].split(",")[:MAX_RANGES]):
        tag, _, params = part.partition(";")
        primary = tag.strip().lower().partition("-")[0]
        quality = _quality(params)
        if primary and quality is not None:
            weighed.append((quality, index, primary))
    named = {primary for _q, _i, primary in weighed}
    refused = {primary for q, _i, primary in weighed if q == 0}
    for quality, _index, primary in sorted(weighed, key=lambda w: (-w[0], w[1])):
        if quality == 0:
            break
        if primary in available and primary not in refused:
            return primary
        if primary == "*":
            rest = [lang for lang in available if lang not in named]
            if rest:
                return rest[0]
    return None


def _quality(params: str) -> float | None:
    """The ``q`` of a range's parameters (1 when absent), ``None`` when it is no q-value."""
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                quality = float(value.strip())
            except ValueError:
                return None
            return quality if 0 <= quality <= 1 else None
    return 1.0


@functools.cache
def translations(language: str) -> gettext_module.NullTranslations:
    """The catalog of ``language`` (English: the msgids themselves)."""
    if language == DEFAULT_LANGUAGE:
        return gettext_module.NullTranslations()
    source = importlib.resources.files("tracker.web").joinpath(
        f"locale/{language}/LC_MESSAGES/{DOMAIN}.po"
    )
    with source.open("rb") as po:
        catalog = read_po(po, locale=language, domain=DOMAIN)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled, domain=DOMAIN)


@dataclass(frozen=True, slots=True, kw_only=True)
class PageLocale:
    """The language and zone one page is rendered in."""

    language: str = DEFAULT_LANGUAGE
    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))

    @property
    def catalog(self) -> gettext_module.NullTranslations:
        """The gettext catalog of :attr:`language`."""
        return translations(self.language)


class Localization:
    """``[http] language`` and ``timezone`` and the users' own languages, swapped on reload."""

    def __init__(
        self,
        language: str = "auto",
        timezone: str = "UTC",
        users: Mapping[str, str | None] | None = None,
    ) -> None:
        self._set(language, timezone, users or {})

    @classmethod
    def from_settings(cls, http: HttpSettings) -> Localization:
        """The localization ``[http]`` configures."""
        return cls(http.language, http.timezone, {u.name: u.language for u in http.users})

    def replace(self, http: HttpSettings) -> None:
        """Take a reloaded ``[http]``: the next page is rendered by it."""
        self._set(http.language, http.timezone, {u.name: u.language for u in http.users})

    def _set(self, language: str, timezone: str, users: Mapping[str, str | None]) -> None:
        self._language = language
        self._zone = ZoneInfo(timezone)
        self._users = dict(users)

    def choose(self, accept: str | None, user: str | None) -> PageLocale:
        """The locale of a page for ``user`` (``None``: not logged in) asking with ``accept``."""
        wanted = self._users.get(user) if user else None
        if wanted is None:
            wanted = self._language
        if wanted != "auto":
            return PageLocale(language=wanted, zone=self._zone)
        return PageLocale(language=negotiate(accept) or DEFAULT_LANGUAGE, zone=self._zone)


#: The request being answered: its ``Accept-Language`` and the localization in force.
_request: ContextVar[tuple[Localization, str | None] | None] = ContextVar(
    "tracker_page_request", default=None
)
#: The page being rendered.
_page: ContextVar[PageLocale | None] = ContextVar("tracker_page_locale", default=None)
#: Outside a page (a test, a helper called alone): English, UTC.
_PLAIN = PageLocale()


class LocaleMiddleware:
    """Records each request's ``Accept-Language`` for :func:`page_locale`."""

    def __init__(self, app: ASGIApp, *, localization: Localization) -> None:
        self._app = app
        self._localization = localization

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        accept = next(
            (v.decode("latin-1") for k, v in scope["headers"] if k == b"accept-language"), None
        )
        token = _request.set((self._localization, accept))
        try:
            await self._app(scope, receive, send)
        finally:
            _request.reset(token)


def page_locale(user: str | None) -> PageLocale:
    """The locale of the page answering the current request, for ``user``."""
    found = _request.get()
    if found is None:  # rendered outside a request (a test): English, UTC
        return _PLAIN
    localization, accept = found
    return localization.choose(accept, user)


@contextlib.contextmanager
def rendering(page: PageLocale) -> Iterator[PageLocale]:
    """Hold ``page`` as the locale of the templates rendered inside."""
    token = _page.set(page)
    try:
        yield page
    finally:
        _page.reset(token)


def current() -> PageLocale:
    """The locale of the page being rendered."""
    return _page.get() or _PLAIN


def gettext(message: str) -> str:
    """``message`` in the language of the page being rendered."""
    return current().catalog.gettext(message)


def ngettext(singular: str, plural: str, count: int) -> str:
    """``singular`` or ``plural`` by ``count``, in the language of the page being rendered."""
    return current().catalog.ngettext(singular, plural, count)


def status_label(status: str | None) -> str | None:
    """A documented status's name in the page's language, ``None`` where it reads as the API's
    spelling already (English) or is not documented."""
    label = STATUS_LABELS.get(status or "")
    if label is None:
        return None
    translated = gettext(label)
    return translated if translated != label else None


def local_text(moment: datetime | None) -> str:
    """``2026-11-30 11:20:05 CET`` in the page's zone, or ``-``."""
    if moment is None:
        return "-"
    return moment.astimezone(current().zone).strftime("%Y-%m-%d %H:%M:%S %Z")


def zone_name() -> str:
    """The page's zone as configured: ``UTC``, ``Europe/Berlin``."""
    return current().zone.key


def ago_text(moment: datetime | None, now: datetime) -> str:
    """How long before ``now``: ``just now``, ``5 min ago``, ``3 h ago``, ``2 days ago``."""
    if moment is None:
        return ""
    seconds = (now.astimezone(UTC) - moment.astimezone(UTC)).total_seconds()
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 60:
        return gettext("in under a minute") if future else gettext("just now")
    if seconds >= 86400:
        days = int(seconds // 86400)
        if future:
            return ngettext("in %(num)d day", "in %(num)d days", days) % {"num": days}
        return ngettext("%(num)d day ago", "%(num)d days ago", days) % {"num": days}
    count = int(seconds // 3600) if seconds >= 3600 else int(seconds // 60)
    if seconds >= 3600:
        said = gettext("in %(num)d h") if future else gettext("%(num)d h ago")
    else:
        said = gettext("in %(num)d min") if future else gettext("%(num)d min ago")
    return said % {"num": count}
