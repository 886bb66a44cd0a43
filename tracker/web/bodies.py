"""Request bodies read within a bound: nothing a client sends can hold more memory than that."""

from __future__ import annotations

from starlette.requests import Request


async def bounded_body(request: Request, limit: int, too_large: Exception) -> bytes:
    """The request's body, or ``too_large`` raised once it is declared or read past ``limit``
    bytes (the rest is not read)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)
