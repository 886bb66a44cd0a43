"""The support desk's pages on a real server and client, on both databases: what changed in a
period (and its CSV, byte for byte ``tracker export``'s), bulk retries of dead letters with a
confirmation, and watching orders from the pages."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import markupsafe
import pytest
import structlog

from tests.outbox import FAST, deliver_all, hook_sink, poll
from tests.support import (
    ScriptedUpstream,
    app_client,
    error,
    ok,
    settings_mapping,
    tracker_cli,
    write_config,
)
from tests.users import FORM, NOWHERE, READ_TOKEN, USERS, WRITE_TOKEN
from tracker.clock import utc_now
from tracker.config import from_mapping
from tracker.model import DeliveryState
from tracker.service import Service, open_service
from tracker.web import Metrics, build_app

#: Every test here runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.usefixtures("database")

A = "prdo_aaaaaaaaaaaaaaaaaaaaaaaa"
B = "prdo_bbbbbbbbbbbbbbbbbbbbbbbb"
F = "prdo_ffffffffffffffffffffffff"
H = "prdo_hhhhhhhhhhhhhhhhhhhhhhhh"
NEW = "prdo_newnewnewnewnewnewnewnewn"
OTHER = "prdo_otherotherotherotherother"


HOSTILE_STATUS = "<script>alert('status')</script>"
Upstream = tuple[ScriptedUpstream, str]


@dataclass
class Desk:
    """Live pages and a config file over one database: A ordered → checked (dead at ``ops``
    and at ``audit``), H to a hostile status (dead at ``audit``), B only ordered, F failing."""

    client: httpx.AsyncClient
    url: str
    service: Service
    config: str


@pytest.fixture
async def desk(upstream: Upstream, tmp_path: Path) -> AsyncIterator[Desk]:
    """The seeded database, its config file for the CLI, and the pages served over it."""
    scripted, url = upstream
    scripted.script(A, ok("ordered"), ok("checked"))
    scripted.script(B, ok("ordered"))
    scripted.script(F, error(500))
    scripted.script(H, ok("ordered"), ok(HOSTILE_STATUS))
    mapping = settings_mapping(
        tmp_path,
        url,
        delivery=FAST,
        sinks=[hook_sink("ops", NOWHERE, ["*->checked"]), hook_sink("audit", NOWHERE, ["*"])],
        http={"listen": "127.0.0.1:0", "users": USERS},
    )
    config = str(write_config(tmp_path / "c.toml", mapping))
    settings = from_mapping(mapping, {}, origin="test")
    async with open_service(settings) as service:
        await service.store.orders.watch([A, B, F, H], source="cli", now=utc_now())
        await poll(service, A, B, F, H)
        await poll(service, A, H)
        await deliver_all(service)
        app = build_app(store=service.store, metrics=Metrics(), users=settings.http.users,
                        sinks=lambda: [s.name for s in settings.sinks])  # fmt: skip
        async with app_client(app) as (base, client):
            yield Desk(client=client, url=base, service=service, config=config)


async def login(client: httpx.AsyncClient, token: str) -> httpx.Response:
    """POST the login form; the client keeps the cookie it sets."""
    return await client.post("/login", data={"token": token})


def csrf_of(page: httpx.Response) -> str:
    """The CSRF token of the first form on ``page``."""
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None, "no CSRF token on the page"
    return found.group(1)


async def dead(desk: Desk) -> list[tuple[str, str]]:
    """The dead deliveries as (order, sink), sorted."""
    found = desk.service.store.outbox.deliveries(state=DeliveryState.DEAD.value)
    return sorted([(d.order_id, d.sink) async for d in found])


class TestChanges:
    """``/changes`` lists a day's transitions, latest first, filtered by status, each linked."""

    async def test_today(self, desk: Desk) -> None:
        """Today's page lists both transitions, latest first, escaped, linked to the orders,
        with links to the day before and after and to the CSV."""
        await login(desk.client, READ_TOKEN)
        board = await desk.client.get("/")
        assert 'href="/changes"' in board.text
        page = await desk.client.get("/changes")
        assert page.status_code == 200
        assert page.text.index(f'data-order="{H}"') < page.text.index(f'data-order="{A}"')
        assert f'href="/orders/{A}"' in page.text
        assert str(markupsafe.escape(HOSTILE_STATUS)) in page.text
        assert HOSTILE_STATUS not in page.text
        today = utc_now().date()
        for day in (today - timedelta(days=1), today + timedelta(days=1)):
            assert f'href="/changes?day={day.isoformat()}"' in page.text
        assert f'href="/changes.csv?day={today.isoformat()}"' in page.text
        yesterday = await desk.client.get(f"/changes?day={today - timedelta(days=1)}")
        assert "No status changed in this period" in yesterday.text

    async def test_status_filter(self, desk: Desk) -> None:
        """A status keeps its transitions only; an unknown one is a 400 naming it."""
        await login(desk.client, READ_TOKEN)
        checked = await desk.client.get("/changes?status=checked")
        assert f'data-order="{A}"' in checked.text
        assert f'data-order="{H}"' not in checked.text
        unknown = await desk.client.get("/changes?status=chekced")
        assert unknown.status_code == 400
        assert "&#39;chekced&#39; is not a known status" in unknown.text
        bad_day = await desk.client.get("/changes?day=2026-13-01")
        assert bad_day.status_code == 400
        assert "is not a date" in bad_day.text
        both = await desk.client.get("/changes?day=2026-01-01&since=2026-01-01")
        assert both.status_code == 400

    async def test_range(self, desk: Desk) -> None:
        """``since`` and ``until`` give a range: one that ends before today lists nothing; a
        page link not made here is a 400."""
        await login(desk.client, READ_TOKEN)
        today = utc_now().date()
        week = await desk.client.get(f"/changes?since={today - timedelta(days=7)}")
        assert f'data-order="{A}"' in week.text
        assert "until now" in week.text
        before = await desk.client.get(f"/changes?since={today - timedelta(days=7)}&until={today}")
        assert f'data-order="{A}"' not in before.text
        backwards = await desk.client.get(f"/changes?since={today}&until={today}")
        assert backwards.status_code == 400
        foreign = await desk.client.get("/changes?cursor=bm90LW91cnM")
        assert foreign.status_code == 400
        assert "not one this site made" in foreign.text

    @pytest.mark.parametrize("status", [None, "checked"])
    async def test_csv_is_the_export(self, desk: Desk, status: str | None) -> None:
        """The page's CSV is byte for byte what ``tracker export`` prints for the same day
        and status."""
        await login(desk.client, READ_TOKEN)
        today = utc_now().date()
        query = f"day={today}" + (f"&status={status}" if status else "")
        page = await desk.client.get(f"/changes?{query}")
        [link] = re.findall(r'href="(/changes\.csv\?[^"]+)"', page.text)
        served = await desk.client.get(link.replace("&amp;", "&"))
        assert served.status_code == 200
        assert served.headers["content-type"] == "text/csv; charset=utf-8"
        assert "attachment" in served.headers["content-disposition"]
        args = ["--since", str(today), "--until", str(today + timedelta(days=1))]
        ran = await tracker_cli(
            "export", *args, *(["--status", status] if status else []), "--config", desk.config
        )
        assert ran.code == 0, ran.err
        assert served.text == ran.out
        assert len(served.text.splitlines()) == (2 if status else 3)

    async def test_login_needed(self, desk: Desk) -> None:
        """Without a session the page and its CSV send the browser to the login form."""
        for path in ("/changes", "/changes.csv"):
            answer = await desk.client.get(path)
            assert answer.status_code == 303
            assert answer.headers["location"].startswith("/login?next=")


class TestBulkRetry:
    """Write users retry all dead letters, one sink's or one order's, after a confirmation."""

    async def test_one_sink_after_confirmation(self, desk: Desk) -> None:
        """The list shows each event's kind; the sink's confirmation names how many; the POST
        queues them, is logged, and the list says how many were queued."""
        client = desk.client
        await login(client, WRITE_TOKEN)
        page = await client.get("/dead-letters")
        assert "<th>Kind</th>" in page.text
        assert '<td class="nowrap">transition</td>' in page.text
        assert "Retry all 3 dead letters" in page.text
        confirm = await client.get("/dead-letters/retry-all?sink=audit")
        assert confirm.status_code == 200
        assert '<strong id="retry-count">2</strong>' in confirm.text
        assert await dead(desk) == [(A, "audit"), (A, "ops"), (H, "audit")]  # nothing yet
        with structlog.testing.capture_logs() as logs:
            answer = await client.post(
                "/dead-letters/retry-all",
                data={"csrf": csrf_of(confirm), "sink": "audit", "order": ""},
                headers={"Origin": desk.url},
            )
        assert answer.status_code == 303
        assert parse_qs(urlsplit(answer.headers["location"]).query) == {
            "queued": ["2"],
            "sink": ["audit"],
        }
        assert await dead(desk) == [(A, "ops")]
        [logged] = [e for e in logs if e["event"] == "page_write"]
        assert (logged["user"], logged["pending"], logged["sink"]) == ("ops-bot", 2, "audit")
        after = await client.get(answer.headers["location"])
        assert "Queued 2 dead letters to sink audit again" in after.text

    async def test_one_order_and_all(self, desk: Desk) -> None:
        """One order's dead letters go, then all the rest; nothing left says so."""
        client = desk.client
        await login(client, WRITE_TOKEN)
        confirm = await client.get(f"/dead-letters/retry-all?order={H}")
        assert '<strong id="retry-count">1</strong>' in confirm.text
        token = csrf_of(confirm)
        await client.post("/dead-letters/retry-all", data={"csrf": token, "order": H})
        assert await dead(desk) == [(A, "audit"), (A, "ops")]
        everything = await client.get("/dead-letters/retry-all")
        assert '<strong id="retry-count">2</strong>' in everything.text
        await client.post("/dead-letters/retry-all", data={"csrf": token})
        assert await dead(desk) == []
        none = await client.get("/dead-letters/retry-all")
        assert "nothing to retry" in none.text
        assert 'method="post"' not in none.text.split("<main>")[1]

    async def test_unknown_sink_or_order(self, desk: Desk) -> None:
        """A sink or order that is not known is a 400 naming it; nothing is retried."""
        client = desk.client
        await login(client, WRITE_TOKEN)
        for query, named in (("sink=nosuch", "nosuch"), (f"order={NEW}", NEW), ("order=x", "x")):
            answer = await client.get(f"/dead-letters/retry-all?{query}")
            assert answer.status_code == 400, query
            assert named in answer.text
        page = await client.get("/dead-letters")
        refused = await client.post(
            "/dead-letters/retry-all", data={"csrf": csrf_of(page), "sink": "nosuch"}
        )
        assert refused.status_code == 400
        assert len(await dead(desk)) == 3

    async def test_read_user_cannot(self, desk: Desk) -> None:
        """A read user sees no bulk controls; the confirmation and the POST are refused."""
        client = desk.client
        await login(client, READ_TOKEN)
        page = await client.get("/dead-letters")
        assert "retry-all" not in page.text
        assert (await client.get("/dead-letters/retry-all")).status_code == 403
        answer = await client.post("/dead-letters/retry-all", data={"csrf": csrf_of(page)})
        assert answer.status_code == 403
        assert len(await dead(desk)) == 3

    async def test_api(self, desk: Desk) -> None:
        """``POST /api/v1/deliveries/retry`` retries the matching dead ones (202, how many);
        a read token gets 403 and an unknown sink 422."""
        client = desk.client
        path = "/api/v1/deliveries/retry"
        read = {"Authorization": f"Bearer {READ_TOKEN}"}
        write = {"Authorization": f"Bearer {WRITE_TOKEN}"}
        assert (await client.post(path, json={"state": "dead"}, headers=read)).status_code == 403
        unknown = await client.post(path, json={"state": "dead", "sink": "nosuch"}, headers=write)
        assert unknown.status_code == 422
        assert "nosuch" in unknown.json()["error"]["message"]
        answer = await client.post(
            path, json={"state": "dead", "sink": "audit", "order_id": A}, headers=write
        )
        assert answer.status_code == 202
        assert answer.json() == {"retried": 1}
        assert await dead(desk) == [(A, "ops"), (H, "audit")]


def upload(name: str, text: str) -> dict[str, tuple[str, bytes, str]]:
    return {"file": (name, text.encode(), "text/csv")}


class TestWatch:
    """``/watch`` watches pasted or uploaded ids as ``tracker watch add`` does."""

    async def test_paste_with_a_bad_line(self, desk: Desk) -> None:
        """The good ids are watched, counted new or already watched; the bad line is reported
        with its number."""
        client = desk.client
        await login(client, WRITE_TOKEN)
        page = await client.get("/watch")
        assert 'name="ids"' in page.text
        pasted = f"{NEW}\n\n{A}\nnot-an-id <b>\n"
        with structlog.testing.capture_logs() as logs:
            answer = await client.post(
                "/watch",
                data={"csrf": csrf_of(page), "ids": pasted},
                files={"file": ("", b"", "application/octet-stream")},
                headers={"Origin": desk.url},
            )
        assert answer.status_code == 422
        assert "Watching 1 new order(s); 1 already watched." in answer.text
        assert '<td class="num">4</td><td class="mono">not-an-id &lt;b&gt;</td>' in answer.text
        assert (await desk.service.store.orders.get(NEW)) is not None
        assert [e["added"] for e in logs if e["event"] == "page_write"] == [[NEW]]

    async def test_same_counts_as_the_cli(self, desk: Desk) -> None:
        """A paste of ids says what ``tracker watch add`` says for the same ids."""
        client = desk.client
        await login(client, WRITE_TOKEN)
        page = await client.get("/watch")
        answer = await client.post("/watch", data={"csrf": csrf_of(page), "ids": f"{NEW}\n{A}"})
        assert answer.status_code == 200
        ran = await tracker_cli("watch", "add", OTHER, B, "--config", desk.config)
        assert ran.code == 0, ran.err
        assert ran.out.strip() == "watching 1 new order(s); 1 already watched"
        assert "Watching 1 new order(s); 1 already watched." in answer.text

    @pytest.mark.parametrize(
        "text",
        [
            f"customer,meter_order_id,note\ncus_1,{NEW},a\ncus_2,{OTHER},b\ncus_3,bad,c\n",
            f"{NEW},x\n{OTHER},y\nbad,z\n",
            f"ID;x\n{NEW}\n{OTHER}\nbad\n".replace(";x", ""),
        ],
        ids=["header", "no-header", "id-column"],
    )
    async def test_csv_upload(self, desk: Desk, text: str) -> None:
        """The id column is found by its header or is the first; the bad line is named."""
        client = desk.client
        await login(client, WRITE_TOKEN)
        page = await client.get("/watch")
        answer = await client.post(
            "/watch", data={"csrf": csrf_of(page)}, files=upload("ids.csv", text)
        )
        assert answer.status_code == 422
        assert "Watching 2 new order(s); 0 already watched." in answer.text
        line = 3 if text.startswith(NEW) else 4
        assert f'<td class="num">{line}</td><td class="mono">bad</td>' in answer.text
        assert "of the uploaded file refused" in answer.text

    async def test_limits_and_mistakes(self, desk: Desk) -> None:
        """An upload over the limit is a 413 saying so; an empty form and a paste with a file
        are 400 with the form again; a file that is not UTF-8 is 400."""
        client = desk.client
        await login(client, WRITE_TOKEN)
        token = csrf_of(await client.get("/watch"))
        big = await client.post(
            "/watch", data={"csrf": token}, files=upload("big.csv", NEW + "\n" * (1024 * 1024))
        )
        assert big.status_code == 413
        assert "larger than 1024 KiB" in big.text
        empty = await client.post("/watch", data={"csrf": token, "ids": " "})
        assert empty.status_code == 400
        assert "Paste at least one order id" in empty.text
        both = await client.post("/watch", data={"csrf": token, "ids": NEW}, files=upload("a", A))
        assert both.status_code == 400
        latin = await client.post(
            "/watch", data={"csrf": token}, files={"file": ("l.csv", b"\xe9\xff", "text/csv")}
        )
        assert latin.status_code == 400
        assert "not UTF-8" in latin.text
        assert (await desk.service.store.orders.get(NEW)) is None

    async def test_read_user(self, desk: Desk) -> None:
        """A read user sees the page without forms or order controls; POSTs get 403."""
        client = desk.client
        await login(client, READ_TOKEN)
        page = await client.get("/watch")
        assert "needs a user with the write role" in page.text
        assert 'name="ids"' not in page.text
        order = await client.get(f"/orders/{A}")
        assert "/unwatch" not in order.text
        token = csrf_of(page)
        for path in ("/watch", f"/orders/{A}/unwatch"):
            answer = await client.post(path, data={"csrf": token, "ids": NEW}, headers=FORM)
            assert answer.status_code == 403, path
        watched = await desk.service.store.orders.get(A)
        assert watched is not None
        assert watched.active

    async def test_unwatch_and_watch_one(self, desk: Desk) -> None:
        """The order page's button stops watching the order, and the next one watches it
        again; a POST without the CSRF token is refused."""
        client = desk.client
        await login(client, WRITE_TOKEN)
        order = await client.get(f"/orders/{A}")
        assert f'action="/orders/{A}/unwatch"' in order.text
        assert (await client.post(f"/orders/{A}/unwatch")).status_code == 403
        answer = await client.post(f"/orders/{A}/unwatch", data={"csrf": csrf_of(order)})
        assert answer.status_code == 303
        assert answer.headers["location"] == f"/orders/{A}"
        watched = await desk.service.store.orders.get(A)
        assert watched is not None
        assert not watched.active
        again = await client.get(f"/orders/{A}")
        assert f'action="/orders/{A}/watch"' in again.text
        await client.post(f"/orders/{A}/watch", data={"csrf": csrf_of(again)})
        watched = await desk.service.store.orders.get(A)
        assert watched is not None
        assert watched.active
        missing = await client.post(f"/orders/{NEW}/unwatch", data={"csrf": csrf_of(again)})
        assert missing.status_code == 404
