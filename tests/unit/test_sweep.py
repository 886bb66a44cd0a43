"""Planning list sweeps and reading list pages: pure, no server."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.support import order_body
from tracker.errors import MalformedAnswer
from tracker.model import Claim, MeterOrder
from tracker.sweep import MAX_VALUES, SweepPlanner, strays
from tracker.upstream import ListPage


def claim(number: int, customer: str | None = None) -> Claim:
    order_id = f"prdo_{number:024d}"
    return Claim(
        order_id=order_id,
        status="ordered",
        fingerprint=None,
        final_since=None,
        consecutive_failures=0,
        customer=customer if customer is not None else f"cus_{number}",
        subscription=f"sub_{number}",
    )


def page(items: list[Any], **fields: Any) -> bytes:
    return json.dumps({"object": "list", "items": items, **fields}).encode()


class TestPlanning:
    """Due orders are grouped by customer, a page's worth per request, when that is cheaper."""

    def test_a_hundred_customers_per_page(self) -> None:
        """Due orders of 250 customers are planned as pages of at most a hundred customers."""
        batches, by_id = SweepPlanner(mode="auto").plan([claim(n) for n in range(250)])
        assert by_id == []
        assert [len(b.values) for b in batches] == [MAX_VALUES, MAX_VALUES, 50]
        assert sum(len(b.claims) for b in batches) == 250
        assert batches[0].filters()["filter[customer][in]"].count(",") == MAX_VALUES - 1

    def test_one_customers_orders_go_together(self) -> None:
        """Several due orders of one customer share that customer's filter value."""
        claims = [claim(n, customer="cus_shared") for n in range(3)] + [claim(9)]
        batches, by_id = SweepPlanner(mode="auto").plan(claims)
        assert by_id == []
        assert len(batches) == 1
        assert batches[0].values == ("cus_9", "cus_shared")
        assert len(batches[0].claims) == 4

    def test_auto_polls_by_id_when_pages_cost_as_much(self) -> None:
        """In auto mode one due order is polled by id; in list mode it is still listed."""
        planner = SweepPlanner(mode="auto")
        batches, by_id = planner.plan([claim(1)])
        assert batches == []  # one order: one request either way
        assert [c.order_id for c in by_id] == [claim(1).order_id]
        assert SweepPlanner(mode="list").plan([claim(1)])[0] != []

    def test_unknown_customers_are_polled_by_id(self) -> None:
        """An order whose customer is not known yet is polled by id."""
        unknown = Claim(
            order_id="prdo_" + "z" * 24,
            status=None,
            fingerprint=None,
            final_since=None,
            consecutive_failures=0,
        )
        batches, by_id = SweepPlanner(mode="list").plan([unknown, claim(1), claim(2)])
        assert by_id == [unknown]
        assert len(batches[0].claims) == 2

    def test_ids_never_sweeps(self) -> None:
        """In ids mode every due order is polled by id."""
        claims = [claim(n) for n in range(10)]
        assert SweepPlanner(mode="ids").plan(claims) == ([], claims)

    def test_learns_customers_with_many_orders(self) -> None:
        """Learning many orders per customer shrinks pages and favours polls by id."""
        planner = SweepPlanner(mode="auto")
        for _ in range(30):
            planner.learn(values=100, items=2500)  # 25 orders per customer asked for
        assert planner.per_value == pytest.approx(25, rel=0.01)
        assert planner.values_per_page() == 4
        # Three customers holding one due order each now cost a page each: poll by id.
        batches, by_id = planner.plan([claim(1), claim(2), claim(3)])
        assert len(by_id) + sum(len(b.claims) for b in batches) == 3
        assert all(planner.pages_for(len(b.values)) < len(b.claims) for b in batches)

    def test_an_ignored_filter_is_not_sent_again(self) -> None:
        """An ignored filter falls back to the next field, and with none left to polls by id."""
        planner = SweepPlanner(mode="list")
        planner.ignore("customer")
        batches, _ = planner.plan([claim(1), claim(2)])
        assert batches[0].field == "subscription"
        assert "filter[subscription][in]" in batches[0].filters()
        planner.ignore("subscription")
        assert planner.field is None
        assert planner.plan([claim(1), claim(2)])[0] == []


class TestStrays:
    """Every item is checked against the filter that was sent."""

    def test_an_item_of_another_customer_is_a_stray(self) -> None:
        """A listed item of a customer not asked for is a stray."""
        batch = SweepPlanner(mode="list").plan([claim(1), claim(2)])[0][0]
        inside = MeterOrder.from_item(order_body(claim(1).order_id, customer="cus_1"))
        outside = MeterOrder.from_item(order_body(claim(3).order_id, customer="cus_3"))
        assert strays(batch, [inside, outside]) == [outside]


class TestListPage:
    """A list page is read strictly: anything but a list of meter orders is refused whole."""

    def test_a_good_page(self) -> None:
        """A good page gives its items, raw as listed, and the next page's cursor."""
        body = order_body("prdo_" + "a" * 24, status="checked", extra={"new": 1})
        parsed = ListPage.parse(page([body], has_more=True, next_page="c2"))
        assert parsed.next_page == "c2"
        assert parsed.items[0].status == "checked"
        assert json.loads(parsed.items[0].raw) == body  # stored as the list returned it

    def test_the_last_page_has_no_cursor(self) -> None:
        """The last page gives no next cursor."""
        assert ListPage.parse(page([], has_more=False, next_page=None)).next_page is None

    @pytest.mark.parametrize(
        ("body", "reason"),
        [
            (b"[]", "not a 'list' object"),
            (json.dumps({"object": "meter_order"}).encode(), "not a 'list' object"),
            (page([], next_page=None), "lacks 'has_more'"),
            (page([], has_more="yes"), "lacks 'has_more'"),
            (page([], has_more=True, next_page=None), "no 'next_page'"),
            (json.dumps({"object": "list", "has_more": False}).encode(), "no 'items'"),
            (page([{"object": "customer", "id": "cus_1"}], has_more=False), "not a meter order"),
            (page(["prdo_x"], has_more=False), "not an object"),
            (b"not json", "not JSON"),
        ],
    )
    def test_a_bad_page_is_refused(self, body: bytes, reason: str) -> None:
        """A bad list page is refused whole as malformed, with its reason."""
        with pytest.raises(MalformedAnswer, match=reason):
            ListPage.parse(body)

    @pytest.mark.parametrize(
        ("changes", "reason"),
        [
            ({"status": None}, "'status' is missing"),
            ({"status": "x" * 65}, "'status' has 65 characters"),
            ({"customer": "cus_\x00"}, "'customer' holds U\\+0000"),
        ],
    )
    def test_a_malformed_order_is_refused_alone(self, changes: dict[str, Any], reason: str) -> None:
        """A meter order item with a bad field is left out with its reason; the rest are read."""
        good, bad = "prdo_" + "a" * 24, "prdo_" + "b" * 24
        body = page([order_body(good), order_body(bad, **changes)], has_more=False)
        parsed = ListPage.parse(body)
        assert [order.id for order in parsed.items] == [good]
        assert list(parsed.refused) == [bad]
        assert re.search(reason, parsed.refused[bad])
