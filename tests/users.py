"""The HTTP users and the dead sink the page and API tests share."""

from __future__ import annotations

READ_TOKEN = "read-token-7f3a9c2e5b1d8f4a"
WRITE_TOKEN = "write-token-2b8e6d4c1a9f7e3b"
#: ``[[http.users]]``: one reader, one writer.
USERS = [
    {"name": "support-ui", "token": READ_TOKEN, "role": "read"},
    {"name": "ops-bot", "token": WRITE_TOKEN, "role": "write"},
]
#: A port nothing listens on: every delivery is refused at once, and dies after its attempts.
NOWHERE = "http://127.0.0.1:9/hook"
#: A form post's content type.
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
