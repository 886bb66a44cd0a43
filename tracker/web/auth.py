"""Who is asking: the configured users' tokens, their sessions, and the throttle on guessing.

:class:`Users` holds the ``[[http.users]]`` in force and is swapped whole when ``tracker run``
reloads its configuration: a removed user or a changed token is refused at once (its sessions
end with it), a new token is accepted at once. Every failed bearer token or login counts
against the client's address (:class:`~tracker.web.throttle.Throttle`); past a few, the address
is answered 429 with ``Retry-After`` before its guess is checked, and the refusals are logged as
counts per interval, not one line each.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.requests import Request

from tracker.config import HttpUser
from tracker.store.logins import Logins
from tracker.web.sessions import Sessions
from tracker.web.throttle import Tally, Throttle


@dataclass(frozen=True, slots=True, kw_only=True)
class Caller:
    """Who sent a request: a configured user's name and role."""

    name: str
    role: str


class Tokens:
    """The configured users' tokens, checked in constant time.

    Each token is compared by its SHA-256 digest, so every comparison has the same length,
    and every user is compared whatever matched: a wrong token costs what a right one does.
    """

    def __init__(self, users: Sequence[HttpUser]) -> None:
        self._users = [
            (hashlib.sha256(u.token.get_secret_value().encode()).digest(), u) for u in users
        ]

    def check(self, token: str) -> Caller | None:
        """The user ``token`` belongs to, or ``None``."""
        given = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        found: HttpUser | None = None
        for digest, user in self._users:
            if hmac.compare_digest(given, digest) and found is None:
                found = user
        return Caller(name=found.name, role=found.role) if found is not None else None


class Users:
    """The users in force (tokens and session keys), the guessing throttle and its tally."""

    def __init__(
        self,
        users: Sequence[HttpUser] = (),
        *,
        logins: Logins | None = None,
        throttle: Throttle | None = None,
    ) -> None:
        self.throttle = throttle if throttle is not None else Throttle()
        self.refused = Tally("auth_refused")
        self.logins_refused = Tally("page_login_refused", level="info")
        self._logins = logins
        self._ending: set[asyncio.Task[int]] = set()
        self._set(users)

    def _set(self, users: Sequence[HttpUser]) -> None:
        self.tokens = Tokens(users)
        self.sessions = Sessions(users)
        self._tokens = {u.name: u.token.get_secret_value() for u in users}

    def replace(self, users: Sequence[HttpUser]) -> list[str]:
        """Put ``users`` in force; the names whose sessions ended (removed, or a new token).

        Their sessions are refused from now on (the cookies' signatures no longer match), and
        their rows are deleted in the background.
        """
        new = {u.name: u.token.get_secret_value() for u in users}
        ended = sorted(name for name, token in self._tokens.items() if new.get(name) != token)
        self._set(users)
        if ended and self._logins is not None:
            task = asyncio.get_running_loop().create_task(self._logins.end_users(ended))
            self._ending.add(task)
            task.add_done_callback(self._ending.discard)
        return ended

    def admit(self, request: Request) -> None:
        """429 with ``Retry-After`` when the client has failed too often of late."""
        client = client_of(request)
        wait = self.throttle.wait(client)
        if wait is not None:
            self.refused.add(client=client, reason="throttled", path=request.url.path)
            raise HTTPException(
                429,
                f"too many failed attempts from this address; retry in {wait} s",
                headers={"Retry-After": str(wait)},
            )

    def failed(self, request: Request, reason: str) -> None:
        """Count a failed token against the client and in the tally."""
        client = client_of(request)
        self.throttle.failed(client)
        tally = self.logins_refused if reason == "login" else self.refused
        tally.add(client=client, reason=reason, path=request.url.path)

    def bearer(self, request: Request) -> Caller | None:
        """The caller a bearer header names (``None`` without one); 401 or 429 for a wrong one."""
        header = request.headers.get("authorization")
        if header is None:
            return None
        self.admit(request)
        scheme, _, token = header.partition(" ")
        token = token.strip()
        caller = self.tokens.check(token) if scheme.lower() == "bearer" and token else None
        if caller is None:
            self.failed(request, "bearer")
            raise _unauthorized()
        return caller


def _unauthorized() -> HTTPException:
    """401 naming what to send, with ``WWW-Authenticate: Bearer``."""
    return HTTPException(
        401,
        "send Authorization: Bearer <token> with a token from [[http.users]]",
        headers={"WWW-Authenticate": "Bearer"},
    )


def client_of(request: Request) -> str:
    """The peer's address (what the throttle counts by)."""
    return request.client.host if request.client is not None else "unknown"


def authenticate(request: Request, users: Users, *, write: bool = False) -> Caller:
    """The caller of ``request``; 401 without a known bearer token, 429 after too many wrong
    ones, 403 for a read token on a write route."""
    caller = users.bearer(request)
    if caller is None:  # no guess made: nothing to count
        raise _unauthorized()
    if write and caller.role != "write":
        raise HTTPException(403, f"user {caller.name!r} has the read role; this needs write")
    return caller
