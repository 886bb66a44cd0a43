"""Compact forms of what the store keeps: upstream bodies and fingerprints.

Pure: standard library only. A stored body starts with a format byte, so a format once written
stays readable; a new dictionary must come as a new format byte, never as a change to this one.
"""

from __future__ import annotations

import zlib

#: Format bytes of a stored body.
PLAIN = 0x00
DEFLATE_V1 = 0x01
#: Raw deflate with the shape of a meter order preset: a typical 280-byte answer keeps ~100 bytes.
DICTIONARY_V1 = (
    b'"object": "meter_order", "id": "prdo_", "provider": "energy-metering", '
    b'"provider": "metrify", "provider": "inexogy", "status": "waiting", "status": "ordered", '
    b'"status": "checked", "status": "installation_planning", '
    b'"status": "installation_scheduled", "status": "installed", "status": "activated", '
    b'"status": "blocked", "status": "blocked_wim", "status": "cancelled", '
    b'"status": "pre_installed", "created_at": "2026-01-01T00:00:00Z", '
    b'{"object":"meter_order","id":"prdo_","subscription":"sub_","customer":"cus_",'
    b'"provider":"","status":"","created_at":"2026-","updated_at":"2026-'
    b'{\n  "object": "meter_order",\n  "id": "prdo_",\n  "subscription": "sub_",\n'
    b'  "customer": "cus_",\n  "provider": "",\n  "status": "",\n'
    b'  "created_at": "2026-",\n  "updated_at": "2026-'
    b'{"object": "meter_order", "id": "prdo_", "subscription": "sub_", "customer": "cus_", '
    b'"provider": "", "status": "", "created_at": "2026-", "updated_at": "2026-'
)
_WINDOW = -15  # raw deflate: no zlib header or checksum, the format byte says what it is


def pack_body(raw: str) -> bytes:
    """The body as stored: deflated against the preset dictionary when that makes it smaller."""
    data = raw.encode()
    deflate = zlib.compressobj(6, zlib.DEFLATED, _WINDOW, zdict=DICTIONARY_V1)
    packed = deflate.compress(data) + deflate.flush()
    if len(packed) < len(data):
        return bytes((DEFLATE_V1,)) + packed
    return bytes((PLAIN,)) + data


def unpack_body(stored: bytes) -> str:
    """The body exactly as the upstream sent it."""
    kind, rest = stored[0], stored[1:]
    if kind == DEFLATE_V1:
        return zlib.decompressobj(_WINDOW, zdict=DICTIONARY_V1).decompress(rest).decode()
    if kind == PLAIN:
        return rest.decode()
    raise ValueError(f"stored body has unknown format {kind}; a newer tracker wrote it")
