"""The support pages' browser sessions: signed cookies and the CSRF tokens bound to them.

A session cookie is ``base64url(name "|" expiry "|" id) "." base64url(HMAC-SHA256)``, keyed by
a key derived from the user's token; ``id`` is random. The signature proves the cookie was
issued for that user's current token, so changing (revoking) a token or removing the user ends
that user's sessions; the role is read from the configuration at each request. The server also
remembers each session by a digest of its id (``tracker.store.logins``), and honours a cookie
only while it does: a logout ends every copy of the cookie, on every process sharing the
database. Pure: standard library only (and the settings type), no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from tracker.config import HttpUser

#: How long a login lasts: a working day, so a support shift logs in once and a stolen cookie
#: is useless by the next morning.
SESSION_LIFETIME = timedelta(hours=12)
#: The cookie's name.
COOKIE = "tracker_session"
#: The fixed label the session keys are derived with: another use of the same token (the API's
#: bearer check hashes it bare) never yields the same key.
_KEY_LABEL = b"meter-order-tracker session v1\x00"
#: What a CSRF token signs besides the session, so that a session value is never a valid token.
_CSRF_LABEL = b"csrf\x00"
#: Longer cookies are not ours (a name of 64 characters and an expiry fit well below this).
MAX_COOKIE = 512


@dataclass(frozen=True, slots=True, kw_only=True)
class Session:
    """A verified session: who, with which role, until when, and the cookie's value."""

    name: str
    role: str
    expires: datetime
    value: str
    #: What the server remembers the session by: SHA-256 (hex) of the cookie's random id.
    digest: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text.encode("ascii") + b"=" * (-len(text) % 4))


class Sessions:
    """Issues and verifies session cookies and CSRF tokens for the configured users."""

    def __init__(self, users: Sequence[HttpUser]) -> None:
        self._users = {
            user.name: (
                user,
                hashlib.sha256(_KEY_LABEL + user.token.get_secret_value().encode()).digest(),
            )
            for user in users
        }

    def issue(self, name: str, now: datetime) -> Session:
        """A new session for the configured user ``name``, valid for :data:`SESSION_LIFETIME`."""
        user, key = self._users[name]
        expires = now + SESSION_LIFETIME
        sid = secrets.token_urlsafe(24)
        payload = _b64(f"{name}|{int(expires.timestamp())}|{sid}".encode())
        value = f"{payload}.{_sign(key, payload.encode())}"
        return Session(name=name, role=user.role, expires=expires, value=value, digest=_digest(sid))

    def verify(self, value: str, now: datetime) -> Session | None:
        """The session ``value`` holds if it is signed for a configured user and unexpired."""
        if not value or len(value) > MAX_COOKIE or not value.isascii():
            return None
        payload, dot, signature = value.partition(".")
        try:
            name, bar, rest = _unb64(payload).decode("utf-8").partition("|")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
        stamp, bar_again, sid = rest.partition("|")
        found = self._users.get(name)
        if not dot or not bar or not bar_again or not sid or found is None:
            return None
        user, key = found
        if not hmac.compare_digest(_sign(key, payload.encode()), signature):
            return None
        if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 11):
            return None
        expires = datetime.fromtimestamp(int(stamp), tz=now.tzinfo)  # 11 digits: before 5138
        # A signed expiry further out than one lifetime was not issued by this version.
        if not now < expires <= now + SESSION_LIFETIME:
            return None
        return Session(name=name, role=user.role, expires=expires, value=value, digest=_digest(sid))

    def csrf(self, session: Session) -> str:
        """The CSRF token of the forms shown within ``session``."""
        _user, key = self._users[session.name]
        return _sign(key, _CSRF_LABEL + session.value.encode())

    def csrf_matches(self, session: Session, token: str) -> bool:
        """Whether ``token`` is ``session``'s CSRF token (compared in constant time)."""
        return hmac.compare_digest(self.csrf(session).encode(), token.encode("utf-8", "replace"))


def _digest(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


def _sign(key: bytes, message: bytes) -> str:
    return _b64(hmac.new(key, message, hashlib.sha256).digest())
