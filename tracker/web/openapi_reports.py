"""The reports' part of the OpenAPI document (``tracker.web.openapi``): what each report's
items hold, what it counts, and the query every report takes."""

from __future__ import annotations

from typing import Any

#: Each report's item: its fields and their schemas.
REPORT_ITEMS: dict[str, dict[str, Any]] = {
    "durations": {
        "status": {"type": "string"},
        "provider": {"type": ["string", "null"], "description": "Null without `by=provider`."},
        "count": {"type": "integer", "minimum": 1},
        "median_seconds": {"type": "number", "minimum": 0},
        "p90_seconds": {"type": "number", "minimum": 0},
    },
    "lead-time": {
        "provider": {"type": ["string", "null"], "description": "Null without `by=provider`."},
        "count": {"type": "integer", "minimum": 1},
        "median_seconds": {"type": "number", "minimum": 0},
        "p90_seconds": {"type": "number", "minimum": 0},
        "bins": {
            "type": "array",
            "items": {"type": "integer", "minimum": 0},
            "description": "Orders per two-week bin of lead time; the last bin is open.",
        },
    },
    "flow": {
        "from": {"type": "string"},
        "to": {"type": "string"},
        "provider": {"type": ["string", "null"], "description": "Null without `by=provider`."},
        "count": {"type": "integer", "minimum": 1},
    },
    "weekly": {
        "week": {"type": "string", "format": "date", "description": "The week's Monday (UTC)."},
        "activated": {"type": "integer", "minimum": 0},
        "cancelled": {"type": "integer", "minimum": 0},
        "blocked": {"type": "integer", "minimum": 0},
    },
    "over-target": {
        "status": {"type": "string"},
        "provider": {"type": ["string", "null"], "description": "Null: all providers."},
        "target_seconds": {"type": "number", "minimum": 0},
        "count": {"type": "integer", "minimum": 1},
        "over": {"type": "integer", "minimum": 0},
        "share": {"type": "number", "minimum": 0, "maximum": 1},
    },
}
#: What each report counts, in a sentence or two.
REPORT_SUMMARIES = {
    "durations": "Time in each status: count, median and p90 of the finished stays of known "
    "start that ended in the period, per status (and provider with `by=provider`).",
    "lead-time": "Lead time from the first transition into `ordered` to the first into "
    "`activated`, for the orders first activated in the period.",
    "flow": "How many times each transition was taken in the period, detours included.",
    "weekly": "Entries into `activated`, `cancelled` and `blocked`/`blocked_wim` per week "
    "(Monday 00:00 UTC), every week of the period listed.",
    "over-target": "Finished stays longer than their status's `[alerts.stuck]` target: all "
    "providers together, and per provider with `by=provider`.",
}
#: The query every report takes.
REPORT_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "since",
        "in": "query",
        "required": False,
        "description": "Inclusive: a date `YYYY-MM-DD` (midnight UTC) or ISO 8601 with an "
        "offset; absent: 12 weeks before `until`.",
        "schema": {"type": "string", "maxLength": 64},
    },
    {
        "name": "until",
        "in": "query",
        "required": False,
        "description": "Exclusive, in the same forms; absent: now.",
        "schema": {"type": "string", "maxLength": 64},
    },
    {
        "name": "by",
        "in": "query",
        "required": False,
        "description": "`provider`: one item per provider; empty or absent: one overall.",
        "schema": {"type": "string", "enum": ["provider", ""]},
    },
]
