"""The support pages' session cookies and CSRF tokens, without a server."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest

from tracker.config import HttpUser
from tracker.web.sessions import SESSION_LIFETIME, Sessions

NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)
READ = HttpUser(name="support-ui", token="read-token-7f3a9c2e5b1d8f4a", role="read")  # type: ignore[arg-type]
WRITE = HttpUser(name="ops-bot", token="write-token-2b8e6d4c1a9f7e3b", role="write")  # type: ignore[arg-type]


def signed(user: HttpUser, text: str) -> str:
    """A cookie for ``text`` signed the way the module signs, with ``user``'s key."""
    payload = base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")
    key = hashlib.sha256(
        b"meter-order-tracker session v1\x00" + user.token.get_secret_value().encode()
    ).digest()
    mac = hmac.new(key, payload.encode(), hashlib.sha256).digest()
    return f"{payload}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"


class TestCookies:
    """A cookie names a configured user, carries a signed expiry and holds no secret."""

    def test_issued_cookie_verifies_until_it_expires(self) -> None:
        """An issued cookie holds no token and verifies with the user's role until it expires."""
        sessions = Sessions([READ, WRITE])
        session = sessions.issue("support-ui", NOW)
        assert READ.token.get_secret_value() not in session.value
        assert session.expires == NOW + SESSION_LIFETIME
        found = sessions.verify(session.value, NOW + timedelta(hours=11))
        assert found is not None
        assert (found.name, found.role) == ("support-ui", "read")
        assert sessions.verify(session.value, NOW + SESSION_LIFETIME) is None

    def test_the_role_is_read_from_the_configuration(self) -> None:
        """A verified cookie takes the user's role from the current configuration."""
        value = Sessions([READ]).issue("support-ui", NOW).value
        promoted = HttpUser(name="support-ui", token=READ.token, role="write")
        found = Sessions([promoted]).verify(value, NOW)
        assert found is not None
        assert found.role == "write"

    @pytest.mark.parametrize(
        "text",
        [
            "support-ui|" + str(int((NOW + timedelta(days=30)).timestamp())) + "|s1",  # too far
            "support-ui|" + str(int((NOW - timedelta(seconds=1)).timestamp())) + "|s1",  # expired
            "support-ui|99999999999999999999|s1",
            "support-ui|-5|s1",
            "support-ui",
            "support-ui|" + str(int((NOW + timedelta(hours=1)).timestamp())),  # no id
            "support-ui|" + str(int((NOW + timedelta(hours=1)).timestamp())) + "|",  # empty id
            "nobody|" + str(int((NOW + timedelta(hours=1)).timestamp())) + "|s1",
        ],
    )
    def test_signed_but_unfit_values_are_refused(self, text: str) -> None:
        """A validly signed value that does not fit the format is refused."""
        assert Sessions([READ]).verify(signed(READ, text), NOW) is None

    def test_a_value_signed_with_another_users_key_is_refused(self) -> None:
        """A value signed with another user's key is refused."""
        text = "ops-bot|" + str(int((NOW + timedelta(hours=1)).timestamp())) + "|s1"
        sessions = Sessions([READ, WRITE])
        assert sessions.verify(signed(WRITE, text), NOW) is not None
        assert sessions.verify(signed(READ, text), NOW) is None

    @pytest.mark.parametrize("value", ["", ".", "ü.x", "a" * 600, "%%%.%%%", "e30.e30"])
    def test_garbage_is_refused(self, value: str) -> None:
        """A value that is not a cookie at all is refused."""
        assert Sessions([READ]).verify(value, NOW) is None


class TestCsrf:
    """A CSRF token belongs to one session and is not the session's own signature."""

    def test_tokens_are_bound_to_their_session(self) -> None:
        """A CSRF token matches its own session only, and never the cookie's signature."""
        sessions = Sessions([READ, WRITE])
        first = sessions.issue("support-ui", NOW)
        second = sessions.issue("support-ui", NOW + timedelta(seconds=1))
        token = sessions.csrf(first)
        assert sessions.csrf_matches(first, token)
        assert not sessions.csrf_matches(second, token)
        assert not sessions.csrf_matches(first, first.value.split(".")[1])
        assert not sessions.csrf_matches(first, "")
        assert not sessions.csrf_matches(first, "ü" + token)
