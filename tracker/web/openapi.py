"""The OpenAPI 3.1 document of ``/api/v1``, written by hand so it says exactly what is served.

The test suite runs schemathesis against this document and a live server: a route, parameter,
status or field that changes in :mod:`tracker.web.api` without changing here fails it.
"""

from __future__ import annotations

import copy
from typing import Any

from tracker.lifecycle import Status
from tracker.model import DeliveryState
from tracker.shapes import EXPORT_KEYS, HISTORY_KEYS, TRANSITION_SCHEMA
from tracker.web.openapi_reports import REPORT_ITEMS, REPORT_PARAMETERS, REPORT_SUMMARIES

_NULLABLE_TIME: dict[str, Any] = {"type": ["string", "null"], "format": "date-time"}
_TIME: dict[str, Any] = {"type": "string", "format": "date-time"}
_ORDER_ID: dict[str, Any] = {
    "type": "string",
    "pattern": "^prdo_[a-z0-9]{1,64}$",
    "examples": ["prdo_x83bmixgdcktlpxli778vvgo"],
}

#: What ``/api/v1/transitions`` answers: the columns of ``tracker export``.
_EXPORT_COLUMNS = f"Columns {', '.join(f'`{c}`' for c in (*EXPORT_KEYS, 'deliveries'))}."

_ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "additionalProperties": False,
            "properties": {
                "code": {
                    "type": "string",
                    "description": "The HTTP status phrase in snake_case, e.g. `not_found`.",
                    "examples": ["unauthorized", "not_found", "unprocessable_entity"],
                },
                "message": {"type": "string", "description": "What went wrong, for people."},
            },
        }
    },
}

_WATCHED: dict[str, Any] = {
    "type": "object",
    "description": "A watched order, as `tracker watch list --json` prints it.",
    "required": [
        "order_id",
        "status",
        "state",
        "source",
        "added_at",
        "last_poll_at",
        "last_change_at",
        "next_poll_at",
        "consecutive_failures",
        "last_error_kind",
        "last_error",
        "customer",
        "subscription",
    ],
    "additionalProperties": False,
    "properties": {
        "order_id": {"type": "string"},
        "status": {
            "type": ["string", "null"],
            "description": "The last status seen (one of the 14, or a new one the provider "
            "sent); null before the first poll.",
        },
        "state": {"type": "string", "enum": ["active", "retired", "removed"]},
        "source": {"type": "string", "description": "Who watched it: cli, config, api, …"},
        "added_at": _TIME,
        "last_poll_at": _NULLABLE_TIME,
        "last_change_at": _NULLABLE_TIME,
        "next_poll_at": {
            **_NULLABLE_TIME,
            "description": "When it is polled next; null unless active.",
        },
        "consecutive_failures": {"type": "integer", "minimum": 0},
        "last_error_kind": {"type": ["string", "null"]},
        "last_error": {"type": ["string", "null"]},
        "customer": {
            "type": ["string", "null"],
            "description": "The customer the latest snapshot names; null before the first "
            "snapshot (or for a value longer than 80 characters).",
        },
        "subscription": {
            "type": ["string", "null"],
            "description": "The subscription the latest snapshot names; null as for customer.",
        },
        "stuck": {
            "type": "object",
            "description": "Only in the list of stuck orders (`stuck=true`): since when the "
            "order stands in its status, and `[alerts.stuck]`'s threshold for that status in "
            "seconds (null if it was removed since the stay was reported).",
            "required": ["since", "threshold_seconds"],
            "additionalProperties": False,
            "properties": {
                "since": _TIME,
                "threshold_seconds": {"type": ["integer", "null"], "minimum": 1},
            },
        },
    },
}

_DELIVERY_FIELDS: dict[str, Any] = {
    "sink": {"type": "string"},
    "state": {"type": "string", "enum": [s.value for s in DeliveryState]},
    "attempts": {"type": "integer", "minimum": 0},
    "last_status": {"type": ["integer", "null"], "description": "The receiver's last HTTP status."},
    "last_error": {"type": ["string", "null"]},
    "delivered_at": _NULLABLE_TIME,
    "next_attempt_at": {**_NULLABLE_TIME, "description": "Null unless pending."},
}

_BRIEF_DELIVERY: dict[str, Any] = {
    "type": "object",
    "description": "A transition's delivery to one sink, as nested in a history.",
    "required": list(_DELIVERY_FIELDS),
    "additionalProperties": False,
    "properties": _DELIVERY_FIELDS,
}

_DELIVERY: dict[str, Any] = {
    "type": "object",
    "description": "One event's delivery to one sink, as `tracker deliveries list --json` "
    "prints it. `orphaned`: pending for a sink this process does not have configured.",
    "required": ["event_id", "order_id", *_DELIVERY_FIELDS, "orphaned"],
    "additionalProperties": False,
    "properties": {
        "event_id": {"type": "string"},
        "order_id": {"type": "string", "description": "Empty for an event of no one order."},
        **_DELIVERY_FIELDS,
        "orphaned": {"type": "boolean"},
    },
}

#: A transition as a history holds it: the keys :data:`HISTORY_KEYS` of the one outside shape.
_HISTORY_TRANSITION: dict[str, Any] = {
    **{key: dict(TRANSITION_SCHEMA[key]) for key in HISTORY_KEYS},
    "deliveries": {"type": "array", "items": {"$ref": "#/components/schemas/BriefDelivery"}},
}

_HISTORY_ALERT: dict[str, Any] = {
    "type": "object",
    "description": "An alert about the order (`meter_order.stuck`, `meter_order.poll_failing`, "
    "`meter_order.poll_recovered`); `details` is its webhook body's `data` but the ids and status.",
    "required": ["alert", "event_id", "kind", "status", "raised_at", "details"],
    "additionalProperties": False,
    "properties": {
        "alert": {"type": "boolean", "const": True},
        "event_id": {"type": "string"},
        "kind": {"type": "string", "enum": ["stuck", "poll_failing", "poll_recovered"]},
        "status": {"type": ["string", "null"]},
        "raised_at": _TIME,
        "details": {"type": "object"},
    },
}

_HISTORY: dict[str, Any] = {
    "type": "object",
    "description": "One order's history, as `tracker history ID --json` prints it; "
    "snapshots and transitions oldest first.",
    "required": [
        "order_id",
        "status",
        "state",
        "last_poll_at",
        "last_error",
        "snapshots",
        "transitions",
        "alerts",
    ],
    "additionalProperties": False,
    "properties": {
        "order_id": {"type": "string"},
        "status": {"type": ["string", "null"]},
        "state": {"type": "string", "enum": ["active", "retired", "removed"]},
        "last_poll_at": _NULLABLE_TIME,
        "last_error": {"type": ["string", "null"]},
        "snapshots": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "observed_at", "status", "provider", "order"],
                "additionalProperties": False,
                "properties": {
                    "id": {"type": "integer"},
                    "observed_at": _TIME,
                    "status": {"type": "string"},
                    "provider": {"type": "string"},
                    "order": {
                        "type": "object",
                        "description": "The meter order as the provider sent it.",
                    },
                },
            },
        },
        "transitions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": list(_HISTORY_TRANSITION),
                "additionalProperties": False,
                "properties": _HISTORY_TRANSITION,
            },
        },
        "alerts": {
            "type": "array",
            "description": "The alerts raised about the order, oldest first.",
            "items": _HISTORY_ALERT,
        },
    },
}


def _page(item: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items", "next_cursor"],
        "additionalProperties": False,
        "properties": {
            "items": {"type": "array", "items": {"$ref": f"#/components/schemas/{item}"}},
            "next_cursor": {
                "type": ["string", "null"],
                "description": "Pass as `cursor` for the next page; null on the last page.",
            },
        },
    }


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_UNAUTHORIZED = {
    "description": "No `Authorization: Bearer` header, or a token no user has.",
    "headers": {
        "WWW-Authenticate": {"schema": {"type": "string", "const": "Bearer"}, "required": True}
    },
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_THROTTLED = {
    "description": "Too many wrong tokens from this address of late; retry after the header's "
    "seconds (the token is not checked until then).",
    "headers": {"Retry-After": {"schema": {"type": "string"}, "required": True}},
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_READ_ERRORS = {
    "401": _UNAUTHORIZED,
    "429": _THROTTLED,
    "422": _error("A query parameter or path value that is not valid (named in the message)."),
}
_WRITE_ERRORS = {
    **_READ_ERRORS,
    "403": _error("The token's user has the read role; this route needs write."),
}
_LIMIT = {
    "name": "limit",
    "in": "query",
    "required": False,
    "description": "Items per page: 50 if absent; more than 500 is cut to 500.",
    "schema": {"type": "integer", "minimum": 1, "default": 50},
}
_CURSOR = {
    "name": "cursor",
    "in": "query",
    "required": False,
    "description": "The `next_cursor` of the previous page (opaque); absent for the first.",
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"},
}
_ORDER_PATH = {
    "name": "order_id",
    "in": "path",
    "required": True,
    "description": "A meter order id: `prdo_` and lower-case letters and digits.",
    "schema": _ORDER_ID,
}

_PATHS: dict[str, Any] = {
    "/api/v1/orders": {
        "get": {
            "operationId": "listOrders",
            "summary": "Watched orders, in order id order, a page at a time; with "
            "`stuck=true`, the orders stuck now, the longest stay first.",
            "parameters": [
                {
                    "name": "status",
                    "in": "query",
                    "required": False,
                    "description": "Only orders whose last seen status is this.",
                    "schema": {"type": "string", "enum": [s.value for s in Status]},
                },
                {
                    "name": "state",
                    "in": "query",
                    "required": False,
                    "description": "Only orders in this state.",
                    "schema": {"type": "string", "enum": ["active", "retired", "removed"]},
                },
                {
                    "name": "q",
                    "in": "query",
                    "required": False,
                    "description": "Only orders whose id starts with this, or whose customer "
                    "or subscription (as the latest snapshot says) is exactly this, e.g. "
                    "`prdo_x83b`, `cus_qacki3zcrkc9r41qt44ngl9d` or "
                    "`sub_vzyqxohw546im28zwyhn04ei`. A customer or subscription matches whole "
                    "only, not by a prefix.",
                    "schema": {"type": "string", "pattern": "^[a-z0-9_]{1,80}$"},
                },
                {
                    "name": "stuck",
                    "in": "query",
                    "required": False,
                    "description": "`true`: only the active orders whose current stay was "
                    "reported stuck (`meter_order.stuck`, per `[alerts.stuck]`), the longest "
                    "stay first, each with `stuck`; then `status`, `state` and `q` are refused "
                    "(422).",
                    "schema": {"type": "string", "enum": ["true", "false"], "default": "false"},
                },
                _LIMIT,
                _CURSOR,
            ],
            "responses": {
                "200": _json(
                    "A page of watched orders.", {"$ref": "#/components/schemas/OrderPage"}
                ),
                **_READ_ERRORS,
            },
        },
        "post": {
            "operationId": "watchOrders",
            "summary": "Watch orders (again); needs the write role.",
            "requestBody": {
                "required": True,
                "description": "At most 1 MiB; larger bodies get 413.",
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["order_ids"],
                            "properties": {
                                "order_ids": {
                                    "type": "array",
                                    "minItems": 1,
                                    "maxItems": 10000,
                                    "items": _ORDER_ID,
                                }
                            },
                        }
                    }
                },
            },
            "responses": {
                "201": _json(
                    "Watched; `added` lists the ids that were not watched (or were removed) "
                    "before.",
                    {
                        "type": "object",
                        "required": ["added"],
                        "additionalProperties": False,
                        "properties": {"added": {"type": "array", "items": {"type": "string"}}},
                    },
                ),
                **_WRITE_ERRORS,
                "413": _error("The body is larger than 1 MiB."),
            },
        },
    },
    "/api/v1/orders/{order_id}": {
        "get": {
            "operationId": "getOrder",
            "summary": "One order's history: snapshots, transitions and their deliveries.",
            "parameters": [_ORDER_PATH],
            "responses": {
                "200": _json("The order's history.", {"$ref": "#/components/schemas/History"}),
                **_READ_ERRORS,
                "404": _error("The order was never watched."),
            },
        },
        "delete": {
            "operationId": "unwatchOrder",
            "summary": "Stop polling an order, keeping its history; needs the write role.",
            "parameters": [_ORDER_PATH],
            "responses": {
                "204": {"description": "Not polled any more (also if it was not before)."},
                **_WRITE_ERRORS,
                "404": _error("The order was never watched."),
            },
        },
    },
    "/api/v1/deliveries": {
        "get": {
            "operationId": "listDeliveries",
            "summary": "Deliveries, oldest first, a page at a time.",
            "parameters": [
                {
                    "name": "state",
                    "in": "query",
                    "required": False,
                    "description": "Only deliveries in this state.",
                    "schema": {"type": "string", "enum": [s.value for s in DeliveryState]},
                },
                {
                    "name": "sink",
                    "in": "query",
                    "required": False,
                    "description": "Only deliveries to the sink of this name.",
                    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"},
                },
                _LIMIT,
                _CURSOR,
            ],
            "responses": {
                "200": _json(
                    "A page of deliveries.", {"$ref": "#/components/schemas/DeliveryPage"}
                ),
                **_READ_ERRORS,
            },
        },
    },
    "/api/v1/transitions": {
        "get": {
            "operationId": "exportTransitions",
            "summary": "The transitions detected in a period, oldest first, with their delivery "
            "states: `tracker export` over HTTP, streamed in constant memory.",
            "parameters": [
                {
                    "name": "since",
                    "in": "query",
                    "required": True,
                    "description": "Inclusive: a date `YYYY-MM-DD` (midnight UTC) or ISO 8601 "
                    "with an offset, e.g. `2026-11-29T12:00:00Z`.",
                    "schema": {"type": "string", "minLength": 1, "maxLength": 64},
                },
                {
                    "name": "until",
                    "in": "query",
                    "required": False,
                    "description": "Exclusive, in the same forms; absent: up to now.",
                    "schema": {"type": "string", "minLength": 1, "maxLength": 64},
                },
                {
                    "name": "status",
                    "in": "query",
                    "required": False,
                    "description": "Only transitions to this status.",
                    "schema": {"type": "string", "enum": [s.value for s in Status]},
                },
                {
                    "name": "format",
                    "in": "query",
                    "required": False,
                    "description": "`ndjson` (one object per line, the default) or `csv` (a "
                    "header row, RFC 4180 quoting; a cell that starts like a formula gets a "
                    "leading `'`).",
                    "schema": {"type": "string", "enum": ["ndjson", "csv"], "default": "ndjson"},
                },
            ],
            "responses": {
                "200": {
                    "description": _EXPORT_COLUMNS,
                    "content": {
                        "application/x-ndjson": {"schema": {"type": "string"}},
                        "text/csv": {"schema": {"type": "string"}},
                    },
                },
                **_READ_ERRORS,
            },
        },
    },
    "/api/v1/deliveries/retry": {
        "post": {
            "operationId": "retryDeadDeliveries",
            "summary": "Make every dead delivery pending again, due now (of one sink, of one "
            "order), as `tracker deliveries retry --all-dead [--sink] [--order]` does; needs "
            "the write role.",
            "description": "The request does not wait for the attempts: a running daemon "
            "(`tracker run`) sends them at its next delivery tick, their attempts counted "
            "afresh. Each retry is logged (`api_write`) with the user and the event ids.",
            "requestBody": {
                "required": True,
                "description": "At most 4 KiB; larger bodies get 413.",
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["state"],
                            "additionalProperties": False,
                            "properties": {
                                "state": {
                                    "const": "dead",
                                    "description": "Which deliveries: only dead ones can be "
                                    "retried in bulk.",
                                },
                                "sink": {
                                    "type": ["string", "null"],
                                    "pattern": "^[A-Za-z0-9_.-]{1,64}$",
                                    "description": "Only this sink's: one configured, or one "
                                    "that has deliveries (else 422). Null means any.",
                                    "examples": ["ops"],
                                },
                                "order_id": {
                                    **_ORDER_ID,
                                    "type": ["string", "null"],
                                    "description": "Only this order's: one that is or was "
                                    "watched (else 422). Null, like absent, means any.",
                                },
                            },
                        },
                        "examples": {
                            "all": {"value": {"state": "dead"}},
                            "one sink": {"value": {"state": "dead", "sink": "ops"}},
                        },
                    }
                },
            },
            "responses": {
                "202": _json(
                    "Pending again; `retried` counts the deliveries made pending (0 when no "
                    "dead one matched).",
                    {
                        "type": "object",
                        "required": ["retried"],
                        "additionalProperties": False,
                        "properties": {"retried": {"type": "integer", "minimum": 0}},
                    },
                ),
                **_WRITE_ERRORS,
                "400": _error("The body nests too deep to be read."),
                "413": _error("The body is larger than 4 KiB."),
                "422": _error(
                    'The body is not JSON, not `{"state": "dead"}` with optional string '
                    "`sink` and `order_id`, or names a sink that is not configured and has no "
                    "deliveries, or an order never watched (named in the message); nothing "
                    "was retried."
                ),
            },
        },
    },
    "/api/v1/deliveries/{event_id}/retry": {
        "post": {
            "operationId": "retryDelivery",
            "summary": "Make an event's undelivered deliveries pending again, due now, as "
            "`tracker deliveries retry EVENT_ID` does; needs the write role.",
            "description": "The request does not wait for the attempt: a running daemon "
            "(`tracker run`) sends them at its next delivery tick.",
            "parameters": [
                {
                    "name": "event_id",
                    "in": "path",
                    "required": True,
                    "description": "The event id, e.g. a transition's `evt_…`.",
                    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,40}$"},
                }
            ],
            "responses": {
                "202": _json(
                    "Pending again; `pending` counts the deliveries (one per sink).",
                    {
                        "type": "object",
                        "required": ["event_id", "pending"],
                        "additionalProperties": False,
                        "properties": {
                            "event_id": {"type": "string"},
                            "pending": {"type": "integer", "minimum": 1},
                        },
                    },
                ),
                **_WRITE_ERRORS,
                "404": _error("No undelivered delivery of this event (none, or all arrived)."),
            },
        },
    },
    "/api/v1/openapi.json": {
        "get": {
            "operationId": "openapi",
            "summary": "This document.",
            "security": [],
            "responses": {"200": _json("The OpenAPI 3.1 document.", {"type": "object"})},
        },
    },
}

# -- the reports (``tracker.web.report_page``, numbers from ``tracker.insight``) --------------
# Their items, summaries and parameters are in ``tracker.web.openapi_reports``.


def _report_path(name: str) -> dict[str, Any]:
    item = {
        "type": "object",
        "required": list(REPORT_ITEMS[name]),
        "additionalProperties": False,
        "properties": REPORT_ITEMS[name],
    }
    body = {
        "type": "object",
        "required": ["since", "until", "items"],
        "additionalProperties": False,
        "properties": {"since": _TIME, "until": _TIME, "items": {"type": "array", "items": item}},
    }
    operation = "report" + "".join(part.title() for part in name.split("-"))
    return {
        "get": {
            "operationId": operation,
            "summary": REPORT_SUMMARIES[name],
            "parameters": REPORT_PARAMETERS,
            "responses": {"200": _json("The period and its items.", body), **_READ_ERRORS},
        }
    }


_PATHS.update({f"/api/v1/reports/{name}": _report_path(name) for name in REPORT_ITEMS})

_DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "meter-order-tracker API",
        "version": "1",
        "description": "The watched meter orders, their histories and deliveries, with the "
        "objects the CLI's `--json` prints. Authenticate with `Authorization: Bearer <token>` "
        "(a token of `[[http.users]]`); writes need the `write` role. Lists are paged with "
        'an opaque `next_cursor`. Every error is `{"error": {"code", "message"}}`.',
    },
    "paths": _PATHS,
    "security": [{"bearer": []}],
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": _ERROR,
            "WatchedOrder": _WATCHED,
            "OrderPage": _page("WatchedOrder"),
            "History": _HISTORY,
            "BriefDelivery": _BRIEF_DELIVERY,
            "Delivery": _DELIVERY,
            "DeliveryPage": _page("Delivery"),
        },
    },
}


def document() -> dict[str, Any]:
    """The OpenAPI document (a copy: a caller may change it)."""
    return copy.deepcopy(_DOCUMENT)
