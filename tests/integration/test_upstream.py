"""The Nomos client against a real local server: version pin, auth, pacing and every fault."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.support import (
    API_VERSION,
    STATIC_TOKEN,
    Action,
    ScriptedUpstream,
    drop,
    error,
    make_settings,
    ok,
    raw,
    stall,
)
from tracker.demo.serving import catch_all, serve
from tracker.errors import (
    AuthFailed,
    InvalidOrderId,
    MalformedAnswer,
    OrderNotFound,
    RateLimited,
    RequestRejected,
    TransientError,
)
from tracker.pacing import Pacer
from tracker.upstream import build_client

ID = "prdo_x83bmixgdcktlpxli778vvgo"
#: Seconds a request may take: the upstream answers at once, and this only bounds a hang (a
#: loaded machine may take more than the suite's default half second to carry an answer).
TIMEOUT = 10

Upstream = tuple[ScriptedUpstream, str]


def patient(**upstream: object) -> dict[str, object]:
    """The ``upstream`` section of a test whose answers are not about the timeout."""
    return {"timeout": TIMEOUT, **upstream}


class TestFetch:
    """A good answer parses; the version header and the token go with every request."""

    async def test_static_token_and_version(self, upstream: Upstream, tmp_path: Path) -> None:
        """A fetch sends the static token and the API version and parses the answer."""
        scripted, url = upstream
        scripted.script(ID, ok("checked"))
        client, http = build_client(make_settings(tmp_path, url, upstream=patient()).upstream)
        async with http:
            order = await client.fetch(ID)
        assert order.status == "checked"
        assert scripted.seen[0].version == API_VERSION
        assert scripted.seen[0].authorization == f"Bearer {STATIC_TOKEN}"

    async def test_oauth_token_is_fetched_once_and_renewed_once_on_401(
        self, upstream: Upstream, tmp_path: Path
    ) -> None:
        """An OAuth token is fetched once, and renewed once when a 401 says it expired."""
        scripted, url = upstream
        scripted.script(ID, ok("checked"))
        settings = make_settings(tmp_path, url, oauth=True, upstream=patient())
        client, http = build_client(settings.upstream)
        async with http:
            await client.fetch(ID)
            await client.fetch(ID)
            assert scripted.token_requests == 1
            scripted.expire_tokens()
            order = await client.fetch(ID)
        assert order.status == "checked"
        assert scripted.token_requests == 2

    async def test_oauth_renewed_before_expiry(self, tmp_path: Path) -> None:
        """An OAuth token is renewed before it expires, so no request goes without one."""
        scripted = ScriptedUpstream(token_lifetime=1)
        scripted.script(ID, ok())
        async with serve(catch_all(scripted)) as server:
            settings = make_settings(tmp_path, server.url, oauth=True, upstream=patient())
            client, http = build_client(settings.upstream)
            async with http:
                await client.fetch(ID)
                await asyncio.sleep(0.6)
                await client.fetch(ID)
        assert scripted.token_requests == 2
        assert all(s.path != f"/meter-orders/{ID}" or s.authorization for s in scripted.seen)


class TestFaults:
    """Each fault becomes its own typed error with a reason; nothing crashes."""

    @pytest.mark.parametrize(
        ("action", "kind", "reason"),
        [
            (error(500), TransientError, "HTTP 500"),
            (error(503), TransientError, "HTTP 503"),
            (drop(), TransientError, "connection failed"),
            (stall(2.0, ok()), TransientError, "timed out"),
            (error(429, {"retry-after": "7"}), RateLimited, "HTTP 429"),
            (raw(b"{not json"), MalformedAnswer, "not JSON"),
            (raw(b'{"object": "list", "items": []}'), MalformedAnswer, "object is 'list'"),
            (ok(id="prdo_someoneelse"), MalformedAnswer, "not the requested"),
            (ok(customer=None), MalformedAnswer, "'customer' is missing"),
            (error(404), OrderNotFound, "does not know this order"),
            (error(403), AuthFailed, "refused the credentials"),
            (error(422), RequestRejected, "HTTP 422"),
        ],
    )
    async def test_fault(
        self, upstream: Upstream, tmp_path: Path, action: Action, kind: type[Exception], reason: str
    ) -> None:
        """Each upstream fault raises its own typed error with its reason."""
        scripted, url = upstream
        scripted.script(ID, action)
        # Only the stalled answer (2 s) is about the timeout; the others come at once.
        timeout = 0.5 if reason == "timed out" else TIMEOUT
        settings = make_settings(tmp_path, url, upstream={"timeout": timeout})
        client, http = build_client(settings.upstream)
        async with http:
            with pytest.raises(kind, match=reason) as caught:
                await client.fetch(ID)
        assert type(caught.value) is kind

    async def test_error_carries_the_request_id(self, upstream: Upstream, tmp_path: Path) -> None:
        """An upstream error carries the answer's request id."""
        scripted, url = upstream
        scripted.script(ID, error(500, request_id="req_trace_me"))
        client, http = build_client(make_settings(tmp_path, url, upstream=patient()).upstream)
        async with http:
            with pytest.raises(TransientError) as caught:
                await client.fetch(ID)
        assert caught.value.request_id == "req_trace_me"

    async def test_rate_limit_pauses_every_request(
        self, upstream: Upstream, tmp_path: Path
    ) -> None:
        """A 429 with Retry-After pauses every request, not just the one order's."""
        scripted, url = upstream
        other = "prdo_other0000000000000000000"
        scripted.script(ID, error(429, {"retry-after": "1"}), ok())
        scripted.script(other, ok())
        client, http = build_client(make_settings(tmp_path, url, upstream=patient()).upstream)
        async with http:
            with pytest.raises(RateLimited) as caught:
                await client.fetch(ID)
            assert caught.value.retry_after == 1
            await client.fetch(other)
        # The pause began once the 429 came back, after it arrived: as the upstream saw it, the
        # other order's request came a whole second later (a busy machine only adds to that).
        refused, asked = (s.at for s in scripted.seen)
        assert asked - refused >= 1.0

    async def test_repeated_401_with_static_token_is_auth_failed(self, tmp_path: Path) -> None:
        """A static token refused twice fails as AuthFailed after one retry."""
        scripted = ScriptedUpstream()
        scripted.script(ID, ok())
        async with serve(catch_all(scripted)) as server:
            settings = make_settings(tmp_path, server.url, upstream=patient(token="nom_wrong"))
            client, http = build_client(settings.upstream)
            async with http:
                with pytest.raises(AuthFailed, match="HTTP 401"):
                    await client.fetch(ID)
        assert scripted.polls(ID) == 2  # the first try and one retry, no spinning

    async def test_invalid_id_never_reaches_a_url(self, upstream: Upstream, tmp_path: Path) -> None:
        """An invalid order id is refused before any request is sent."""
        scripted, url = upstream
        client, http = build_client(make_settings(tmp_path, url, upstream=patient()).upstream)
        async with http:
            with pytest.raises(InvalidOrderId, match="invalid order id"):
                await client.fetch("prdo_../../oauth/token")
        assert scripted.seen == []


class TestPacer:
    """At most `rate` requests in any one-second window, bursts included."""

    async def test_window_and_concurrency(self) -> None:
        """The pacer starts at most rate requests per second and caps those at once."""
        pacer = Pacer(5, 3)
        starts: list[float] = []
        active = 0
        most = 0

        async def one() -> None:
            nonlocal active, most
            async with pacer.slot():
                starts.append(time.monotonic())
                active += 1
                most = max(most, active)
                await asyncio.sleep(0.01)
                active -= 1

        await asyncio.gather(*(one() for _ in range(16)))
        assert most <= 3
        for first in starts:
            assert sum(1 for t in starts if first <= t < first + 1.0) <= 5

    async def test_a_slow_body_costs_one_request(self) -> None:
        """A slow body frees its slot once the head is answered, not once it is read."""
        pacer = Pacer(2, 4)
        starts: list[float] = []
        third_started = asyncio.Event()

        async def one(reading: asyncio.Event | None) -> None:
            async with pacer.slot() as answered:
                starts.append(time.monotonic())
                answered()  # the head came back; the body takes its time
                if reading is not None:
                    await reading.wait()
                else:
                    third_started.set()

        # The first two bodies are read only once the third request started: were the budget
        # to wait for them, it never would (and the bound on the hang would fail the test).
        async with asyncio.timeout(30):
            await asyncio.gather(one(third_started), one(third_started), one(None))
        # The third waits one window after the first two answered.
        assert starts[2] - starts[0] >= 0.95

    async def test_fractional_rate(self) -> None:
        """A fractional rate starts at most its whole part in any one second."""
        pacer = Pacer(2.5, 2)
        starts: list[float] = []

        async def one() -> None:
            async with pacer.slot():
                starts.append(time.monotonic())

        await asyncio.gather(*(one() for _ in range(5)))
        # At most 2.5 start in any second: two, so the fifth starts two windows after the first.
        assert starts[-1] - starts[0] >= 1.95
        for first in starts:
            assert sum(1 for t in starts if first <= t < first + 1.0) <= 2

    async def test_shares_are_whole_and_spend_the_budget(self) -> None:
        """Daemons' shares are whole requests adding up to the budget, else an even split."""
        shares = []
        for rank in range(3):
            pacer = Pacer(40, 8)
            pacer.share(3, rank)
            shares.append(pacer.rate)
        assert shares == [14, 13, 13]
        pacer = Pacer(8.5, 8)
        assert pacer.rate == 8  # "at most that many start": 8 of 8.5
        pacer.share(2, 1)
        assert pacer.rate == 4
        pacer.share(10, 0)  # fewer whole requests than daemons: an even split
        assert pacer.rate == pytest.approx(0.85)

    async def test_a_larger_share_waits_one_window(self) -> None:
        """A smaller share applies at once, a larger one only after one window."""
        now = [100.0]
        pacer = Pacer(40, 8, clock=lambda: now[0])
        pacer.share(2, 0)
        assert pacer.rate == 20  # smaller: at once
        pacer.share(1, 0)  # the other left; its last requests still count for a second
        async with pacer.slot():
            assert pacer.rate == 20
        now[0] += 1.0
        async with pacer.slot():
            assert pacer.rate == 40
