"""Every writer of a transition shows the one outside shape of ``tracker.shapes``."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

from tracker.export import COLUMNS, NdjsonWriter
from tracker.model import Transition
from tracker.shapes import (
    DIGEST_KEYS,
    EXPORT_KEYS,
    HISTORY_KEYS,
    TRANSITION_SCHEMA,
    WEBHOOK_KEYS,
    shown,
    timestamp,
    transition_json,
)
from tracker.sinks.render import event_body, sample_digest
from tracker.views import transition_dict
from tracker.web.openapi import document

AT = datetime(2026, 11, 29, 12, 0, 0, 123456, tzinfo=UTC)
MOVE = Transition(
    event_id="evt_1",
    order_id="prdo_a",
    from_status="ordered",
    to_status="installation_planning",
    kind="skip",
    skipped=("checked",),
    detected_at=AT,
    snapshot_id=7,
)


class TestTransitionJson:
    """The serializer writes the keys asked for, in their order, each value one way."""

    def test_keys_in_the_order_asked(self) -> None:
        """A view's keys come out in the view's order, whatever the canonical one."""
        for keys in (WEBHOOK_KEYS, HISTORY_KEYS, DIGEST_KEYS, EXPORT_KEYS):
            assert tuple(shown(MOVE, keys)) == keys

    def test_values(self) -> None:
        """A datetime is written as the contract's timestamp; skipped as a list."""
        assert shown(MOVE, EXPORT_KEYS) == {
            "order_id": "prdo_a",
            "from_status": "ordered",
            "to_status": "installation_planning",
            "kind": "skip",
            "skipped": ["checked"],
            "detected_at": "2026-11-29T12:00:00.123456Z",
            "event_id": "evt_1",
        }

    def test_text_time_is_kept(self) -> None:
        """A time given as text (formatted by the database) is written as it is."""
        data = transition_json(
            DIGEST_KEYS, event_id="e", from_status=None, to_status="t", detected_at="then"
        )
        assert data["detected_at"] == "then"
        assert data["from_status"] is None

    def test_every_key_has_a_schema(self) -> None:
        """Each view's keys are described in the schema the OpenAPI document uses."""
        for keys in (WEBHOOK_KEYS, HISTORY_KEYS, DIGEST_KEYS, EXPORT_KEYS):
            assert set(keys) <= set(TRANSITION_SCHEMA)


class TestWritersShareTheShape:
    """Webhook body, history, digest, export and the OpenAPI document agree on the keys."""

    def test_webhook_body(self) -> None:
        """The webhook's ``data`` is the webhook view, then the order."""
        body = json.loads(
            event_body(
                event_id="evt_1",
                order_id="prdo_a",
                from_status="ordered",
                to_status="checked",
                detected_at=AT,
                order_raw="{}",
            )
        )
        assert list(body["data"]) == [*WEBHOOK_KEYS, "order"]
        assert body["data"]["detected_at"] == timestamp(AT)

    def test_history_matches_the_openapi_schema(self) -> None:
        """A history's transition has exactly the properties the OpenAPI schema declares."""
        history = document()["components"]["schemas"]["History"]
        items = history["properties"]["transitions"]["items"]
        data = transition_dict(MOVE, ())
        assert list(data) == list(items["properties"]) == items["required"]
        assert list(data) == [*HISTORY_KEYS, "deliveries"]

    def test_digest_moves(self) -> None:
        """A digest (here the sample the templates are checked against) lists each change
        with the digest view's keys."""
        data = json.loads(sample_digest(AT))["data"]
        assert list(data["orders"][0]["moves"][0]) == list(DIGEST_KEYS)

    def test_export_row(self) -> None:
        """An NDJSON row of the export has the export view's keys, then ``deliveries``."""
        stream = io.StringIO()
        row = ("prdo_a", "ordered", "checked", "advance", "", timestamp(AT), "evt_1", "ops:dead")
        NdjsonWriter(stream).write([row])
        assert list(json.loads(stream.getvalue())) == [*EXPORT_KEYS, "deliveries"]
        assert (*EXPORT_KEYS, "deliveries") == COLUMNS
