"""Hostile peers on loopback: answers that drip, answers too large, JSON too deep, long pauses.

A deadline under test is judged by what it cut short (a dripping peer would otherwise hold a
request for minutes), never by how soon it fired: a loaded machine only makes that later.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import random
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog

from tests.hostile import HostilePeer, answer, drip, huge, order_json, serve_order
from tests.support import ScriptedUpstream, error, make_settings, ok
from tracker.app import Polling, open_polling
from tracker.clock import utc_now
from tracker.daemon import Daemon
from tracker.demo.serving import catch_all, serve
from tracker.errors import MalformedAnswer, TransientError
from tracker.model import Claim, DueDelivery
from tracker.poller import Poller, poll_now
from tracker.service import open_service
from tracker.sinks.registry import build_sinks
from tracker.sinks.render import event_body
from tracker.store import PollOutcome
from tracker.supervision import supervised
from tracker.upstream import build_client

A = "prdo_aaaaaaaaaaaaaaaaaaaaaaaa"
B = "prdo_bbbbbbbbbbbbbbbbbbbbbbbb"
C = "prdo_cccccccccccccccccccccccc"
D = "prdo_dddddddddddddddddddddddd"
HEALTHY = [f"prdo_healthy{n:012d}" for n in range(6)]
SECRET = "whsec_" + base64.b64encode(b"hostile-receiver-secret-32-bytes").decode()
#: Limits for a step to happen at all; missing one fails the test, it times nothing. Shorter
#: than any drip here, so that a request no deadline ends fails rather than succeeds.
PATIENCE = 30.0
#: The timeout of a test whose answers are not about it: a bound on a hang (a loaded machine may
#: take more than the suite's default half second to carry even a prompt answer).
TIMEOUT = 10


def path(order_id: str) -> str:
    return f"/meter-orders/{order_id}"


async def until(predicate: Any, seconds: float = PATIENCE) -> None:
    """Wait until ``await predicate()`` is true, at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


@pytest.fixture
def logs() -> Any:
    with structlog.testing.capture_logs() as entries:
        yield entries


class TestOverallDeadline:
    """An answer that drips one byte at a time ends at the request's timeout, as a failed poll."""

    async def test_client_gives_up_at_the_deadline(self, tmp_path: Path) -> None:
        """A dripping answer fails as timed out at the request's timeout, not when it ends."""
        async with HostilePeer(default=drip(order_json(A, "checked"), every=0.3)) as peer:
            settings = make_settings(tmp_path, peer.url, upstream={"timeout": 1})
            client, http = build_client(settings.upstream)
            async with http:
                with pytest.raises(TransientError, match=r"^timed out after 1 s$"):
                    async with asyncio.timeout(PATIENCE):
                        await client.fetch(A)
                # Without a deadline: 300 bytes at 0.3 s each, 90 s, and then "a success".
                assert peer.finished == []  # the answer was still dripping

    @pytest.mark.usefixtures("database")
    async def test_drips_do_not_starve_the_other_orders(self, tmp_path: Path) -> None:
        """Two dripping orders time out while every healthy order is polled and stored."""
        # The drips last a minute; the timeout ends them, and a healthy answer, sent at once,
        # still arrives within it on a loaded machine.
        behaviours = {path(A): drip(order_json(A, "checked"), 0.2)}
        behaviours[path(B)] = drip(order_json(B, "checked"), 0.2)
        async with HostilePeer(behaviours, default=serve_order("ordered")) as peer:
            settings = make_settings(
                tmp_path, peer.url, upstream={"timeout": 5, "max_concurrency": 2}
            )
            async with open_service(settings) as polling, running(polling.daemon()):
                await polling.store.orders.watch([A, B, *HEALTHY], source="cli", now=utc_now())

                async def all_polled() -> bool:
                    orders = [await polling.store.orders.get(i) for i in (A, B, *HEALTHY)]
                    return all(o is not None and o.last_polled_at for o in orders)

                await until(all_polled)
                for order_id in HEALTHY:
                    order = await polling.store.orders.get(order_id)
                    assert order is not None
                    assert order.status == "ordered"
                for order_id in (A, B):
                    order = await polling.store.orders.get(order_id)
                    assert order is not None
                    assert order.status is None
                    assert order.last_error_kind == "transient"
                    assert order.last_error == "timed out after 5 s"


class TestBoundedBodies:
    """An answer above ``max_body`` fails as malformed, unread and unstored."""

    @pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
    @pytest.mark.usefixtures("database")
    async def test_huge_answer_is_malformed(self, tmp_path: Path, chunked: bool) -> None:
        """An answer above max_body fails as malformed, left unread and unstored."""
        size = 32 * 1024 * 1024
        prefix = order_json(A, "checked")[:-1] + b', "pad": "'
        async with HostilePeer(default=huge(size, prefix=prefix, chunked=chunked)) as peer:
            settings = make_settings(
                tmp_path, peer.url, upstream={"max_body": 65536, "timeout": TIMEOUT}
            )
            async with open_polling(settings) as polling:
                await polling.store.orders.watch([A], source="cli", now=utc_now())
                claims = await polling.store.polls.claim([A], lease_until=utc_now() + polling.lease)
                windows = poll_now(polling.store, polling.poller, claims)
                outcomes = [outcome async for polled, _ in windows for outcome in polled]
                history = await polling.store.reports.history(A)
        assert outcomes[0].error_kind == "malformed"
        assert outcomes[0].error == "answer larger than 65536 bytes; not read, not stored"
        assert history is not None
        assert history.snapshots == ()
        assert peer.cut_off == 1  # the peer could not send it all: the rest was never read

    async def test_huge_error_body_keeps_its_status(self, tmp_path: Path) -> None:
        """A huge 503 body still fails as HTTP 503."""
        async with HostilePeer(default=huge(16 * 1024 * 1024, status=503)) as peer:
            settings = make_settings(tmp_path, peer.url, upstream={"timeout": TIMEOUT})
            client, http = build_client(settings.upstream)
            async with http:
                with pytest.raises(TransientError, match=r"^HTTP 503$"):
                    await client.fetch(A)


class TestCompressedAnswers:
    """An answer compressed against our ``identity`` is read as it came: never inflated."""

    @pytest.mark.parametrize(
        "body",
        [gzip.compress(b"0" * 50_000_000), b"\x1f\x8b not gzip at all"],
        ids=["bomb", "broken"],
    )
    async def test_gzip_is_not_inflated(self, tmp_path: Path, body: bytes) -> None:
        """A gzip answer is not inflated, so it fails as not JSON."""
        headers = {"Content-Encoding": "gzip"}
        async with HostilePeer(default=answer(200, body, headers)) as peer:
            settings = make_settings(
                tmp_path, peer.url, upstream={"max_body": 1024 * 1024, "timeout": TIMEOUT}
            )
            client, http = build_client(settings.upstream)
            async with http:
                with pytest.raises(MalformedAnswer, match="body is not JSON"):
                    await client.fetch(A)


class TestPacing:
    """An answer that drips its body costs one request of the budget, not its whole span."""

    async def test_next_request_starts_one_window_after_the_head(self, tmp_path: Path) -> None:
        """The next request starts one window after a dripping answer's head, not its end."""
        async with HostilePeer(default=drip(order_json(A, "checked"), every=0.01)) as peer:
            settings = make_settings(
                tmp_path, peer.url, upstream={"requests_per_second": 1, "timeout": PATIENCE}
            )
            client, http = build_client(settings.upstream)
            async with http:
                await asyncio.gather(client.fetch(A), client.fetch(A))
        first, second = peer.arrivals
        # The budget frees one window after the first answer's head came (it came after the
        # first request arrived), while its body still dripped (for ~2.7 s, and longer on a
        # loaded machine): counting the whole body, the second would wait for its end.
        assert second - first >= 0.9
        assert second < peer.finished[0]


class TestDeepJson:
    """JSON nested a hundred thousand levels deep is a malformed answer, not a crash."""

    async def test_deep_answer_is_malformed(self, tmp_path: Path) -> None:
        """A deeply nested answer fails as malformed, nested deeper than 32 levels."""
        async with HostilePeer(default=answer(200, b"[" * 100_000)) as peer:
            settings = make_settings(tmp_path, peer.url, upstream={"timeout": TIMEOUT})
            client, http = build_client(settings.upstream)
            async with http:
                with pytest.raises(MalformedAnswer, match="nested deeper than 32 levels"):
                    await client.fetch(A)

    async def test_deep_error_body_is_still_a_500(self, tmp_path: Path) -> None:
        """A deeply nested 500 body still fails as HTTP 500."""
        async with HostilePeer(default=answer(500, b'{"a":' * 100_000)) as peer:
            settings = make_settings(tmp_path, peer.url, upstream={"timeout": TIMEOUT})
            client, http = build_client(settings.upstream)
            async with http:
                with pytest.raises(TransientError, match=r"^HTTP 500$"):
                    await client.fetch(A)


class running:  # noqa: N801 - reads as a phrase: `async with running(daemon)`
    """Runs a daemon for the duration of a block, then stops it and waits for it."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Daemon:
        self._task = asyncio.create_task(self.daemon.run(self._stop))
        return self.daemon

    async def __aexit__(self, *_exc: object) -> None:
        assert self._task is not None
        assert not self._task.done(), "the daemon ended on its own"
        self._stop.set()
        await asyncio.wait_for(self._task, PATIENCE)


def small_daemon(polling: Polling, *, lease: float, poller: Poller | None = None) -> Daemon:
    """A daemon of two workers with a short lease, so pauses can outlive it in a test.

    Its queue holds two claims: full, so that its own ticks claim nothing (a tick's claim
    would re-lease a held order and hide a missing renewal).
    """
    return Daemon(
        store=polling.store,
        poller=poller or polling.poller,
        clock=utc_now,
        workers=2,
        capacity=2,
        lease=timedelta(seconds=lease),
        stop_grace=1,
        stall_after=1.0,
        tick=0.2,
    )


class TestPausesOutliveLeases:
    """A 429 pause longer than the lease polls no order twice and kills no worker."""

    @pytest.mark.usefixtures("database")
    async def test_long_retry_after(self, tmp_path: Path, logs: list[dict[str, Any]]) -> None:
        """A pause past the lease polls no order twice, kills no worker and is reported stalled."""
        scripted = ScriptedUpstream()
        scripted.script(A, error(429, {"Retry-After": "5"}), ok("checked"))
        for order_id in (B, C, D):
            scripted.script(order_id, ok("checked"))
        async with serve(catch_all(scripted)) as server:
            settings = make_settings(
                tmp_path, server.url, upstream={"requests_per_second": 1, "timeout": TIMEOUT}
            )
            async with open_polling(settings) as polling:
                await polling.store.orders.watch([A, B, C, D], source="cli", now=utc_now())
                async with running(small_daemon(polling, lease=1.5)) as daemon:

                    async def settled() -> bool:
                        orders = [await polling.store.orders.get(i) for i in (A, B, C, D)]
                        return all(o is not None and o.last_polled_at for o in orders)

                    await asyncio.sleep(3.4)  # into the pause, more than two leases long
                    # Another daemon claiming now finds every held order still leased.
                    now = utc_now()
                    assert (
                        await polling.store.polls.claim_due(
                            now=now, limit=10, lease_until=now + timedelta(seconds=1)
                        )
                        == []
                    )
                    await until(settled)
                    await asyncio.sleep(1.5)  # a second claim would land in here
                    assert daemon.readiness() is None
        # Each order once, and A again right when the pause its 429 set (5 s, more than three
        # leases) ended: no order was asked twice within the pause.
        assert [scripted.polls(i) for i in (A, B, C, D)] == [2, 1, 1, 1]
        first, again = [s.at for s in scripted.seen if s.path.endswith(A)]
        assert again - first >= 4.9
        events = [entry["event"] for entry in logs]
        assert "worker_crashed" not in events
        # The daemon's own check, every tick, saw the stall while the pause lasted.
        stalled = [entry["reason"] for entry in logs if entry["event"] == "polling_stalled"]
        assert any("no poll recorded" in reason for reason in stalled), stalled
        assert "polling_resumed" in events


class Faulty(Poller):
    """A real poller with a fault injected for one order: the kind of bug no test foresaw."""

    async def _poll(self, claim: Claim) -> PollOutcome:
        if claim.order_id == A:
            raise RuntimeError("injected fault")
        return await super()._poll(claim)


class TestSupervisedWorkers:
    """A poll that raises is logged with its traceback and recorded as failed; a worker loop
    that fails is logged and restarted."""

    @pytest.mark.usefixtures("database")
    async def test_bug_in_one_poll(
        self, upstream: tuple[ScriptedUpstream, str], tmp_path: Path, logs: list[dict[str, Any]]
    ) -> None:
        """A poll that raises is logged once with its traceback and recorded as internal."""
        scripted, url = upstream
        for order_id in (A, B, C, D):
            scripted.script(order_id, ok("checked"))
        settings = make_settings(tmp_path, url, upstream={"timeout": TIMEOUT})
        client, http = build_client(settings.upstream)
        async with http, open_polling(settings) as polling:
            faulty = Faulty(
                client=client,
                policy=polling.settings.polling.policy(),
                clock=utc_now,
                rng=random.Random(1),
            )
            await polling.store.orders.watch([A, B, C, D], source="cli", now=utc_now())
            async with running(small_daemon(polling, lease=5, poller=faulty)) as daemon:

                async def all_polled() -> bool:
                    orders = [await polling.store.orders.get(i) for i in (A, B, C, D)]
                    return all(o is not None and o.last_polled_at for o in orders)

                await until(all_polled)
                assert daemon.polls == 4
            order = await polling.store.orders.get(A)
        assert order is not None
        assert order.last_error_kind == "internal"
        assert order.last_error == "internal error: RuntimeError: injected fault"
        assert order.next_poll_at is not None
        assert order.next_poll_at > datetime.now(UTC) + timedelta(minutes=2)
        crashed = [entry for entry in logs if entry["event"] == "poll_crashed"]
        assert len(crashed) == 1
        assert crashed[0]["order_id"] == A
        assert crashed[0]["exc_info"] is True

    async def test_supervised_body_restarts(self, logs: list[dict[str, Any]]) -> None:
        """A supervised body that raises is logged and restarted until it returns."""
        calls: list[int] = []

        async def body() -> None:
            calls.append(1)
            if len(calls) < 3:
                raise ValueError(f"failure {len(calls)}")

        await asyncio.wait_for(supervised("worker-under-test", body), PATIENCE)
        assert len(calls) == 3
        assert [e["worker"] for e in logs if e["event"] == "worker_crashed"] == [
            "worker-under-test",
            "worker-under-test",
        ]


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def delivery() -> DueDelivery:
    payload = event_body(
        event_id="evt_hostile",
        order_id=A,
        from_status="ordered",
        to_status="checked",
        detected_at=datetime.now(UTC),
        order_raw=order_json(A, "checked").decode(),
    )
    return DueDelivery(id=1, event_id="evt_hostile", sink="ops", attempts=0, payload=payload)


class TestHostileReceivers:
    """A webhook receiver can neither hold an attempt past its timeout nor fill the memory."""

    def sink(self, tmp_path: Path, url: str, http: httpx.AsyncClient) -> Any:
        settings = make_settings(
            tmp_path,
            "http://127.0.0.1:1",
            delivery={"timeout": 1},
            sinks=[{"name": "ops", "type": "webhook", "url": url, "secret": SECRET}],
        )
        return build_sinks(settings, http)["ops"]

    async def test_dripping_answer(self, tmp_path: Path, http: httpx.AsyncClient) -> None:
        """A receiver dripping its answer fails the attempt as timed out after the timeout."""
        async with HostilePeer(default=drip(b"accepted, thank you " * 10, every=0.3)) as peer:
            async with asyncio.timeout(PATIENCE):
                result = await self.sink(tmp_path, peer.url, http).send(delivery())
            assert peer.finished == []  # without a deadline: 60 s, and a success
        assert not result.ok
        assert result.error == "timed out after 1 s"

    async def test_huge_answer_is_not_read(self, tmp_path: Path, http: httpx.AsyncClient) -> None:
        """A receiver's huge 500 body is cut off, its error keeping a short excerpt."""
        async with HostilePeer(default=huge(64 * 1024 * 1024, status=500, prefix=b"")) as peer:
            result = await self.sink(tmp_path, peer.url, http).send(delivery())
        assert not result.ok
        assert result.status == 500
        assert result.error is not None
        assert result.error.startswith("HTTP 500: xxxx")
        assert len(result.error) < 300
        assert peer.cut_off == 1
