"""The exceptions the tracker raises.

Every error the tracker raises on purpose derives from :class:`TrackerError`::

    TrackerError
    ├── ConfigError             the configuration file or a command-line value is wrong (exit 2)
    │   └── InvalidOrderId      an order id is not ``prdo_`` + lower-case letters and digits
    ├── UpstreamError           one request to the Nomos API failed; ``kind`` says how
    │   ├── TransientError      5xx, timeout or dropped connection: retry with backoff
    │   │   └── RateLimited     429: every request pauses for ``retry_after``
    │   │       └── Paused      a one-shot command will not wait out a long pause
    │   ├── AuthFailed          401 after one token renewal, or 403
    │   ├── OrderNotFound       404 for the order id
    │   ├── RequestRejected     another 4xx: retrying the same request will not help
    │   └── MalformedAnswer     a 2xx whose body is not a valid meter order for the id asked
    ├── StoreError              the database is missing, unreachable or not migrated
    ├── Refused                 a request from outside is not taken: ``status`` and a reason
    │                           safe to log and answer (``/hooks/nomos``)
    ├── InvalidSignature        a Standard Webhooks signature does not match (receivers);
    │                           also a ``ValueError``
    └── BadRequest              a list request the provider would answer 400 (the simulator)

Third-party errors are wrapped with ``raise ... from exc`` so the cause stays visible. Errors
raised for a bug in the caller (a ``ValueError`` for a size below one) stay outside the tree.
"""

from __future__ import annotations


class TrackerError(Exception):
    """Root of every error the tracker raises on purpose."""


class ConfigError(TrackerError):
    """The configuration (file, environment or command line) is wrong; the message says how."""


class InvalidOrderId(ConfigError):
    """An order id does not have the documented shape."""


class StoreError(TrackerError):
    """The database cannot be used; the message says what to do."""


#: Characters of a failure's reason that are kept: it is logged and stored with the order, and
#: an answer can put anything into it (a 2 MB id, quoted back).
REASON_LIMIT = 300


def first_line(exc: BaseException) -> str:
    """The driver's own first line of a (database) failure, without SQLAlchemy's SQL and
    background link; the exception's type when it says nothing."""
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    return lines[0] if lines else type(cause).__name__


def clip(reason: str) -> str:
    """``reason`` cut to :data:`REASON_LIMIT` characters, marked where it was cut."""
    return reason if len(reason) <= REASON_LIMIT else reason[: REASON_LIMIT - 1] + "…"


class UpstreamError(TrackerError):
    """One request to the upstream failed."""

    #: Stable short name of the failure, stored as the order's ``last_error_kind``.
    kind = "upstream_error"

    def __init__(self, reason: str, *, request_id: str | None = None) -> None:
        reason = clip(reason)
        super().__init__(reason)
        self.reason = reason
        self.request_id = request_id


class TransientError(UpstreamError):
    """A failure that may pass: a 5xx answer, a timeout or a dropped connection."""

    kind = "transient"


class RateLimited(TransientError):
    """The upstream answered 429; every request waits ``retry_after`` seconds."""

    kind = "rate_limited"

    def __init__(self, reason: str, *, retry_after: float, request_id: str | None = None) -> None:
        super().__init__(reason, request_id=request_id)
        self.retry_after = retry_after


class Paused(RateLimited):
    """Every request is paused (a 429 or refused credentials) longer than a command will wait."""


class AuthFailed(UpstreamError):
    """The credentials were refused (401 after one renewal, or 403)."""

    kind = "auth_failed"


class OrderNotFound(UpstreamError):
    """The upstream does not know the order id (404)."""

    kind = "not_found"


class RequestRejected(UpstreamError):
    """Another 4xx answer: the request itself is wrong and retrying it will not help soon."""

    kind = "rejected"


class MalformedAnswer(UpstreamError):
    """A 2xx answer whose body is not a valid meter order for the requested id."""

    kind = "malformed"


class Refused(TrackerError):
    """Why a request from outside is not taken: the HTTP status and a reason safe to log and
    answer; ``retry_after`` seconds go into a ``Retry-After`` header when set."""

    def __init__(self, status: int, reason: str, retry_after: int | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after


class InvalidSignature(TrackerError, ValueError):
    """A webhook's signature does not match its body (or is too old)."""


class BadRequest(TrackerError):
    """A list request the provider would answer with 400; the message says why."""
