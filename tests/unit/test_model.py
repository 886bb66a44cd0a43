"""Strict parsing of upstream answers and the shape of order ids."""

from __future__ import annotations

import json

import pytest

from tracker.diff import decide
from tracker.errors import InvalidOrderId, MalformedAnswer
from tracker.lifecycle import Kind
from tracker.model import MeterOrder, validate_order_id

ID = "prdo_x83bmixgdcktlpxli778vvgo"


def body(**changes: object) -> bytes:
    data: dict[str, object] = {
        "object": "meter_order",
        "id": ID,
        "subscription": "sub_vzyqxohw546im28zwyhn04ei",
        "customer": "cus_qacki3zcrkc9r41qt44ngl9d",
        "provider": "energy-metering",
        "status": "waiting",
        "created_at": "2024-03-14T12:00:00Z",
        "updated_at": "2024-03-14T12:00:00Z",
    }
    data.update(changes)
    return json.dumps({k: v for k, v in data.items() if v is not None}).encode()


class TestOrderIds:
    """Ids are checked before they reach a URL."""

    @pytest.mark.parametrize("good", [ID, "prdo_a", "prdo_0123456789abcdefghijklmn"])
    def test_accepts(self, good: str) -> None:
        """A well-formed order id is returned unchanged."""
        assert validate_order_id(good) == good

    @pytest.mark.parametrize(
        "bad",
        [
            "",
            "prdo_",
            "PRDO_abc",
            "prdo_ABC",
            "prdo_abc/../x",
            "sub_abc",
            "prdo_a b",
            "prdo_abc?x=1",
            "prdo_abc\n",
        ],
    )
    def test_refuses_with_reason(self, bad: str) -> None:
        """A malformed order id is refused, saying what an id looks like."""
        with pytest.raises(InvalidOrderId, match="expected 'prdo_' followed by lower-case"):
            validate_order_id(bad)


class TestParse:
    """A body is a meter order for the requested id, or a failed poll with its reason."""

    def test_documented_example(self) -> None:
        """The documented example parses with a known status and provider and its raw body."""
        order = MeterOrder.from_json(body(), expected_id=ID)
        assert order.status == "waiting"
        assert order.status_known
        assert order.provider_known
        assert json.loads(order.raw)["customer"] == "cus_qacki3zcrkc9r41qt44ngl9d"

    def test_unknown_fields_are_kept_in_raw_and_ignored(self) -> None:
        """An unknown field is kept in the raw body but leaves the fingerprint unchanged."""
        order = MeterOrder.from_json(body(product="smart"), expected_id=ID)
        assert '"product"' in order.raw
        assert order.fingerprint == MeterOrder.from_json(body(), expected_id=ID).fingerprint

    def test_unknown_status_and_provider_are_accepted_and_flagged(self) -> None:
        """An unknown status and provider are accepted and flagged as unknown."""
        order = MeterOrder.from_json(body(status="in_review", provider="newco"), expected_id=ID)
        assert order.status == "in_review"
        assert not order.status_known
        assert not order.provider_known

    def test_odd_timestamps_do_not_fail(self) -> None:
        """An updated_at that is not a timestamp is kept as it came."""
        order = MeterOrder.from_json(body(updated_at="yesterday"), expected_id=ID)
        assert order.updated_at == "yesterday"

    @pytest.mark.parametrize(
        ("raw", "reason"),
        [
            (b"{not json", "not JSON"),
            (b"\xff\xfe", "not JSON"),
            (b"[1, 2]", "JSON list, not an object"),
            (body(object="list"), "object is 'list'"),
            (body(id="prdo_other"), "not the requested"),
            (body(status=None), "'status' is missing"),
            (body(customer=""), "'customer' is missing"),
            (body(status=3), "'status' is missing or not a non-empty string"),
        ],
    )
    def test_malformed(self, raw: bytes, reason: str) -> None:
        """A malformed body is refused as a malformed answer with its reason."""
        with pytest.raises(MalformedAnswer, match=reason):
            MeterOrder.from_json(raw, expected_id=ID)


class TestDiff:
    """Snapshots on any parsed change; transitions on status changes only."""

    def test_first_snapshot_is_not_a_transition(self) -> None:
        """The first answer stores a snapshot but no transition."""
        order = MeterOrder.from_json(body(), expected_id=ID)
        decision = decide(None, None, order)
        assert decision.store_snapshot
        assert decision.change is None

    def test_unchanged(self) -> None:
        """An answer with an unchanged fingerprint stores nothing."""
        order = MeterOrder.from_json(body(), expected_id=ID)
        decision = decide("waiting", order.fingerprint, order)
        assert not decision.store_snapshot

    def test_other_field_changes_make_a_snapshot_only(self) -> None:
        """A change of another field stores a snapshot but no transition."""
        before = MeterOrder.from_json(body(), expected_id=ID)
        after = MeterOrder.from_json(body(updated_at="2024-03-15T12:00:00Z"), expected_id=ID)
        decision = decide("waiting", before.fingerprint, after)
        assert decision.store_snapshot
        assert decision.change is None

    def test_status_change_without_updated_at_change_is_a_transition(self) -> None:
        """A status change is a classified transition even when updated_at stays the same."""
        before = MeterOrder.from_json(body(), expected_id=ID)
        after = MeterOrder.from_json(body(status="ordered"), expected_id=ID)
        decision = decide("waiting", before.fingerprint, after)
        assert decision.change is not None
        assert (decision.change.from_status, decision.change.to_status) == ("waiting", "ordered")
        assert decision.change.classification.kind is Kind.ADVANCE
