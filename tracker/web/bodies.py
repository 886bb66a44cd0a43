"""Request bodies read within bounds: nothing a client sends can hold more memory than that.

Each body is read up to its route's limit and within :data:`BODY_TIMEOUT`; all the bodies being
read at once share one budget (:class:`BodyBudget`, :data:`BODIES_IN_FLIGHT` bytes), so a crowd
of clients each sending a large body slowly is answered 503 rather than growing the process.
JSON is parsed only when it nests at most :data:`MAX_DEPTH` deep (a deeper body is a 400, never
a ``RecursionError``).
"""

from __future__ import annotations

import asyncio
import json
import re
from http import HTTPStatus
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request

#: Bytes of request bodies held at once, over every request being read.
BODIES_IN_FLIGHT = 16 * 1024 * 1024
#: Seconds a client may take to send its body.
BODY_TIMEOUT = 30.0
#: Nesting of arrays and objects a JSON body may have: ours have two or three levels.
MAX_DEPTH = 32
#: A JSON string (its brackets are text) and a bracket outside one.
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")


def error_body(status: int, message: str) -> dict[str, dict[str, str]]:
    """The contract's error object: ``{"error": {"code": …, "message": …}}``."""
    code = HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    return {"error": {"code": code, "message": message}}


class BodyBudget:
    """Bytes of bodies held at once by every request being read."""

    def __init__(self, limit: int = BODIES_IN_FLIGHT) -> None:
        self.limit = limit
        self.held = 0

    def take(self, size: int) -> None:
        """Hold ``size`` more bytes, or 503 when the budget has no room for them."""
        if self.held + size > self.limit:
            raise HTTPException(
                503, "the server is reading too many request bodies; retry", {"Retry-After": "1"}
            )
        self.held += size

    def give(self, size: int) -> None:
        """Let go of ``size`` bytes."""
        self.held -= size


async def bounded_body(request: Request, limit: int, too_large: Exception) -> bytes:
    """The request's body, or ``too_large`` raised once it is declared or read past ``limit``
    bytes (the rest is not read); 408 when it takes longer than :data:`BODY_TIMEOUT`."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    budget: BodyBudget = request.app.state.bodies  # set by build_app
    body = bytearray()
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            async for chunk in request.stream():
                budget.take(len(chunk))
                body += chunk
                if len(body) > limit:
                    raise too_large
    except TimeoutError:
        raise HTTPException(408, f"the body did not arrive within {BODY_TIMEOUT:g} s") from None
    finally:
        budget.give(len(body))
    return bytes(body)


def too_deep(text: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether the JSON ``text`` nests arrays and objects more than ``limit`` deep (strings,
    where brackets mean nothing, are skipped)."""
    if text.count(b"[") + text.count(b"{") <= limit:  # the usual case, at C speed
        return False
    depth = 0
    for bracket in _BRACKET.finditer(_STRING.sub(b"", text)):
        depth += 1 if bracket.group() in {b"[", b"{"} else -1
        if depth > limit:
            return True
    return False


def parse_json(body: bytes, refused: type[Exception], invalid: int = 400) -> Any:
    """``body`` as JSON; else ``refused(400, reason)`` when it nests too deep, and
    ``refused(invalid, reason)`` when it is not JSON."""
    if too_deep(body):
        raise refused(400, f"the body nests deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise refused(invalid, f"the body is not JSON: {exc}") from None
