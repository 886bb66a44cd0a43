"""The simulated upstream on a real local server, asked by a real client: list pages and hints."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import json
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response

from tests.support import ROOT
from tracker.demo.hints import HINT_TOPICS, HintTarget
from tracker.demo.serving import catch_all, serve
from tracker.demo.simulator import (
    API_VERSION,
    Script,
    Simulator,
    demo_scripts,
    order_id,
    steady_scripts,
)

TOKEN = "nom_simulator_test_token"
HINT_SECRET = "hint-secret-under-test"
#: Scripted (watched) and unwatched orders of the simulator most tests ask.
WATCHED, UNWATCHED = 12, 40
#: Limits for a step to happen at all; missing one fails the test, it times nothing.
PATIENCE = 30.0
Page = dict[str, Any]


def client_for(url: str) -> httpx.AsyncClient:
    """A client sending the pinned version and the static token, as the tracker does."""
    return httpx.AsyncClient(
        base_url=url,
        headers={"Authorization": f"Bearer {TOKEN}", "X-API-Version": API_VERSION},
        timeout=10,
        trust_env=False,
    )


@pytest.fixture
async def running() -> AsyncIterator[tuple[Simulator, httpx.AsyncClient]]:
    """A simulator with a dozen demo orders and 40 unwatched ones, and a client on it."""
    simulator = Simulator(demo_scripts(30.0), unwatched=UNWATCHED, static_token=TOKEN)
    async with serve(simulator.app) as server, client_for(server.url) as client:
        yield simulator, client


async def page(client: httpx.AsyncClient, **params: Any) -> Page:
    """One list page, which must be answered 200 with the documented shape."""
    answer = await client.get("/meter-orders", params=params)
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-api-version"] == API_VERSION
    body: Page = answer.json()
    assert body["object"] == "list"
    assert body["has_more"] is (body["next_page"] is not None)
    return body


async def sweep(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    """Every item of a list, page after page, passing each ``next_page`` back as ``cursor``."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        body = await page(client, **params, **({"cursor": cursor} if cursor else {}))
        items += body["items"]
        cursor = body["next_page"]
        if cursor is None:
            return items


def ids(items: list[dict[str, Any]]) -> list[str]:
    """The order ids of ``items``, in order."""
    return [item["id"] for item in items]


def moment(text: str) -> datetime:
    """An RFC 3339 timestamp as served."""
    return datetime.fromisoformat(text)


async def refused(client: httpx.AsyncClient, code: int, **params: Any) -> dict[str, Any]:
    """A list request answered ``code`` with the provider's error body."""
    answer = await client.get("/meter-orders", params=params)
    assert answer.status_code == code, answer.text
    body: dict[str, Any] = answer.json()
    assert set(body) == {"code", "message", "requestId", "docs"}
    return body


class TestPaging:
    """A sweep through the cursors sees every order once, newest first."""

    async def test_a_whole_sweep_has_no_duplicates_and_no_misses(
        self, running: tuple[Simulator, httpx.AsyncClient]
    ) -> None:
        """A sweep returns every order once, newest first, with distinct creation times."""
        simulator, client = running
        items = await sweep(client, limit=7)
        assert len(items) == WATCHED + UNWATCHED
        assert len(set(ids(items))) == len(items)
        assert set(simulator.order_ids) < set(ids(items))
        keys = [(moment(item["created_at"]), item["id"]) for item in items]
        assert keys == sorted(keys, reverse=True)
        assert len({item["created_at"] for item in items}) == len(items)

    async def test_default_page_is_ten_and_the_bounds_are_one_and_a_hundred(
        self, running: tuple[Simulator, httpx.AsyncClient]
    ) -> None:
        """A page holds ten items by default, from one to a hundred when asked."""
        _simulator, client = running
        assert len((await page(client))["items"]) == 10
        one = await page(client, limit=1)
        assert len(one["items"]) == 1
        assert one["has_more"] is True
        everything = await page(client, limit=100)
        assert len(everything["items"]) == WATCHED + UNWATCHED
        assert everything["has_more"] is False
        assert everything["next_page"] is None

    @pytest.mark.parametrize("limit", ["0", "101", "-1", "ten", "2.5", ""])
    async def test_a_limit_out_of_bounds_is_400(
        self, running: tuple[Simulator, httpx.AsyncClient], limit: str
    ) -> None:
        """A limit out of bounds is refused with 400 naming limit."""
        _simulator, client = running
        body = await refused(client, 400, limit=limit)
        assert body["code"] == "BAD_REQUEST"
        assert "limit" in body["message"]

    @pytest.mark.parametrize(
        "cursor",
        [
            "not base64 at all!",
            base64.urlsafe_b64encode(b"3:prdo_notthisonenotthisonenotth").decode(),
            base64.urlsafe_b64encode(b"100000:x").decode(),
            base64.urlsafe_b64encode(b"x:y").decode(),
        ],
    )
    async def test_a_cursor_it_did_not_give_is_400(
        self, running: tuple[Simulator, httpx.AsyncClient], cursor: str
    ) -> None:
        """A cursor the simulator did not give is refused with 400 naming cursor."""
        _simulator, client = running
        body = await refused(client, 400, cursor=cursor)
        assert "cursor" in body["message"]

    async def test_items_are_what_the_by_id_call_answers(
        self, running: tuple[Simulator, httpx.AsyncClient]
    ) -> None:
        """A listed item equals the by-id answer, and both kinds of request are counted."""
        simulator, client = running
        items = (await page(client, limit=100))["items"]
        for item in items[:15]:
            single = await client.get(f"/meter-orders/{item['id']}")
            assert single.json() == item
        assert simulator.stats.list_requests == 1
        assert simulator.stats.id_requests == 15
        assert simulator.stats.items_served == len(items)

    async def test_a_large_organisation_sweeps_in_pages_of_a_hundred(self) -> None:
        """3,500 orders sweep in 35 pages of a hundred, each once."""
        simulator = Simulator(steady_scripts(3000), unwatched=500, static_token=TOKEN)
        async with serve(simulator.app) as server, client_for(server.url) as client:
            items = await sweep(client, limit=100)
        assert len(set(ids(items))) == len(items) == 3500
        assert simulator.stats.list_requests == 35
        assert simulator.stats.items_served == 3500


class TestFilters:
    """Each documented filter selects; what the API does not know is ignored without a word."""

    async def test_status_eq_ne_and_in(self, running: tuple[Simulator, httpx.AsyncClient]) -> None:
        """Status filters eq, ne and in select exactly the matching orders across pages."""
        _simulator, client = running
        everything = await sweep(client, limit=100)
        statuses = {item["status"] for item in everything}
        assert len(statuses) > 3
        some, other = sorted(statuses)[:2]
        eq = await sweep(client, limit=3, **{"filter[status][eq]": some})
        assert ids(eq) == [item["id"] for item in everything if item["status"] == some]
        ne = await sweep(client, limit=3, **{"filter[status][ne]": some})
        assert ids(ne) == [item["id"] for item in everything if item["status"] != some]
        both = await sweep(client, limit=3, **{"filter[status][in]": f"{some},{other}"})
        assert ids(both) == [item["id"] for item in everything if item["status"] in {some, other}]

    async def test_customer_and_subscription(
        self, running: tuple[Simulator, httpx.AsyncClient]
    ) -> None:
        """Customer and subscription filters select their orders."""
        simulator, client = running
        first, second = simulator.order_ids[:2]
        customer = await sweep(client, **{"filter[customer][eq]": "cus_" + first[5:]})
        assert ids(customer) == [first]
        wanted = f"sub_{first[5:]},sub_{second[5:]}"
        subscriptions = await sweep(client, **{"filter[subscription][in]": wanted})
        assert set(ids(subscriptions)) == {first, second}

    async def test_is_null_true_and_false(
        self, running: tuple[Simulator, httpx.AsyncClient]
    ) -> None:
        """is_null true and false select, and any other value is refused with 400."""
        _simulator, client = running
        assert (await page(client, **{"filter[customer][is_null]": "true"}))["items"] == []
        not_null = await sweep(client, limit=100, **{"filter[customer][is_null]": "false"})
        assert len(not_null) == WATCHED + UNWATCHED
        body = await refused(client, 400, **{"filter[customer][is_null]": "maybe"})
        assert "is_null" in body["message"]

    async def test_created_at_between_two_dates(
        self, running: tuple[Simulator, httpx.AsyncClient]
    ) -> None:
        """created_at gte and lte select a range, and a non-RFC 3339 date gets 400."""
        _simulator, client = running
        everything = await sweep(client, limit=100)
        newest, oldest = everything[10]["created_at"], everything[20]["created_at"]
        between = await sweep(
            client,
            limit=4,
            **{"filter[created_at][lte]": newest, "filter[created_at][gte]": oldest},
        )
        assert ids(between) == ids(everything[10:21])
        body = await refused(client, 400, **{"filter[created_at][gte]": "last tuesday"})
        assert "RFC 3339" in body["message"]

    async def test_filters_combine_with_and(
        self, running: tuple[Simulator, httpx.AsyncClient]
    ) -> None:
        """Several filters combine with AND."""
        simulator, client = running
        first = simulator.order_ids[0]
        status = simulator.status_of(first)
        same = await sweep(
            client, **{"filter[customer][eq]": "cus_" + first[5:], "filter[status][eq]": status}
        )
        assert ids(same) == [first]
        other = await sweep(
            client, **{"filter[customer][eq]": "cus_" + first[5:], "filter[status][ne]": status}
        )
        assert other == []

    @pytest.mark.parametrize(
        "unknown",
        [
            {"filter[colour][eq]": "red"},  # an unknown field
            {"filter[status][like]": "wait%"},  # an unknown operator
            {"filter[status][gte]": "waiting"},  # an operator this field does not take
            {"filter[product][eq]": "prod_x"},  # documented, but meter orders have none
            {"filter[status]": "waiting"},  # not the documented shape
        ],
    )
    async def test_what_it_does_not_know_is_silently_ignored(
        self, running: tuple[Simulator, httpx.AsyncClient], unknown: dict[str, str]
    ) -> None:
        """An unknown filter is ignored without a word, listing everything."""
        _simulator, client = running
        everything = await sweep(client, limit=100)
        assert await sweep(client, limit=100, **unknown) == everything

    async def test_ignore_filters_plays_an_upstream_that_does_not_know_a_field(self) -> None:
        """ignore_filters makes a filter on that field a no-op while others still select."""
        simulator = Simulator(
            demo_scripts(30.0), unwatched=5, static_token=TOKEN, ignore_filters=("customer",)
        )
        first = simulator.order_ids[0]
        async with serve(simulator.app) as server, client_for(server.url) as client:
            ignored = await sweep(client, **{"filter[customer][eq]": "cus_" + first[5:]})
            kept = await sweep(client, **{"filter[subscription][eq]": "sub_" + first[5:]})
        assert len(ignored) == WATCHED + 5
        assert ids(kept) == [first]


class TestTheOrganisation:
    """Orders the tracker does not watch show in pages only; updated_at is wall-clock time."""

    async def test_unwatched_orders_are_listed_but_not_watched(
        self, running: tuple[Simulator, httpx.AsyncClient]
    ) -> None:
        """Orders the tracker does not watch are listed and answer by id too."""
        simulator, client = running
        listed = ids(await sweep(client, limit=100))
        unwatched = set(listed) - set(simulator.order_ids)
        assert len(simulator.order_ids) == WATCHED
        assert len(unwatched) == UNWATCHED
        one = sorted(unwatched)[0]
        answer = await client.get(f"/meter-orders/{one}")
        assert answer.status_code == 200
        assert answer.json()["customer"] == "cus_" + one[5:]

    async def test_updated_at_is_when_the_current_step_began(self) -> None:
        """updated_at is the wall-clock start of the current step, in pages and by id."""
        order = order_id("updated-at")
        script = Script(
            order_id=order, provider="metrify", steps=(("waiting", 1.0), ("ordered", 0))
        )
        # Clocks the test holds (both read by the simulator): its moments are where they are
        # put, however long a loaded machine takes between the requests.
        started = datetime(2026, 11, 25, 12, tzinfo=UTC)
        now = {"monotonic": 500.0, "wall": started.timestamp()}
        simulator = Simulator(
            [script],
            static_token=TOKEN,
            clock=lambda: now["monotonic"],
            wall_clock=lambda: now["wall"],
        )
        async with serve(simulator.app) as server, client_for(server.url) as client:
            before = (await page(client))["items"][0]
            for which in now:
                now[which] += 1.3  # into the second step, which began 1 s after the start
            after = (await page(client))["items"][0]
            by_id = (await client.get(f"/meter-orders/{order}")).json()
            since = await sweep(client, **{"filter[updated_at][gte]": after["updated_at"]})
            earlier = await sweep(client, **{"filter[updated_at][lte]": before["updated_at"]})
        assert (before["status"], after["status"]) == ("waiting", "ordered")
        assert moment(before["updated_at"]) == started
        assert moment(after["updated_at"]) == started + timedelta(seconds=1)
        assert moment(after["created_at"]) < moment(before["updated_at"])
        assert by_id == after
        assert (ids(since), earlier) == ([order], [])


class TestManners:
    """List pages pass the same auth, version pin, rate limit, counting and log as by-id calls."""

    async def test_auth_and_version(self, running: tuple[Simulator, httpx.AsyncClient]) -> None:
        """A list request with a wrong token gets 401; with an unknown version, 400."""
        _simulator, client = running
        client.headers["Authorization"] = "Bearer wrong"
        assert (await refused(client, 401))["code"] == "UNAUTHORIZED"
        client.headers["Authorization"] = f"Bearer {TOKEN}"
        client.headers["X-API-Version"] = "2026-05-27.curie"
        assert (await refused(client, 400))["code"] == "BAD_REQUEST"

    async def test_rate_limit_counts_and_the_request_log(self) -> None:
        """List pages are rate limited, counted and logged like calls by id."""
        log = io.StringIO()
        # A clock the test holds, standing still: every request falls in one second of it.
        simulator = Simulator(
            demo_scripts(30.0),
            static_token=TOKEN,
            rate_limit=3,
            request_log=log,
            clock=lambda: 500.0,
        )
        async with serve(simulator.app) as server, client_for(server.url) as client:
            await page(client)
            await client.get(f"/meter-orders/{simulator.order_ids[0]}")
            await page(client, limit=2)
            limited = await client.get("/meter-orders")
            stats = (await client.get("/_stats")).json()
        assert limited.status_code == 429
        assert limited.headers["retry-after"] == "1"
        assert (stats["list_requests"], stats["id_requests"]) == (3, 1)
        assert stats["items_served"] == 12
        assert stats["requests"] == 4
        assert stats["rate_limited"] == 1
        lines = [line.split(" ", 1)[1] for line in log.getvalue().splitlines()]
        assert lines == [
            "200 GET /meter-orders",
            f"200 GET /meter-orders/{simulator.order_ids[0]}",
            "200 GET /meter-orders",
            "429 GET /meter-orders",
        ]


@dataclass
class HintSink:
    """Receives the simulator's hints; answers ``status``; notes each one's arrival on ``clock``."""

    status: int = 204
    clock: Callable[[], float] = time.monotonic
    received: list[tuple[bytes, dict[str, str], float]] = field(default_factory=list)

    async def __call__(self, request: Request) -> Response:
        self.received.append((await request.body(), dict(request.headers), self.clock()))
        return Response(status_code=self.status)


async def until(check: Callable[[], bool], what: str, seconds: float = PATIENCE) -> None:
    """Wait until ``check()`` is true; fail after ``seconds`` saying ``what``."""
    async with asyncio.timeout(seconds):
        while not check():  # noqa: ASYNC110 - the simulator's counters
            await asyncio.sleep(0.05)
    assert check(), what


def verified(body: bytes, headers: dict[str, str], secret: str) -> dict[str, Any]:
    """The hint's body, once its ``X-Nomos-Signature`` checks out as a receiver checks it."""
    fields = dict(part.split("=", 1) for part in headers["x-nomos-signature"].split(","))
    signed = f"{fields['t']}.".encode() + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, fields["v1"])
    hint: dict[str, Any] = json.loads(body)
    assert hint["timestamp"] == int(fields["t"])
    return hint


def quick(seed: str, *steps: tuple[str, float]) -> Script:
    """A scripted order whose steps last the given seconds."""
    return Script(order_id=order_id(seed), provider="inexogy", steps=steps)


class TestHints:
    """Each scripted change is POSTed, signed, to the hint target, and recorded with its moment."""

    async def test_every_change_is_hinted_signed_and_recorded(self) -> None:
        """Each status change is hinted once, signed, when its moment comes, and recorded."""
        # Clocks the test holds, read by the simulator and the sink: they move only when the
        # test moves them, each time just past the next change's moment, so each hint is seen
        # arriving after its moment and before the next, however slow the machine.
        moments, past = (0.3, 0.6, 0.9), (0.35, 0.65, 0.95)
        start = {"monotonic": 500.0, "wall": 1_790_000_000.0}
        now = dict(start)
        sink = HintSink(clock=lambda: now["monotonic"])
        scripts = [
            quick("hint-a", ("waiting", 0.3), ("ordered", 0.3), ("checked", 0)),
            quick("hint-b", ("ordered", 0.5), ("ordered", 0.4), ("cancelled", 0)),
            quick("hint-c", ("activated", 0)),
        ]
        async with serve(catch_all(sink)) as hooks:
            simulator = Simulator(
                scripts,
                unwatched=3,
                static_token=TOKEN,
                hints=HintTarget(url=f"{hooks.url}/hooks/nomos", secret=HINT_SECRET),
                clock=lambda: now["monotonic"],
                wall_clock=lambda: now["wall"],
            )
            stats = simulator.stats

            def hinted(count: int) -> Callable[[], bool]:
                return lambda: stats.hints_sent + stats.hints_failed >= count

            async with simulator.hints_running():
                for count, moment in enumerate(past, start=1):
                    await asyncio.sleep(0.3)  # a hint sent before its moment would arrive here
                    now.update({which: start[which] + moment for which in start})
                    await until(hinted(count), f"hint {count} sent")
                await asyncio.sleep(0.3)  # and nothing more comes
        hints = [verified(body, headers, HINT_SECRET) for body, headers, _at in sink.received]
        changes = simulator.changes
        about = [(hint["context"]["meter_order"], hint["topic"]) for hint in hints]
        assert about == [(c.order_id, HINT_TOPICS[c.status]) for c in changes]
        assert [(c.order_id, c.status) for c in changes] == [
            (scripts[0].order_id, "ordered"),
            (scripts[0].order_id, "checked"),
            (scripts[1].order_id, "cancelled"),  # ordered -> ordered is no change
        ]
        assert [c.monotonic for c in changes] == [start["monotonic"] + m for m in moments]
        assert [c.wall for c in changes] == [start["wall"] + m for m in moments]
        assert all(hint["id"].startswith("evt_") for hint in hints)
        assert len({hint["id"] for hint in hints}) == 3
        assert all(h["content-type"] == "application/json" for _b, h, _at in sink.received)
        # Each came once its moment had come, and before the next one's.
        assert [at for _body, _headers, at in sink.received] == [
            start["monotonic"] + m for m in past
        ]
        # Signed with the wall clock of its sending.
        assert [hint["timestamp"] for hint in hints] == [int(start["wall"] + m) for m in past]
        assert (stats.hints_sent, stats.hints_failed) == (3, 0)
        assert stats.requests == 0  # hints go the other way

    async def test_a_refused_or_unreachable_hint_is_counted_and_the_simulator_serves_on(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A refused or unreachable hint is counted and reported, and serving goes on."""
        sink = HintSink(status=500)
        scripts = [quick("hint-d", ("waiting", 0.2), ("ordered", 0))]
        async with serve(catch_all(sink)) as hooks:
            refusing = Simulator(
                scripts, static_token=TOKEN, hints=HintTarget(url=hooks.url, secret=HINT_SECRET)
            )
            async with serve(refusing.app) as server, refusing.hints_running():
                await until(lambda: refusing.stats.hints_failed > 0, "the refusal counted")
                async with client_for(server.url) as client:
                    assert len((await page(client))["items"]) == 1
        # A privileged port nothing listens on (a closed test server's port could be taken by
        # another test's server meanwhile).
        unreachable = Simulator(
            scripts,
            static_token=TOKEN,
            hints=HintTarget(url="http://127.0.0.1:9/hooks", secret=HINT_SECRET),
        )
        async with unreachable.hints_running():
            await until(lambda: unreachable.stats.hints_failed > 0, "the failure counted")
        assert (refusing.stats.hints_sent, refusing.stats.hints_failed) == (0, 1)
        assert (unreachable.stats.hints_sent, unreachable.stats.hints_failed) == (0, 1)
        err = capsys.readouterr().err
        assert "HTTP 500" in err
        assert err.count(f"hint about {scripts[0].order_id} not delivered") == 2

    async def test_without_a_target_changes_are_still_recorded(self) -> None:
        """Without a hint target, changes are still recorded at their moments."""
        script = quick("hint-e", ("waiting", 0.2), ("ordered", 0))
        now = [500.0]  # a clock the test holds: the simulator's moments are exact on it
        simulator = Simulator([script], clock=lambda: now[0])
        assert simulator.changes == []
        async with simulator.hints_running():
            now[0] = 500.19
            assert simulator.changes == []
            now[0] = 500.3
        assert [(c.order_id, c.status) for c in simulator.changes] == [(script.order_id, "ordered")]
        assert simulator.changes[0].monotonic == 500.0 + 0.2


class TestCommandLine:
    """``python -m tracker.demo.simulator`` announces its URL and orders, and takes the flags."""

    async def test_steady_orders_unwatched_ones_and_an_ignored_filter(self) -> None:
        """The simulator's command line announces its URL and orders and honours its flags."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tracker.demo.simulator",
            *("--steady", "--orders", "5", "--unwatched", "7", "--port", "0"),
            *("--token", TOKEN, "--ignore-filter", "status"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        assert process.stdout is not None
        try:
            announced = json.loads(await asyncio.wait_for(process.stdout.readline(), 30))
            async with client_for(announced["url"]) as client:
                items = await sweep(client, limit=3, **{"filter[status][eq]": "cancelled"})
                stats = (await client.get("/_stats")).json()
        finally:
            process.terminate()
            await process.wait()
        assert len(announced["orders"]) == 5
        assert len(items) == 12
        assert set(announced["orders"]) < set(ids(items))
        assert stats["list_requests"] == 4
